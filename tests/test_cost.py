"""Decoder cost: MACs per output pixel and parameters counted against hand counts, recorded per trial, and
used as a study objective or limit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState

from shrink.compression.config import ModelConfig
from shrink.compression.cost import COST_KEYS, config_cost, model_cost
from shrink.compression.models import build_model
from shrink.compression.rd import RDCurve
from shrink.dashboards.report import _front_table
from shrink.dashboards.study_info import get_pruning_savings, get_rd_points_info
from shrink.dashboards.trial_artifacts import FRONT_3D_GRAPH_ID
from shrink.search.cli import main
from shrink.search.records import DECODER_LIMIT_ATTR, DECODER_MACS_ATTR, DECODER_PARAMS_ATTR, DEV_JPEG_ATTR
from shrink.search.results import format_front, front_rows
from shrink.search.spec import SpecError, load_spec, validate_spec

from .helpers import load, storage_url, stored_graphs, write_spec


def toy_model(ratio=2, com_width=8, rec_depth=3, rec_width=8, rec_norm="none") -> ModelConfig:
    return ModelConfig(
        ratio=ratio,
        comcnn={"depth": 3, "width": com_width},
        reccnn={"depth": rec_depth, "width": rec_width, "norm": rec_norm},
    )


def rec_macs_by_hand(depth: int, width: int) -> int:
    """RecCNN, all at full resolution: 3x3 conv 3->w, (depth - 2) x w->w, head w->3."""
    return 9 * (3 * width + (depth - 2) * width * width + width * 3)


def test_macs_and_params_match_a_hand_count():
    cost = config_cost(toy_model(ratio=2))
    assert list(cost.to_dict()) == list(COST_KEYS) and dict(cost) == cost.to_dict()  # dataclass and mapping
    # decoder: 3x3 convs 3->8, 8->8, 8->3 at the output's resolution (bicubic upscaling is not counted)
    assert cost.decoder_macs_per_pixel == 9 * 3 * 8 + 9 * 8 * 8 + 9 * 8 * 3 == 1008
    # weights + biases (no norm: every conv has a bias)
    assert cost.decoder_params == (9 * 3 * 8 + 8) + (9 * 8 * 8 + 8) + (9 * 8 * 3 + 3) == 1027
    # encoder: 3->8 at full resolution, the strided 3x3 8->8 and the head 8->3 at 1/4 of the pixels
    assert cost.encoder_macs_per_pixel == 9 * 3 * 8 + (9 * 8 * 8 + 9 * 8 * 3) / 4 == 414
    assert cost.encoder_params == 1027
    # ratio 4: the strided conv is 4x4 and it and the head run at 1/16 of the pixels; the decoder is the same
    ratio4 = config_cost(toy_model(ratio=4))
    assert ratio4.encoder_macs_per_pixel == 9 * 3 * 8 + (16 * 8 * 8 + 9 * 8 * 3) / 16
    assert ratio4.decoder_macs_per_pixel == 1008
    # batch norm: the hidden conv loses its bias and gains the norm's weight and bias (2 x 8)
    assert config_cost(toy_model(rec_norm="batch")).decoder_params == 1027 - 8 + 16


def test_doubling_the_width_quadruples_the_hidden_layers_macs():
    narrow, wide = (config_cost(toy_model(rec_depth=5, rec_width=w)) for w in (8, 16))
    hidden = [c.decoder_macs_per_pixel - 9 * 6 * w for c, w in ((narrow, 8), (wide, 16))]
    assert hidden[0] == 3 * 9 * 8 * 8 and hidden[1] == 4 * hidden[0]
    assert 3.0 < wide.decoder_macs_per_pixel / narrow.decoder_macs_per_pixel < 4.0
    assert wide.decoder_macs_per_pixel == rec_macs_by_hand(5, 16)


def test_counting_a_real_model_matches_the_meta_count_and_changes_nothing():
    config = toy_model(rec_norm="batch")
    model = build_model(config)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    assert model_cost(model) == config_cost(config)
    assert model.training  # mode restored; BatchNorm statistics untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.random.get_rng_state())  # config_cost leaves seeded draws alone


# ---------------------------------------------------------------- spec


@pytest.mark.parametrize(
    "objective, path, detail",
    [
        ({"decoder_cost": "objective", "max_decoder_macs_per_pixel": -1.0}, "objective.max_", "greater"),
        (
            {"decoder_cost": "constraint", "max_decoder_macs_per_pixel": float("nan")},
            "objective.max_",
            "finite",
        ),
        ({"decoder_cost": "cheap"}, "objective.decoder_cost", "'objective'"),
        ({"decoder_cost": "constraint"}, "objective.max_decoder_macs_per_pixel", "needed"),
        ({"max_decoder_macs_per_pixel": 1000.0}, "objective.max_decoder_macs_per_pixel", "ignored unless"),
        ({"mode": "gain", "decoder_cost": "objective"}, "pruner.name", "multi-objective"),
    ],
)
def test_bad_decoder_cost_settings_name_the_field(tmp_path: Path, objective, path, detail):
    data = {"objective": objective}
    if objective.get("mode") == "gain":
        data["pruner"] = {"name": "median"}
    with pytest.raises(SpecError) as info:
        validate_spec(data, tmp_path)
    message = str(info.value)
    assert message.startswith(path) and detail in message, message


def test_bad_decoder_limit_is_one_line_and_exit_2(tmp_path: Path, image_folder: Path, capsys):
    spec = write_spec(tmp_path / "toy.toml", image_folder)
    url = storage_url("sqlite", tmp_path)
    args = ["study", "create", str(spec), "--storage", url, "--set"]
    assert main([*args, "objective.max_decoder_macs_per_pixel=-5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shrink study: error: objective.max_decoder_macs_per_pixel")
    assert main([*args, "objective.decoder_cost=sometimes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("shrink study: error: objective.decoder_cost")
    assert not (tmp_path / "study.db").exists()


def test_default_specs_keep_their_directions(tmp_path: Path):
    assert validate_spec({}, tmp_path).spec.objective.directions_and_names == (
        ["minimize", "maximize"],
        ["dev_bpp", "dev_msssim"],
    )
    gain = validate_spec({"objective": {"mode": "gain"}}, tmp_path).spec.objective
    assert gain.directions_and_names == (["maximize"], ["dev_gain_db"])


# ---------------------------------------------------------------- studies


def test_decoder_cost_objective_makes_a_third_direction_and_value(tmp_path, image_folder, capsys):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, epochs=1, steps=1)
    url = storage_url("sqlite", tmp_path)
    cost_objective = ["--set", "objective.decoder_cost=objective"]
    assert main(["study", "create", str(spec), "--storage", url, *cost_objective]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    out = capsys.readouterr().out
    study = load(url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["dev_bpp", "dev_msssim", "decoder_macs_per_pixel"]
    (trial,) = study.trials
    assert trial.state == TrialState.COMPLETE
    width = trial.params["model.reccnn.width"]
    macs = rec_macs_by_hand(3, width)
    point = trial.user_attrs["rd_point"]
    assert trial.values == [point["dev_bpp"], point["dev_msssim"], macs]
    assert trial.user_attrs[DECODER_MACS_ATTR] == macs
    # the RecCNN's default batch norm: the hidden conv has no bias, its norm a weight and a bias per channel
    params = (9 * 3 * width + width) + (9 * width * width + 2 * width) + (9 * width * 3 + 3)
    assert trial.user_attrs[DECODER_PARAMS_ATTR] == params
    first = next(line for line in out.splitlines() if "training on" in line)  # the trainer's first line
    assert f"decoder {macs:,} MACs/px" in first
    (row,) = front_rows(study, RDCurve.from_dict(study.user_attrs[DEV_JPEG_ATTR]))
    assert row.decoder_macs_per_pixel == macs
    assert "dec MACs/px" in format_front([row]) and f"{macs:,}" in format_front([row])
    assert "decoder MACs/px" in _front_table([row])
    assert get_rd_points_info(study)[0].decoder_macs_per_pixel == macs
    assert FRONT_3D_GRAPH_ID in stored_graphs(study)  # the worker's hook pushed the 3-D front
    # the spec stored with the study reads back with its decoder cost
    assert load_spec(spec, ["objective.decoder_cost=objective"]).spec.objective.decoder_cost == "objective"


def test_a_trial_over_the_decoder_limit_is_pruned_untrained(tmp_path, image_folder, capsys):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, epochs=1, steps=1)
    url = storage_url("sqlite", tmp_path)
    limit = ["objective.decoder_cost=constraint", "objective.max_decoder_macs_per_pixel=500"]
    sets = [arg for item in [*limit, "sampler.name=tpe"] for arg in ("--set", item)]
    assert main(["study", "create", str(spec), "--storage", url, *sets]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    out = capsys.readouterr().out
    study = load(url)
    assert len(study.directions) == 2  # a limit adds no objective
    (trial,) = study.trials
    macs = rec_macs_by_hand(3, trial.params["model.reccnn.width"])
    assert trial.state == TrialState.PRUNED
    reason = trial.user_attrs["prune_reason"]
    assert (
        reason
        == f"decoder cost {macs:,.0f} MACs/px > objective.max_decoder_macs_per_pixel = 500: not trained"
    )
    assert trial.user_attrs[DECODER_LIMIT_ATTR] == {"decoder_macs_per_pixel": macs, "max": 500.0}
    assert "epochs" not in trial.user_attrs and "training on" not in out  # no step, no epoch
    assert not (tmp_path / "study.runs" / "toy").exists()  # not even a run folder
    assert trial.constraints == {DECODER_MACS_ATTR: macs - 500.0}  # Optuna's, for TPE / NSGA-II / GP
    assert get_pruning_savings(study, 1).n_finished == 0  # no pruner's saving
