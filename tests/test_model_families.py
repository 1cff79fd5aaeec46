"""Model families behind the registry: each starts at bicubic, trains, tiles, saves, loads, is searchable."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import optuna
import pytest
import torch

from shrink.compression.bundle import load_bundle, save_bundle
from shrink.compression.checkpoint import model_from_checkpoint, save_checkpoint
from shrink.compression.config import (
    ComFamily,
    ConfigError,
    ModelConfig,
    RecCNNConfig,
    RecFamily,
    config_from_dict,
)
from shrink.compression.models import (
    COMCNN_FAMILIES,
    RECCNN_FAMILIES,
    UNetBody,
    build_model,
    build_reccnn,
)
from shrink.compression.resample import bicubic_down, bicubic_up, pad_to_multiple
from shrink.compression.tiling import (
    Tiling,
    comcnn_margin,
    compact_image,
    reccnn_margin,
    reconstruct_image,
    tilings,
)
from shrink.compression.trainer import Trainer
from shrink.search.cli import main
from shrink.search.space import config_for, suggest
from shrink.search.spec import load_spec, validate_spec

from .conftest import textured_image, tiny_config_dict

REPO = Path(__file__).resolve().parents[1]

# (name, reccnn overrides): every family x upsample mode, attention where it exists
REC_CASES = {
    "plain": {"family": "plain", "depth": 4, "norm": "none"},
    "plain-k5-shuffle": {
        "family": "plain",
        "depth": 3,
        "kernel": 5,
        "norm": "batch",
        "upsample": "pixelshuffle",
    },
    "residual": {"family": "residual", "depth": 6, "res_scale": 0.5},
    "residual-attention-shuffle": {
        "family": "residual",
        "depth": 4,
        "attention": True,
        "upsample": "pixelshuffle",
    },
    "unet": {"family": "unet", "levels": 2},
    "unet-k5-attention": {"family": "unet", "levels": 1, "kernel": 5, "attention": True},
    "unet3-shuffle": {"family": "unet", "levels": 3, "upsample": "pixelshuffle"},
    "residual-quality-shuffle": {
        "family": "residual",
        "depth": 4,
        "quality_input": True,
        "upsample": "pixelshuffle",
    },
    "unet-quality": {"family": "unet", "levels": 1, "quality_input": True},
}
QUALITY = 40  # passed to every reconstruct: read by the quality-conditioned cases, ignored by the others
COM_CASES = {
    "residual": {"family": "residual"},
    "car": {"family": "car"},
    "car5": {"family": "car", "car_support": 5},
}


def make(ratio: int, rec: dict, com: dict | None = None) -> torch.nn.Module:
    return build_model(
        ModelConfig(ratio=ratio, comcnn={"depth": 3, "width": 8, **(com or {})}, reccnn={"width": 8, **rec})
    )


def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Every weight moved off its initial value, so both nets' zero heads are non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)
    return model.eval()


def test_the_config_literals_name_exactly_the_registered_families():
    assert set(typing.get_args(RecFamily)) == set(RECCNN_FAMILIES) == {"plain", "residual", "unet"}
    assert set(typing.get_args(ComFamily)) == set(COMCNN_FAMILIES) == {"residual", "car"}
    assert ModelConfig().reccnn.family == "plain" and ModelConfig().comcnn.family == "residual"
    assert all(cls.family == name for name, cls in {**RECCNN_FAMILIES, **COMCNN_FAMILIES}.items())


def test_default_families_keep_the_old_parameter_names():
    """Checkpoints written before families existed hold body.* and head.* of both nets: still the keys."""
    keys = set(build_model(ModelConfig()).state_dict())
    assert {key.split(".")[1] for key in keys} == {"body", "head"}
    assert {key.split(".")[0] for key in keys} == {"comcnn", "reccnn"}


@pytest.mark.parametrize("ratio", [1, 2, 3, 4])
@pytest.mark.parametrize("case", sorted(REC_CASES))
def test_reccnn_family_starts_at_bicubic_with_the_same_keys(case: str, ratio: int):
    model = make(ratio, REC_CASES[case]).eval()
    decoded = torch.rand(2, 3, 14, 11)
    size = (decoded.shape[-2] * ratio, decoded.shape[-1] * ratio)
    with torch.no_grad():
        out = model.reconstruct(decoded, size, QUALITY)
    assert set(out) == {"up", "residual", "x_hat"}
    assert out["x_hat"].shape == out["residual"].shape == (2, 3, *size)
    assert torch.equal(out["up"], bicubic_up(decoded, size))
    assert torch.equal(out["x_hat"], bicubic_up(decoded, size))  # exactly the baseline, not just close
    assert model.reccnn.shuffle == (REC_CASES[case].get("upsample") == "pixelshuffle" and ratio > 1)


@pytest.mark.parametrize("ratio", [1, 2, 3, 4])
@pytest.mark.parametrize("case", sorted(COM_CASES))
def test_comcnn_family_starts_at_bicubic_with_the_same_keys(case: str, ratio: int):
    model = make(ratio, {"depth": 3}, COM_CASES[case]).eval()
    x = torch.rand(2, 3, 48, 36)
    with torch.no_grad():
        out = model.compress(x)
    assert set(out) == {"compact", "base"}
    assert out["compact"].shape == (2, 3, 48 // ratio, 36 // ratio)
    assert torch.equal(out["compact"], bicubic_down(x, ratio)) and torch.equal(out["base"], out["compact"])


def test_car_keeps_a_flat_image_flat_whatever_it_predicts():
    model = perturbed(make(2, {"depth": 3}, {"family": "car"}), scale=0.3)
    flat = torch.full((1, 3, 32, 32), 0.37)
    with torch.no_grad():
        compact = model.compress(flat)["compact"]
    assert (compact - 0.37).abs().max() < 1e-6  # the predicted kernels sum to zero
    textured = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        out = model.compress(textured)
    assert (out["compact"] - out["base"]).abs().max() > 1e-3  # and it does resample


@pytest.mark.parametrize("com", sorted(COM_CASES))
@pytest.mark.parametrize("case", sorted(REC_CASES))
def test_one_backward_pass_reaches_every_parameter(case: str, com: str):
    model = make(2, REC_CASES[case], COM_CASES[com])
    for net in (model.comcnn, model.reccnn):  # off the zero start, which holds the bodies' gradient at zero
        torch.nn.init.normal_(net.head.weight, std=0.01)
    x = torch.rand(2, 3, 32, 32)
    out = model(x, channel=lambda compact: compact, quality=QUALITY)
    assert set(out) == {"compact", "base", "decoded", "up", "residual", "x_hat"}
    (out["x_hat"] - x).pow(2).mean().backward()
    groups = model.parameter_groups()  # asserts the groups are disjoint
    ids = [id(p) for params in groups.values() for p in params]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "case",
    [
        {"family": "plain", "depth": 4},
        {"family": "plain", "depth": 3, "kernel": 5},
        {"family": "residual", "depth": 7},
        {"family": "unet", "levels": 1, "kernel": 5},
        {"family": "unet", "levels": 2},
        {"family": "unet", "levels": 3},
    ],
)
def test_reach_bounds_the_measured_receptive_field(case: dict):
    """An output pixel's gradient w.r.t. the body's input is zero beyond ``body_reach + 1`` (the head)."""
    cfg = RecCNNConfig(width=8, **case)
    net = perturbed(build_reccnn(cfg, 1))
    cls = RECCNN_FAMILIES[cfg.family]
    size = 2 * (cls.body_reach(cfg) + 1) + 24
    measured = 0
    for offset in range(8):  # every position modulo the strides
        up = torch.rand(1, 3, size, size, requires_grad=True)
        centre = size // 2 - 4 + offset
        net(up)["residual"][0, :, centre, centre].sum().backward()
        rows = up.grad[0].abs().sum(dim=(0, 2)).nonzero().flatten()
        measured = max(measured, int((rows - centre).abs().max()))
    assert measured == cls.body_reach(cfg) + 1  # a bound, and a tight one


def test_unet_reach_grows_with_its_levels():
    assert [UNetBody.reach(levels, 3) for levels in (1, 2, 3)] == [8, 20, 44]


TILE_CASES = [
    (2, "plain", "residual"),
    (3, "plain-k5-shuffle", "car"),
    (2, "residual", "car5"),
    (3, "residual", "residual"),
    (2, "unet", "car"),
    (3, "unet", "residual"),
    (1, "unet3-shuffle", "residual"),
    (2, "unet3-shuffle", "car"),
    (2, "residual-quality-shuffle", "residual"),
    (3, "unet-quality", "car"),
]


@pytest.mark.parametrize(("ratio", "rec", "com"), TILE_CASES)
def test_tiled_equals_whole_image_for_each_family(ratio: int, rec: str, com: str):
    model = perturbed(make(ratio, REC_CASES[rec], COM_CASES[com]), seed=ratio)
    assert tilings(model, tile=16 * ratio) == (
        Tiling(16, comcnn_margin(model.config)),
        Tiling(16, reccnn_margin(model.config)),
    )
    pixels = torch.from_numpy(textured_image(75, 101, ratio)).permute(2, 0, 1).contiguous()
    with torch.no_grad():
        whole = model.compress(pad_to_multiple(pixels[None].float() / 255.0, ratio))["compact"]
    tiled = compact_image(model, pixels, Tiling(16, comcnn_margin(model.config)))
    assert tiled.shape == whole.shape and (tiled - whole).abs().max() < 1e-5

    decoded = torch.round(whole.clamp(0, 1) * 255) / 255
    padded = (decoded.shape[-2] * ratio, decoded.shape[-1] * ratio)
    with torch.no_grad():
        expected = model.reconstruct(decoded, padded, QUALITY)["x_hat"][..., :75, :101]
    margin = reccnn_margin(model.config)
    assert len(Tiling(16, margin).spans(decoded.shape[-1])) >= 2
    tiled = reconstruct_image(model, decoded, (75, 101), Tiling(16, margin), QUALITY)
    assert tiled.shape == expected.shape and (tiled - expected).abs().max() < 1e-5
    # the control: a margin one pixel short shows seams (for the unet: tiles off its stride grid)
    short = reconstruct_image(model, decoded, (75, 101), Tiling(16, margin - 1), QUALITY)
    if REC_CASES[rec]["family"] == "unet":
        assert (short - expected).abs().max() > 1e-4


@pytest.mark.parametrize("case", ["residual-quality-shuffle", "unet-quality"])
def test_a_quality_conditioned_reccnn_reads_each_images_quality(case: str):
    """Off its zero start the output depends on the quality, per image of a batch; without one it refuses."""
    model = perturbed(make(2, REC_CASES[case]))
    decoded = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        both = model.reconstruct(decoded, (32, 24), [10, 90])["x_hat"]
        low = model.reconstruct(decoded, (32, 24), 10)["x_hat"]
        high = model.reconstruct(decoded, (32, 24), torch.tensor([90, 90]))["x_hat"]
    assert torch.allclose(both[0], low[0], atol=1e-6) and torch.allclose(both[1], high[1], atol=1e-6)
    assert (low - high).abs().max() > 1e-3
    first_conv = next(m for m in model.reccnn.body.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 4
    with pytest.raises(ValueError, match="quality_input"):
        model.reconstruct(decoded, (32, 24))
    with pytest.raises(ValueError, match="3 qualities for a batch of 2"):
        model.reconstruct(decoded, (32, 24), [10, 20, 30])


def test_channel_attention_runs_untiled():
    com, rec = tilings(make(2, REC_CASES["residual-attention-shuffle"]), tile=64)
    assert rec.core is None and com.core == 32


@pytest.mark.parametrize(
    ("rec", "com"), [("residual-attention-shuffle", "car"), ("unet3-shuffle", "car5"), ("unet", "residual")]
)
def test_a_family_saves_and_loads_as_checkpoint_and_bundle(image_folder: Path, tmp_path: Path, rec, com):
    data = tiny_config_dict(image_folder)
    data["model"]["reccnn"].update(REC_CASES[rec])
    data["model"]["comcnn"].update(COM_CASES[com])
    config = config_from_dict(data)
    assert config.model.reccnn.family == REC_CASES[rec]["family"]
    model = perturbed(build_model(config.model))
    x = torch.rand(1, 3, 48, 48)
    with torch.no_grad():
        expected = model(x, channel=lambda c: c)["x_hat"]
    save_checkpoint(tmp_path / "c.ckpt", {"config": config.model_dump_json(), "model": model.state_dict()})
    from_checkpoint, loaded_config = model_from_checkpoint(tmp_path / "c.ckpt")
    from_bundle, bundle_config, _ = load_bundle(save_bundle(tmp_path / "b", model, config, {}))
    assert loaded_config == bundle_config == config
    for loaded in (from_checkpoint, from_bundle):
        with torch.no_grad():
            assert torch.equal(loaded(x, channel=lambda c: c)["x_hat"], expected)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("model.reccnn.family", "bogus", "'plain', 'residual' or 'unet'"),
        ("model.comcnn.family", "bogus", "'residual' or 'car'"),
        ("model.reccnn.upsample", "nearest", "'bicubic' or 'pixelshuffle'"),
        ("model.comcnn.car_support", "4", "1, 3, 5 or 7"),
    ],
)
def test_a_bad_family_is_one_line_naming_the_field_and_the_choices(field, value, allowed, tmp_path: Path):
    with pytest.raises(ConfigError) as error:
        config_from_dict({}, [f"{field}={value}"])
    message = str(error.value)
    assert message.startswith(f"{field}: ") and allowed in message and "\n" not in message


def test_cli_train_with_a_bogus_family_exits_2_with_one_line(tmp_path: Path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(REPO / "studies/presets/demo.toml"),
        "--set",
        "model.reccnn.family=bogus",
    ]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "model.reccnn.family" in err and "'plain', 'residual' or 'unet'" in err
    assert not out.exists()


FAMILY_SPACE = {
    "model.reccnn.family": {"type": "categorical", "choices": ["plain", "residual", "unet"]},
    "model.reccnn.upsample": {"type": "categorical", "choices": ["bicubic", "pixelshuffle"]},
    "model.reccnn.depth": {
        "type": "int",
        "low": 2,
        "high": 6,
        "when": {"model.reccnn.family": ["plain", "residual"]},
    },
    "model.reccnn.norm": {
        "type": "categorical",
        "choices": ["none", "batch"],
        "when": {"model.reccnn.family": "plain"},
    },
    "model.reccnn.res_scale": {
        "type": "float",
        "low": 0.1,
        "high": 1.0,
        "when": {"model.reccnn.family": "residual"},
    },
    "model.reccnn.levels": {"type": "int", "low": 1, "high": 3, "when": {"model.reccnn.family": "unet"}},
    "model.reccnn.attention": {
        "type": "categorical",
        "choices": [False, True],
        "when": {"model.reccnn.family": ["residual", "unet"]},
    },
    "model.comcnn.family": {"type": "categorical", "choices": ["residual", "car"]},
    "model.comcnn.car_support": {
        "type": "categorical",
        "choices": [3, 5],
        "when": {"model.comcnn.family": "car"},
    },
}
ONLY_FOR = {"depth": {"plain", "residual"}, "norm": {"plain"}, "res_scale": {"residual"}, "levels": {"unet"}}


def test_a_spec_samples_per_family_parameters_into_valid_configs(tmp_path: Path):
    spec = validate_spec({"base": tiny_config_dict(tmp_path), "space": FAMILY_SPACE}, tmp_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, spec)
        study.tell(trial, 0.0)
        family = params["model.reccnn.family"]
        for name, families in ONLY_FOR.items():
            assert (f"model.reccnn.{name}" in params) == (family in families), (name, params)
        assert ("model.reccnn.attention" in params) == (family != "plain")
        assert ("model.comcnn.car_support" in params) == (params["model.comcnn.family"] == "car")
        config = config_for(spec, params)
        assert config.model.reccnn.family == family
        model = build_model(config.model).eval()
        x = torch.rand(1, 3, 32, 32)
        with torch.no_grad():
            out = model(x, channel=lambda c: c)
        assert out["x_hat"].shape == x.shape
        assert torch.equal(out["x_hat"], bicubic_up(bicubic_down(x, 2), (32, 32)))
        seen.add((family, config.model.reccnn.upsample, config.model.comcnn.family))
    assert {family for family, _, _ in seen} == {"plain", "residual", "unet"}
    assert len(seen) >= 8


def sampled_configs(spec, n: int, seed: int):
    """(params, config) of ``n`` random trials of ``spec``; each config's model is built."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        params = suggest(trial, spec)
        config = config_for(spec, params)
        study.tell(trial, 0.0)
        build_model(config.model)
        yield params, config


@pytest.mark.parametrize(("name", "directions"), [("arch.toml", 3), ("paper.toml", 2)])
def test_the_shipped_studies_search_and_build_every_family(name: str, directions: int):
    """arch.toml (CPU sizes) has the decoder cost as its third objective; paper.toml (GPU sizes) has the
    families too. Every sampled config builds, and per-family parameters are drawn only for their family."""
    spec = load_spec(REPO / "studies" / name)
    assert spec.spec.space["model.reccnn.family"].choices == ["plain", "residual", "unet"]
    assert len(spec.spec.objective.directions_and_names[0]) == directions
    families = set()
    for params, config in sampled_configs(spec, 16, seed=0):
        family = config.model.reccnn.family
        families.add((family, config.model.comcnn.family))
        assert ("model.reccnn.levels" in params) == (family == "unet")
        assert ("model.reccnn.res_scale" in params) == (family == "residual")
    assert {rec for rec, _ in families} == {"plain", "residual", "unet"}
    assert {com for _, com in families} == {"residual", "car"}


def test_the_cpu_study_searches_the_presets_family_and_switches_the_comcnn_off_with_its_parameters():
    """studies/cpu.toml: the preset's residual pixel-shuffle RecCNN at one quality per trial; the ComCNN's
    parameters are drawn only for trials that train it (rec_warmup_epochs 2, not the RecCNN-only 64)."""
    spec = load_spec(REPO / "studies" / "cpu.toml")
    com_params = {"model.comcnn.depth", "model.comcnn.width", "loss.alpha_com", "optim_com.lr"}
    warmups = set()
    for params, config in sampled_configs(spec, 12, seed=1):
        rec = config.model.reccnn
        assert (rec.family, rec.upsample, rec.quality_input) == ("residual", "pixelshuffle", False)
        warmups.add(config.training.rec_warmup_epochs)
        assert (com_params <= set(params)) == (config.training.rec_warmup_epochs == 2)
        assert com_params <= set(params) or not com_params & set(params)  # all or none
    assert warmups == {2, 64}


def test_the_full_range_study_adds_ratio_1_and_the_refine_crop_divides_by_every_ratio():
    """studies/full.toml: cpu.toml's search over ratios 1-3 and qualities up to 95."""
    spec = load_spec(REPO / "studies" / "full.toml")
    ratios = {config.model.ratio for _, config in sampled_configs(spec, 40, seed=2)}
    assert ratios == {1, 2, 3}
    assert all(spec.spec.refine.crop % ratio == 0 for ratio in ratios)
    assert all(10 <= config.codec.quality <= 95 for _, config in sampled_configs(spec, 40, seed=2))


@pytest.mark.parametrize("name", ["cpu.toml", "full.toml"])
def test_the_cpu_studies_draw_the_inner_codec_and_its_tables_where_it_takes_them(name: str):
    """Issue 37: libjpeg, mozjpeg or jpegli at every ratio; a table set and 4:2:0/4:4:4 only for libjpeg and
    mozjpeg (jpegli chooses its own tables and writes 4:2:0 only)."""
    spec = load_spec(REPO / "studies" / name)
    seen: dict[str, set] = {"codec": set(), "tables": set(), "subsampling": set(), "ratio": set()}
    for params, config in sampled_configs(spec, 60, seed=3):
        codec = config.codec
        takes_tables = codec.name in ("jpeg", "mozjpeg")
        assert ("codec.tables" in params) == takes_tables == ("codec.subsampling" in params)
        assert (codec.tables is not None) == takes_tables
        seen["codec"].add(codec.name)
        seen["ratio"].add((config.model.ratio, codec.name))
        seen["tables"].add(codec.tables)
        seen["subsampling"].add(codec.subsampling)
    assert seen["codec"] == {"jpeg", "mozjpeg", "jpegli"}
    assert len(seen["tables"]) >= 6 and seen["subsampling"] == {"4:2:0", "4:4:4"}
    assert {codec for ratio, codec in seen["ratio"] if ratio == 2} == seen["codec"]


@pytest.mark.parametrize(
    ("rec", "com", "mode"),
    [
        ("unet3-shuffle", "car", "proxy"),
        ("residual-attention-shuffle", "car5", "straight-through"),
        ("residual-quality-shuffle", "residual", "straight-through"),
    ],
)
def test_a_family_trains_end_to_end(image_folder: Path, tmp_path: Path, rec: str, com: str, mode: str):
    data = tiny_config_dict(
        image_folder, gradient_mode=mode, epochs=2, rec_warmup_epochs=0, first_turn="rec", steps_per_epoch=2
    )
    data["training"]["alternation_period"] = 1
    data["model"]["reccnn"].update(REC_CASES[rec])
    data["model"]["comcnn"].update(COM_CASES[com])
    trainer = Trainer(config_from_dict(data), tmp_path / "run", log=lambda _: None)
    trainer.model.comcnn.head.weight.data.normal_(std=1e-3)  # off the exact-bicubic fixed point
    before = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    result = trainer.run()
    after = trainer.model.state_dict()
    assert {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])} == {
        "comcnn",
        "reccnn",
    }
    assert all(math.isfinite(record.dev_gain_db) for record in result.history)
    loaded, _ = model_from_checkpoint(result.checkpoint)
    assert (
        loaded.reccnn.family == REC_CASES[rec]["family"] and loaded.comcnn.family == COM_CASES[com]["family"]
    )
