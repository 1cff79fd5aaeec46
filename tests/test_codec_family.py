"""Codec families: the envelope of the members' test curves, --bpp picking its member, decompress finds it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from shrink.compression.api import compress_image, decompress_image
from shrink.compression.bdrate import bd_rate_curves, quality_overlap
from shrink.compression.bundle import BundleError, load_bundle
from shrink.compression.codecs import build_codec
from shrink.compression.container import read_header, segment
from shrink.compression.data import load_images, read_image
from shrink.compression.evaluate import evaluate, evaluate_image
from shrink.compression.family import MEMBERS, _identity, load_family, save_family
from shrink.compression.rd import RDCurve, measure, rate_at_metric, save_curves
from shrink.search.cli import main
from shrink.search.records import TEST_CURVE_ATTR

from .conftest import shared_folder, textured_image
from .helpers import HIGH, LOW, crossing_family, curve, load, perturbed_bundle, shared_toy_study


@pytest.fixture
def family(tmp_path: Path, image_folder: Path) -> Path:
    return crossing_family(tmp_path, image_folder)


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(textured_image(256, 320, 5)).save(path)
    return path


def test_the_envelope_takes_each_rate_from_the_member_highest_there(family: Path):
    loaded = load_family(family)
    assert [m.name for m in loaded.members] == ["low", "high"]
    envelope = [(name, point.bpp) for name, point in loaded.envelope()]
    # high's 0.8 bpp point (11 dB) lies under low's curve there (12.3 dB): not on the envelope
    assert envelope == [("low", 0.3), ("low", 0.6), ("low", 1.2), ("high", 2.0), ("high", 4.0)]
    assert [p.bpp for p in loaded.envelope_curve().points] == [0.3, 0.6, 1.2, 2.0, 4.0]
    assert loaded.member_at(0.5).name == "low"  # high does not reach down to 0.5 bpp
    assert loaded.member_at(1.0).name == "low"
    assert loaded.member_at(3.0).name == "high"
    assert loaded.member_at(0.1).name == "low"  # below every member: the one reaching lowest


@pytest.mark.parametrize(("target", "member"), [(1.0, "low"), (3.0, "high")])
def test_bpp_picks_the_envelopes_member_and_decompress_finds_it(
    family: Path, photo: Path, tmp_path: Path, target: float, member: str
):
    loaded = load_family(family)
    out, png = tmp_path / "photo.jpg", tmp_path / "photo.out.png"
    assert main(["compress", str(photo), "--model", str(family), "--bpp", str(target), "-o", str(out)]) == 0
    data = out.read_bytes()
    header = read_header(data)
    chosen = loaded.member(header.bundle)
    assert chosen is not None and chosen.name == member
    assert header.ratio == (2 if member == "low" else 1)
    assert 8 * len(data) / (256 * 320) <= target

    assert main(["decompress", str(out), "--model", str(family), "-o", str(png)]) == 0
    direct = tmp_path / "direct.png"
    bundle = family / MEMBERS / member
    assert main(["decompress", str(out), "--model", str(bundle), "-o", str(direct)]) == 0
    assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(direct)))


def test_the_codec_api_picks_and_finds_the_member_as_the_cli_does(family: Path, photo: Path, tmp_path: Path):
    out, png = tmp_path / "photo.jpg", tmp_path / "photo.out.png"
    assert main(["compress", str(photo), "--model", str(family), "--bpp", "3.0", "-o", str(out)]) == 0
    assert main(["decompress", str(out), "--model", str(family), "-o", str(png)]) == 0
    with Image.open(photo) as image:
        data = compress_image(image, family, bpp=3.0)
        with pytest.raises(ValueError, match="is a codec family: give a target bpp"):
            compress_image(image, family, quality=50)
    assert data == out.read_bytes()
    assert np.array_equal(decompress_image(data, family), np.asarray(Image.open(png)))


def test_a_file_of_another_family_or_bundle_is_refused(
    family: Path, photo: Path, tmp_path: Path, image_folder: Path, capsys
):
    stranger = perturbed_bundle(tmp_path / "stranger", image_folder, ratio=2, seed=9)
    other = save_family(tmp_path / "other", [("s", stranger, curve("s", LOW))], test="hand-made")
    out = tmp_path / "photo.jpg"
    assert main(["compress", str(photo), "--model", str(other), "--bpp", "1.0", "-o", str(out)]) == 0
    capsys.readouterr()
    png = tmp_path / "x.png"
    assert main(["decompress", str(out), "--model", str(family), "-o", str(png)]) == 2
    err = capsys.readouterr().err
    assert "not a member of the family" in err and err.count("\n") == 1
    assert not png.exists()


def test_a_family_needs_bpp_and_refuses_an_altered_member(family: Path, photo: Path, tmp_path: Path, capsys):
    out = tmp_path / "photo.jpg"
    assert main(["compress", str(photo), "--model", str(family), "--quality", "50", "-o", str(out)]) == 2
    assert "give --bpp" in capsys.readouterr().err and not out.exists()
    weights = family / MEMBERS / "high" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_family(family)
    assert main(["compress", str(photo), "--model", str(family), "--bpp", "1.0", "-o", str(out)]) == 2
    assert not out.exists()


def test_bdrate_reads_a_family_as_its_envelope_and_members_against_several_anchors(
    family: Path, tmp_path: Path, capsys
):
    anchors = {
        "jpeg": curve("jpeg", [(0.4, 9.0), (1.0, 11.0), (2.5, 14.0), (5.0, 16.0)]),
        "webp": curve("webp", [(0.3, 9.5), (0.9, 11.5), (2.0, 14.5), (4.5, 17.0)]),
    }
    path = tmp_path / "anchors.json"
    save_curves(path, anchors)
    assert main(["bdrate", str(path), str(family), "--anchor-curve", "jpeg", "webp"]) == 0
    out = capsys.readouterr().out
    loaded = load_family(family)
    tests = {"family": loaded.envelope_curve(), "low": curve("low", LOW), "high": curve("high", HIGH)}
    for name, anchor in anchors.items():
        table = out.split(f"BD-rate vs {name} ")[1].split("BD-rate vs")[0]
        for test, test_curve in tests.items():
            expected = bd_rate_curves(anchor, test_curve, "msssim_db")
            row = next(line for line in table.splitlines() if line.startswith(f"{test} "))
            assert f"{expected:+10.2f} %" in row
            low, high = quality_overlap(anchor, test_curve)  # the qualities both reach, anchor's rates there
            assert low == max(anchor.points[0].msssim_db, test_curve.points[0].msssim_db)
            assert high == min(anchor.points[-1].msssim_db, test_curve.points[-1].msssim_db)
            rates = f"{rate_at_metric(anchor, low):.3f}-{rate_at_metric(anchor, high):.3f} bpp"
            assert f"{low:.2f}-{high:.2f} dB (= {rates})" in row
    far = tmp_path / "far.json"  # an anchor whose qualities the family never reaches: every row says so
    save_curves(far, {"jpeg": curve("jpeg", [(6.0, 30.0), (9.0, 32.0)])})
    assert main(["bdrate", str(far), str(family)]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == len(tests) and all(row.count("no overlap") == 2 for row in rows)
    assert main(["bdrate", str(path), str(family), "--anchor-curve", "avif"]) == 2
    assert "has no curve 'avif'" in capsys.readouterr().err


def test_save_family_refuses_bad_members_and_writes_nothing(tmp_path: Path, image_folder: Path):
    bundle = perturbed_bundle(tmp_path / "b", image_folder, ratio=2, seed=1)
    target = tmp_path / "fam"
    with pytest.raises(BundleError, match="distinct"):
        save_family(target, [("a", bundle, curve("a", LOW)), ("a", bundle, curve("a", HIGH))], test="t")
    with pytest.raises(BundleError, match="no points"):
        save_family(target, [("a", bundle, RDCurve("a", []))], test="t")
    with pytest.raises(BundleError, match="not a shrink bundle"):
        save_family(target, [("a", tmp_path, curve("a", LOW))], test="t")
    assert not target.exists() and not list(tmp_path.glob(".fam.*"))
    family = save_family(target, [("a", bundle, curve("a", LOW))], test="t")
    document = json.loads((family / "family.json").read_text())
    document["members"][0]["curve"]["points"][0]["msssim_db"] = 99.0  # a better curve, claimed by hand
    (family / "family.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match="does not match the member table"):
        load_family(family)


def reseal(document: dict) -> dict:
    """Recompute the family's identity over its (altered) member table, as anyone can."""
    return {**document, "sha256": _identity(document["members"])}


def test_a_member_name_that_is_a_path_is_refused(family: Path, photo: Path, tmp_path: Path, capsys):
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    assert main(["compress", str(photo), "--model", str(family), "--bpp", "1.0", "-o", str(jpg)]) == 0
    document = json.loads((family / "family.json").read_text())
    # the bundle "low" was copied from, outside the family
    document["members"][0]["name"] = "../../b-low"
    (family / "family.json").write_text(json.dumps(reseal(document)))
    with pytest.raises(BundleError, match="distinct plain names"):
        load_family(family)
    capsys.readouterr()
    assert main(["decompress", str(jpg), "--model", str(family), "-o", str(png)]) == 2
    err = capsys.readouterr().err
    assert "plain names" in err and err.count("\n") == 1 and not png.exists()


def test_a_member_folder_that_is_a_link_is_refused(family: Path, tmp_path: Path):
    low = family / MEMBERS / "low"
    low.rename(tmp_path / "moved")
    low.symlink_to(tmp_path / "moved")
    with pytest.raises(BundleError, match="symbolic link"):
        load_family(family)


# ---------------------------------------------------------------- fuzzing what a file tells us

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # restored after each example
)
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=300),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=80),
    st.sampled_from(["shrink-jpeg/1", "shrink-jpeg/3", "../../etc", "0" * 64, "low", "high", "high "]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
DELETED = object()


@pytest.fixture
def shrunk(family: Path, photo: Path, tmp_path: Path) -> tuple[Path, str]:
    """(a shrink file made by the family, the sha256 of the pixels its decompression writes)."""
    jpg, png = tmp_path / "photo.jpg", tmp_path / "reference.png"
    assert main(["compress", str(photo), "--model", str(family), "--bpp", "1.0", "-o", str(jpg)]) == 0
    assert main(["decompress", str(jpg), "--model", str(family), "-o", str(png)]) == 0
    return jpg, pixels_sha256(png)


def pixels_sha256(png: Path) -> str:
    return hashlib.sha256(np.asarray(Image.open(png)).tobytes()).hexdigest()


def decoded_alike_or_refused(source: Path, family: Path, reference: str, capfd) -> None:
    """Decompressing ``source`` writes the reference's pixels, or exits 2 with one line and writes nothing."""
    capfd.readouterr()
    out = source.with_name("fuzzed.png")
    out.unlink(missing_ok=True)
    code = main(["decompress", str(source), "--model", str(family), "-o", str(out)])
    err = capfd.readouterr().err
    if code == 0:
        assert pixels_sha256(out) == reference
    else:
        assert code == 2 and err.count("\n") == 1 and err.startswith("shrink decompress: error:"), err
        assert not out.exists()


def with_header_fields(data: bytes, fields: dict) -> bytes:
    """``data`` whose APP11 segment holds ``fields`` as its JSON (the CRC left as it was)."""
    old = segment(read_header(data))
    payload = b"SHRINK\0" + json.dumps(fields).encode()
    return data.replace(old, bytes([0xFF, 0xEB]) + (len(payload) + 2).to_bytes(2, "big") + payload)


@FUZZ
@given(
    field=st.sampled_from(["format", "width", "height", "ratio", "quality", "bundle", "crc32", "extra"]),
    value=st.one_of(ANY_VALUE, st.just(DELETED)),
)
def test_a_fuzzed_header_decodes_as_before_or_is_refused_in_one_line(
    shrunk, family: Path, capfd, field, value
):
    jpg, reference = shrunk
    data = jpg.read_bytes()
    fields = json.loads(read_header(data).model_dump_json())
    if value is DELETED:
        fields.pop(field, None)
    else:
        fields[field] = value
    fuzzed = jpg.with_name("fuzzed.jpg")
    fuzzed.write_bytes(with_header_fields(data, fields))
    decoded_alike_or_refused(fuzzed, family, reference, capfd)


@FUZZ
@given(
    where=st.sampled_from(
        [
            "name",
            "sha256",
            "curve.name",
            "curve.points",
            "point.bpp",
            "point.quality",
            "point.msssim_db",
            "metric",
            "test",
            "format",
            "members",
            "family.sha256",
        ]
    ),
    member=st.integers(0, 1),
    value=st.one_of(ANY_VALUE, st.just(DELETED)),
    sealed=st.booleans(),
)
def test_a_fuzzed_family_json_decodes_as_before_or_is_refused_in_one_line(
    shrunk, family: Path, capfd, where, member, value, sealed
):
    jpg, reference = shrunk
    original = (family / "family.json").read_bytes()
    document = json.loads(original)
    entry = document["members"][member]
    target, key = {
        "name": (entry, "name"),
        "sha256": (entry, "sha256"),
        "curve.name": (entry["curve"], "name"),
        "curve.points": (entry["curve"], "points"),
        "point.bpp": (entry["curve"]["points"][0], "bpp"),
        "point.quality": (entry["curve"]["points"][0], "quality"),
        "point.msssim_db": (entry["curve"]["points"][0], "msssim_db"),
        "metric": (document, "metric"),
        "test": (document, "test"),
        "format": (document, "format"),
        "members": (document, "members"),
        "family.sha256": (document, "sha256"),
    }[where]
    if value is DELETED:
        target.pop(key, None)
    else:
        target[key] = value
    if sealed and where != "family.sha256":
        try:
            document = reseal(document)
        except (KeyError, TypeError):  # a member table too broken to hash: left as it is
            pass
    try:
        (family / "family.json").write_text(json.dumps(document))
        decoded_alike_or_refused(jpg, family, reference, capfd)
    finally:
        (family / "family.json").write_bytes(original)


def test_export_family_of_a_study_measures_or_reuses_each_test_curve(tmp_path_factory, tmp_path: Path):
    """A trial with a stored test curve (as shrink refine stores it) keeps it; the others are measured on
    --test. The shared toy study is copied first: a finished trial's attributes cannot change."""
    shared_url, images = shared_toy_study(tmp_path_factory)
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    optuna.copy_study(from_study_name="toy", from_storage=shared_url, to_storage=url)
    study = load(url)
    first, *others = sorted(study.best_trials, key=lambda t: t.number)
    stored = curve("stored", LOW)
    study.add_trial(
        optuna.trial.create_trial(
            params=first.params,
            distributions=first.distributions,
            values=first.values,
            user_attrs={**first.user_attrs, TEST_CURVE_ATTR: stored.to_dict()},
        )
    )
    tested = study.trials[-1].number
    numbers = [tested, *(t.number for t in others)] if others else [tested, first.number]
    out = tmp_path / "family"
    args = ["export", "--storage", url, "--study-name", "toy", "--trial", *map(str, numbers), "--family"]
    assert main([*args, "--out", str(out), "--test", str(images), "--qualities", "30", "70"]) == 0
    family = load_family(out)
    assert [m.name for m in family.members] == [f"trial-{n:05d}" for n in numbers]
    reused = family.members[0]
    assert [p.to_dict() for p in reused.curve.points] == [p.to_dict() for p in stored.points]
    for member in family.members[1:]:
        model, config, _ = load_bundle(family.bundle_path(member))
        expected = evaluate(model, load_images(images), [30, 70], build_codec(config.codec))
        assert [p.to_dict() for p in member.curve.points] == [p.to_dict() for p in expected.points]


def read_png(path: Path) -> torch.Tensor:
    return read_image(path)[None].float() / 255  # contiguous, as evaluation's: conv rounding follows layout


@pytest.mark.slow
def test_kodak_through_a_family_at_a_bpp_equals_shrink_eval_of_the_member_it_picks(
    tmp_path: Path, image_folder: Path
):
    """`shrink compress --model FAMILY --bpp T` then `decompress`, on Kodak photos, give what `shrink eval`
    measures for the member the envelope names, at the quality written in the file: bit for bit untiled
    (``--tile 0``); tiled (the default, 768x512 > one tile), to float rounding (tiling's own contract)."""
    kodak = shared_folder("kodak")
    images = load_images(kodak, 2)
    members = []
    for name, ratio, seed in (("low", 2, 1), ("high", 1, 2)):
        bundle = perturbed_bundle(tmp_path / f"b-{name}", image_folder, ratio=ratio, seed=seed)
        model, config, _ = load_bundle(bundle)
        members.append((name, bundle, evaluate(model, images, [20, 50, 80], build_codec(config.codec), name)))
    family = load_family(save_family(tmp_path / "family", members, test=str(kodak)))
    targets = {name: point.bpp * 1.02 for name, point in family.envelope()}  # each member's top envelope rate
    assert set(targets) == {"low", "high"}
    model_args = ["--model", str(family.path)]
    for name, target in targets.items():
        assert family.member_at(target).name == name
        for image in images:
            out, png, tiled = (tmp_path / f"{name}-{image.name}.{end}" for end in ("jpg", "png", "t.png"))
            argv = ["compress", str(kodak / image.name), *model_args, "--bpp", f"{target}", "--tile", "0"]
            assert main([*argv, "-o", str(out)]) == 0
            assert main(["decompress", str(out), *model_args, "--tile", "0", "-o", str(png)]) == 0
            assert main(["decompress", str(out), *model_args, "-o", str(tiled)]) == 0
            data = out.read_bytes()
            header = read_header(data)
            assert family.member(header.bundle).name == name
            model, config, _ = load_bundle(family.bundle_path(family.member(header.bundle)))
            row = evaluate_image(model, image, build_codec(config.codec), header.quality)
            assert len(data) == row["bytes"] + len(segment(header))
            x = image.pixels[None].float() / 255
            ours = measure(image.name, header.quality, len(data), read_png(png), x)
            assert (ours["msssim"], ours["psnr"]) == (row["msssim"], row["psnr"])
            assert (read_png(tiled) - read_png(png)).abs().max() <= 1 / 255 + 1e-6
            assert measure(image.name, 0, len(data), read_png(tiled), x)["msssim"] == pytest.approx(
                row["msssim"], abs=1e-5
            )
