from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from shrink.compression.bundle import (
    BUNDLE_FORMAT,
    BundleError,
    bundle_from_checkpoint,
    bundle_sha256,
    is_bundle,
    load_bundle,
    load_model,
    save_bundle,
)
from shrink.compression.checkpoint import CheckpointError, save_checkpoint
from shrink.compression.codecs import build_codec
from shrink.compression.config import ModelConfig, TrainConfig
from shrink.compression.data import load_images
from shrink.compression.evaluate import evaluate
from shrink.compression.models import build_model
from shrink.search.cli import main

from .helpers import eval_args, trained_like

METRICS = {"trial": 4, "study": "tiny", "dev": {"gain_db": 0.25}, "rd": [[0.3, 12.5], [0.6, 15.0]]}


def seal(bundle: Path) -> None:
    """Rewrite the manifest's file table and identity from the files as they are now (a forger's move)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        data = (bundle / name).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    lines = "".join(f"{name} {manifest['files'][name]['sha256']}\n" for name in sorted(manifest["files"]))
    manifest["sha256"] = hashlib.sha256(lines.encode()).hexdigest()
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


@pytest.fixture
def bundle(tiny_config: TrainConfig, exports: Path) -> Path:
    return save_bundle(exports / "b", trained_like(tiny_config), tiny_config, METRICS)


def test_round_trip_restores_every_tensor_and_the_config(tiny_config: TrainConfig, exports: Path):
    model = trained_like(tiny_config)
    path = save_bundle(exports / "b", model, tiny_config, METRICS)
    assert path == exports / "b" and sorted(p.name for p in exports.iterdir()) == ["b"]  # no temp left
    loaded, config, manifest = load_bundle(path)
    assert config == tiny_config and not loaded.training
    expected, actual = model.state_dict(), loaded.state_dict()
    assert list(actual) == list(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype and torch.equal(actual[name], tensor), name
    assert manifest["format"] == BUNDLE_FORMAT and manifest["versions"]["torch"] == str(torch.__version__)
    assert set(manifest["files"]) == {"config.json", "weights.safetensors", "metrics.json"}
    assert json.loads((path / "metrics.json").read_text()) == METRICS
    with safe_open(path / "weights.safetensors", framework="pt") as weights:
        assert weights.metadata() == {"format": BUNDLE_FORMAT}


def test_identity_is_the_hash_of_the_file_hashes(tiny_config: TrainConfig, exports: Path):
    model = trained_like(tiny_config)
    first = save_bundle(exports / "a", model, tiny_config, METRICS)
    again = save_bundle(exports / "b", model, tiny_config, METRICS)
    other = save_bundle(exports / "c", model, tiny_config, {**METRICS, "trial": 5})
    manifest = json.loads((first / "manifest.json").read_text())
    lines = "".join(f"{name} {manifest['files'][name]['sha256']}\n" for name in sorted(manifest["files"]))
    assert bundle_sha256(first) == manifest["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert bundle_sha256(again) == bundle_sha256(first)  # same contents, same identity
    assert bundle_sha256(other) != bundle_sha256(first)  # metrics are part of the identity


def test_a_bundle_evaluates_exactly_like_the_model_in_memory(
    tiny_config: TrainConfig, image_folder: Path, exports: Path
):
    images = load_images(image_folder)
    codec = build_codec(tiny_config.codec)
    model = trained_like(tiny_config)
    loaded, _, _ = load_bundle(save_bundle(exports / "b", model, tiny_config, METRICS))
    ours = evaluate(model, images, [30, 70], codec)
    theirs = evaluate(loaded, images, [30, 70], codec)
    assert theirs.per_image == ours.per_image and theirs.points == ours.points
    untrained = evaluate(build_model(tiny_config.model), images, [30, 70], codec)
    assert untrained.per_image != ours.per_image  # the weights matter, so equality above means something


def test_altered_weights_are_refused_by_name(bundle: Path):
    weights = bundle / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # inside the last tensor: same size, still parseable, different numbers
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"weights\.safetensors: sha256 mismatch"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match=r"weights\.safetensors"):
        bundle_sha256(bundle)


def test_truncated_weights_are_refused(bundle: Path):
    weights = bundle / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(BundleError, match=r"weights\.safetensors: 200 bytes"):
        load_bundle(bundle)


def test_missing_manifest_directory_or_file(bundle: Path, tmp_path: Path):
    (bundle / "config.json").unlink()
    with pytest.raises(BundleError, match=r"config\.json is missing"):
        load_bundle(bundle)
    (bundle / "manifest.json").unlink()
    assert not is_bundle(bundle)
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_model(bundle)  # a directory is never taken for a checkpoint
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "absent")


def test_foreign_format_and_broken_manifest_are_refused(bundle: Path):
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "format": "other-bundle/1"}))
    with pytest.raises(BundleError, match="not a shrink bundle"):
        load_bundle(bundle)
    manifest_path.write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    with pytest.raises(BundleError, match="does not match the file table"):
        load_bundle(bundle)
    files = {**manifest["files"], "../escape.json": manifest["files"]["metrics.json"]}
    manifest_path.write_text(json.dumps({**manifest, "files": files}))
    with pytest.raises(BundleError, match="not a plain file name"):
        load_bundle(bundle)
    manifest_path.write_text("{")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)


def test_a_config_that_does_not_validate_is_refused(bundle: Path):
    config = json.loads((bundle / "config.json").read_text())
    config["training"]["epochz"] = 1
    (bundle / "config.json").write_text(json.dumps(config))
    seal(bundle)  # the hashes pass; the config itself must still be checked
    assert bundle_sha256(bundle)
    with pytest.raises(BundleError, match=r"config\.json: training\.epochz"):
        load_bundle(bundle)


@pytest.mark.parametrize("field, value", [("width", 16), ("depth", 4)], ids=["shapes", "missing-keys"])
def test_weights_that_do_not_fit_the_config_are_refused(bundle: Path, field: str, value: int):
    config = json.loads((bundle / "config.json").read_text())
    config["model"]["reccnn"][field] = value
    (bundle / "config.json").write_text(json.dumps(config))
    seal(bundle)
    with pytest.raises(BundleError, match=r"weights\.safetensors: does not fit config\.model"):
        load_bundle(bundle)


def test_an_existing_bundle_is_kept_unless_overwrite(tiny_config: TrainConfig, bundle: Path, exports: Path):
    before, identity = snapshot(bundle), bundle_sha256(bundle)
    other = trained_like(tiny_config, seed=1)
    with pytest.raises(BundleError, match="not empty"):
        save_bundle(bundle, other, tiny_config, METRICS)
    assert snapshot(bundle) == before and bundle_sha256(bundle) == identity
    assert sorted(p.name for p in exports.iterdir()) == ["b"]
    save_bundle(bundle, other, tiny_config, METRICS, overwrite=True)
    assert bundle_sha256(bundle) != identity
    loaded, _, _ = load_bundle(bundle)
    assert torch.equal(loaded.reccnn.head.weight, other.reccnn.head.weight)
    assert sorted(p.name for p in exports.iterdir()) == ["b"]


def test_empty_directory_is_filled_and_a_file_is_refused(tiny_config: TrainConfig, exports: Path):
    (exports / "empty").mkdir()
    assert is_bundle(save_bundle(exports / "empty", trained_like(tiny_config), tiny_config, METRICS))
    (exports / "file").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        save_bundle(exports / "file", trained_like(tiny_config), tiny_config, METRICS)
    assert (exports / "file").read_text() == "x"


def test_a_failed_save_leaves_nothing(tiny_config: TrainConfig, exports: Path):
    with pytest.raises(TypeError):
        save_bundle(exports / "b", trained_like(tiny_config), tiny_config, {"not json": object()})
    other = build_model(ModelConfig(ratio=3, comcnn={"width": 8}, reccnn={"depth": 3, "width": 8}))
    with pytest.raises(BundleError, match="not built from config.model"):
        save_bundle(exports / "b", other, tiny_config, METRICS)
    assert list(exports.iterdir()) == []


def test_bundle_from_checkpoint_and_load_model_agree(tiny_config: TrainConfig, tmp_path: Path, exports: Path):
    model = trained_like(tiny_config)
    checkpoint = save_checkpoint(
        tmp_path / "best.ckpt", {"config": tiny_config.model_dump_json(), "model": model.state_dict()}
    )
    path = bundle_from_checkpoint(checkpoint, exports / "b", METRICS)
    for source in (checkpoint, path):
        loaded, config = load_model(source)
        assert config == tiny_config and not loaded.training
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    with pytest.raises(BundleError, match="not empty"):
        bundle_from_checkpoint(checkpoint, path, METRICS)
    with pytest.raises(CheckpointError):
        bundle_from_checkpoint(tmp_path / "absent.ckpt", exports / "c", METRICS)
    assert not (exports / "c").exists()


def test_shrink_eval_takes_a_bundle_or_a_checkpoint(
    tiny_config: TrainConfig, image_folder: Path, tmp_path: Path, exports: Path, capsys
):
    model = trained_like(tiny_config)
    checkpoint = save_checkpoint(
        tmp_path / "best.ckpt", {"config": tiny_config.model_dump_json(), "model": model.state_dict()}
    )
    path = bundle_from_checkpoint(checkpoint, exports / "b", METRICS)
    assert main(eval_args(path, image_folder, tmp_path / "bundle.json")) == 0
    assert main(eval_args(checkpoint, image_folder, tmp_path / "ckpt.json")) == 0
    assert "jpeg @bpp" in capsys.readouterr().out
    from_bundle = json.loads((tmp_path / "bundle.json").read_text())
    from_checkpoint = json.loads((tmp_path / "ckpt.json").read_text())
    assert [p["quality"] for p in from_bundle["curves"]["shrink"]["points"]] == [30, 70]
    assert from_bundle["curves"] == from_checkpoint["curves"]
    assert from_bundle["meta"]["bundle_sha256"] == bundle_sha256(path)
    assert "bundle_sha256" not in from_checkpoint["meta"]


def test_shrink_eval_of_a_corrupted_bundle_exits_2_with_one_line(
    bundle: Path, image_folder: Path, tmp_path: Path, capsys
):
    weights = bundle / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    out = tmp_path / "x.json"
    assert main(eval_args(bundle, image_folder, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "weights.safetensors" in err and err.startswith("shrink eval: error:")
    assert not out.exists()


def test_weights_that_are_a_fifo_or_a_link_are_refused_without_reading(bundle: Path):
    weights = bundle / "weights.safetensors"
    weights.unlink()
    os.mkfifo(weights)  # read whole, it would block forever
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle(bundle)
    weights.unlink()
    weights.symlink_to("/dev/zero")  # read whole, it would exhaust memory
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(bundle)


def test_a_manifest_naming_a_link_or_a_huge_file_is_refused(bundle: Path, tmp_path: Path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    (bundle / "metrics.json").unlink()
    (bundle / "metrics.json").symlink_to(outside)
    seal(bundle)
    with pytest.raises(BundleError, match="symbolic link"):
        load_bundle(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["metrics.json"]["bytes"] = 1 << 40
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="no byte count"):
        load_bundle(bundle)


def test_a_config_larger_than_its_weights_is_refused_before_the_model_is_built(bundle: Path, monkeypatch):
    config = json.loads((bundle / "config.json").read_text())
    config["model"]["reccnn"].update(depth=64, width=512, kernel=5)  # the largest allowed: ~1.4 GB of weights
    (bundle / "config.json").write_text(json.dumps(config))
    seal(bundle)

    def never(*args, **kwargs):
        raise AssertionError("the model was built before its weights were checked")

    monkeypatch.setattr("shrink.compression.bundle.build_model", never)
    with pytest.raises(BundleError, match=r"weights\.safetensors: does not fit config\.model: missing"):
        load_bundle(bundle)


def test_bundles_get_the_umasks_modes(tiny_config: TrainConfig, exports: Path):
    previous = os.umask(0o022)
    try:
        path = save_bundle(exports / "b", trained_like(tiny_config), tiny_config, METRICS)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()} == {0o644}


def test_shrink_export_checkpoint_writes_a_bundle_that_compresses(
    tiny_config: TrainConfig, image_folder: Path, tmp_path: Path, capsys
):
    model = trained_like(tiny_config)
    state = {"config": tiny_config.model_dump_json(), "model": model.state_dict(), "epoch": 3, "step": 9}
    checkpoint = save_checkpoint(tmp_path / "best.ckpt", {**state, "best_score": float("-inf")})
    out = tmp_path / "bundle"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    loaded, config = load_model(out)
    assert config == tiny_config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {"checkpoint": "best.ckpt", "epoch": 3, "step": 9}  # no path, no infinite score
    photo, shrunk, back = image_folder / "img0.png", tmp_path / "x.jpg", tmp_path / "y.png"
    assert main(["compress", str(photo), "--model", str(out), "-o", str(shrunk)]) == 0
    assert main(["decompress", str(shrunk), "--model", str(out), "-o", str(back)]) == 0
    assert back.is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--family"], "--family exports a study's trials"),
        (["--trial", "1"], "not allowed with argument"),
    ],
)
def test_shrink_export_checkpoint_refuses_study_options(tmp_path: Path, capsys, extra, message):
    out = tmp_path / "bundle"
    argv = ["export", "--checkpoint", str(tmp_path / "best.ckpt"), "--out", str(out), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
    assert not out.exists()


def test_shrink_export_of_trials_needs_the_storage(tmp_path: Path, capsys):
    assert main(["export", "--pareto", "--out", str(tmp_path / "b")]) == 2
    assert "--storage and --study-name are required" in capsys.readouterr().err
