"""A family measured as its users get it: `shrink eval FAMILY` runs the encoder's per-image choice at each
target rate; `shrink export --bundle ... --family` makes a family of existing bundles."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from shrink.compression.api import compress_image
from shrink.compression.family import is_family, load_family
from shrink.compression.names import NAME_RULE
from shrink.compression.rd import load_curves
from shrink.search.cli import main

from .helpers import crossing_family, perturbed_bundle

TARGETS = ["0.7", "1.2"]


@pytest.fixture
def family(tmp_path: Path, image_folder: Path) -> Path:
    return crossing_family(tmp_path, image_folder)


def test_eval_family_measures_each_effort_as_compress_makes_the_files(family, image_folder, tmp_path, capsys):
    out = tmp_path / "family-kodak.json"
    argv = ["eval", str(family), "--data", str(image_folder), "--json", str(out), "--targets", *TARGETS]
    assert main([*argv, "--efforts", "1", "2"]) == 0
    curves = load_curves(out)
    assert set(curves) == {"shrink-effort1", "shrink-effort2"}  # the members' curves: not on these images
    rows = {name: curves[name].per_image for name in ("shrink-effort1", "shrink-effort2")}
    assert all(len(r) == 3 * len(TARGETS) for r in rows.values())  # every image at every target
    for by_average, per_image in zip(rows["shrink-effort1"], rows["shrink-effort2"], strict=True):
        assert (
            by_average["image"] == per_image["image"] and by_average["target_bpp"] == per_image["target_bpp"]
        )
        assert per_image["msssim"] >= by_average["msssim"] - 1e-9  # the best of two includes effort 1's
        assert max(by_average["bpp"], per_image["bpp"]) <= per_image["target_bpp"]
        with Image.open(image_folder / by_average["image"]) as image:  # effort 1: today's file
            assert len(compress_image(image, family, bpp=by_average["target_bpp"])) == by_average["bytes"]
    assert {row["member"] for row in rows["shrink-effort2"]} <= {"low", "high"}
    points = curves["shrink-effort2"].points
    assert [p.quality for p in points] == [None, None] and points[0].bpp < points[1].bpp
    printed = capsys.readouterr().out
    assert "shrink-effort2:" in printed
    assert "shrink-envelope left out: the members' curves were measured on hand-made" in printed


def test_eval_family_writes_the_envelope_of_mean_curves_measured_on_the_same_images(tmp_path, image_folder):
    family = crossing_family(tmp_path, image_folder, test=str(image_folder))
    out = tmp_path / "curves.json"
    argv = ["eval", str(family), "--data", str(image_folder), "--json", str(out), "--targets", *TARGETS]
    assert main([*argv, "--efforts", "1"]) == 0
    curves = load_curves(out)
    assert set(curves) == {"shrink-envelope", "shrink-effort1"}
    assert curves["shrink-envelope"].points == load_family(family).envelope_curve().points


def test_eval_family_leaves_out_a_target_no_image_meets_and_refuses_when_none_is_met(
    family, image_folder, tmp_path, capsys
):
    out = tmp_path / "curves.json"
    argv = ["eval", str(family), "--data", str(image_folder), "--json", str(out), "--efforts", "1"]
    assert main([*argv, "--targets", "0.001", "1.2"]) == 0
    assert [p.bpp <= 1.2 for p in load_curves(out)["shrink-effort1"].points] == [True]
    assert "targets [0.001] bpp left out" in capsys.readouterr().out
    out.unlink()
    assert main([*argv, "--targets", "0.001"]) == 2
    assert "no target in [0.001] bpp can be met" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("bad", [["--targets", "nan"], ["--targets", "-1"], ["--efforts", "0"]])
def test_eval_family_refuses_bad_targets_in_one_line(family, image_folder, tmp_path, capsys, bad):
    out = tmp_path / "curves.json"
    assert main(["eval", str(family), "--data", str(image_folder), "--json", str(out), *bad]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "targets are bpp in (0, 64)" in error and not out.exists()


def test_export_bundles_as_a_family_measures_each_member_on_the_test_images(tmp_path, image_folder):
    low = perturbed_bundle(tmp_path / "low", image_folder, ratio=2, seed=1)
    high = perturbed_bundle(tmp_path / "high", image_folder, ratio=1, seed=2)
    out = tmp_path / "fam"
    argv = [
        "export",
        "--bundle",
        str(low),
        str(high),
        "zoo:cpu",
        "--out",
        str(out),
        "--test",
        str(image_folder),
    ]
    assert main([*argv, "--family", "--qualities", "20", "80"]) == 0
    family = load_family(out)
    assert [m.name for m in family.members] == ["low", "high", "cpu"] and family.test == str(image_folder)
    assert all([p.quality for p in m.curve.points] == [20, 80] for m in family.members)
    ratio_1 = family.members[1].curve.points
    assert ratio_1[0].bpp > family.members[0].curve.points[0].bpp  # full resolution costs more bytes
    with Image.open(next(image_folder.iterdir())) as image:
        assert compress_image(image, out, bpp=ratio_1[-1].bpp * 2)  # a codec compress takes


@pytest.mark.parametrize("trouble", ["no --family", "not a bundle"])
def test_export_bundles_refuses_in_one_line_and_writes_nothing(tmp_path, image_folder, capsys, trouble):
    low = perturbed_bundle(tmp_path / "low", image_folder, ratio=2, seed=1)
    second = image_folder if trouble == "not a bundle" else low
    out = tmp_path / "fam"
    argv = ["export", "--bundle", str(low), str(second), "--out", str(out), "--test", str(image_folder)]
    assert main(argv + ([] if trouble == "no --family" else ["--family"])) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and not out.exists() and not is_family(out)
    assert ("give --family" if trouble == "no --family" else "not a shrink bundle") in error


@pytest.mark.parametrize("trouble", ["altered weights", "not a name", "existing output"])
def test_export_bundles_checks_every_bundle_before_measuring_any(
    tmp_path, image_folder, capsys, monkeypatch, trouble
):
    # issue 35: the first bundle was measured in full before the second was refused
    measured = []
    monkeypatch.setattr("shrink.compression.evaluate.evaluate", lambda *args: measured.append(args))
    first = perturbed_bundle(tmp_path / "first", image_folder, ratio=2, seed=1)
    second = perturbed_bundle(
        tmp_path / ("second one" if trouble == "not a name" else "second"), image_folder, 2, 2
    )
    if trouble == "altered weights":
        weights = second / "weights.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1] + b"x")
    out = tmp_path / "fam"
    if trouble == "existing output":
        out.mkdir()
        (out / "keep").write_text("mine")
    argv = [
        "export",
        "--bundle",
        str(first),
        str(second),
        "--family",
        "--out",
        str(out),
        "--test",
        str(image_folder),
    ]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and measured == [] and not is_family(out)
    names = "['first', 'second one']"
    expected = {
        "altered weights": str(second),
        "not a name": f"{out}: member names must be distinct plain names ({NAME_RULE}), got {names}",
        "existing output": f"{out} exists and is not empty",
    }[trouble]
    assert expected in error
