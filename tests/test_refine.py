"""shrink refine: chosen trials retrained at [refine] as a child study, tested once on [test], a family."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from shrink.compression.bundle import load_model
from shrink.compression.codecs import build_codec
from shrink.compression.data import load_images
from shrink.compression.evaluate import evaluate
from shrink.compression.family import load_family
from shrink.dashboards.cache import CurveCache
from shrink.dashboards.refined import ENVELOPE, get_refined_info, render_refined
from shrink.search.cli import main
from shrink.search.records import (
    PARENT_STUDY_ATTR,
    PARENT_TRIAL_ATTR,
    SEARCH_FIDELITY_ATTR,
    SPEC_ATTR,
    TEST_CURVE_ATTR,
)
from shrink.search.refine import rank_agreement, refine_spec, spread_over_rate
from shrink.search.spec import load_spec
from shrink.search.study import stored_spec

from .helpers import load, write_spec

REFINE = """
[refine]
epochs = 3
steps_per_epoch = 3
crop = 64

[test]
data = "{images}"
qualities = [30, 70]
"""

RATIO_THREE = """
[space."model.ratio"]
type = "categorical"
choices = [3]
"""


def test_refine_spec_swaps_the_budget_for_the_refine_fidelity(tmp_path: Path, image_folder: Path):
    spec = load_spec(write_spec(tmp_path / "s.toml", image_folder, extra=REFINE.format(images=image_folder)))
    assert (spec.base_config.training.epochs, spec.base_config.training.crop) == (3, 48)
    refined = refine_spec(spec, n_trials=2, trial_time_s=60)
    budget = refined.spec.budget
    assert (budget.n_trials, budget.epochs, budget.steps_per_epoch, budget.crop) == (2, 3, 3, 64)
    assert budget.batch_size == spec.spec.budget.batch_size == 2  # unset in [refine]: the search's
    training = refined.base_config.training
    assert (training.epochs, training.steps_per_epoch, training.crop, training.time_budget_s) == (
        3,
        3,
        64,
        60,
    )
    assert refined.spec.space == spec.spec.space and refined.base_config.model == spec.base_config.model
    assert spec.spec.test.data == str(image_folder) and spec.spec.test.qualities == [30, 70]


@pytest.mark.slow
def test_refined_trials_keep_their_params_are_tested_once_and_export_as_a_family(
    tmp_path: Path, image_folder: Path, capsys
):
    extra = REFINE.format(images=image_folder)
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=3, extra=extra)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    parent = load(url)
    chosen = [t.number for t in parent.trials if t.state == TrialState.COMPLETE][:2]
    assert main(["refine", "--storage", url, "--study-name", "toy", "--trials", *map(str, chosen)]) == 0
    assert "created study 'toy-refine'" in capsys.readouterr().out
    child = load(url, "toy-refine")
    assert child.user_attrs[PARENT_STUDY_ATTR] == "toy"
    assert stored_spec(child).base_config.training.crop == 64
    waiting = child.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs[PARENT_TRIAL_ATTR] for t in waiting] == chosen

    assert main(["worker", "--storage", url, "--study-name", "toy-refine"]) == 0
    child = load(url, "toy-refine")
    refined = child.get_trials(states=(TrialState.COMPLETE,))
    assert len(refined) == len(child.trials) == 2  # exactly the chosen trials, no more
    images = load_images(image_folder)
    for trial in refined:
        origin = parent.trials[trial.user_attrs[PARENT_TRIAL_ATTR]]
        assert trial.params == origin.params
        assert [e["step"] for e in trial.user_attrs["epochs"]] == [3, 6, 9]  # [refine]: 3 epochs x 3 steps
        model, config = load_model(trial.user_attrs["checkpoint"])
        assert config.training.crop == 64
        expected = evaluate(model, images, [30, 70], build_codec(config.codec))
        stored = trial.user_attrs[TEST_CURVE_ATTR]["points"]
        assert stored == [p.to_dict() for p in expected.points]
    agreement = rank_agreement(child)
    assert sorted(p[0] for p in agreement.pairs) == chosen and agreement.rho is None  # fewer than 3
    info = get_refined_info(child, stored_spec(child), CurveCache(None), [30, 70])
    assert set(info.members) == {f"trial-{t.number:05d}" for t in refined}
    assert {name for name, _ in info.envelope_points} <= set(info.members)
    assert {row.test for row in info.bd_rows} == {ENVELOPE, *info.members}
    anchors = {row.anchor for row in info.bd_rows}
    assert anchors == {"jpeg", "down2-jpeg", "mozjpeg", "webp", "avif", "jpegli", "jpegxl"}
    page = render_refined(info)
    assert "Spearman ρ between search-fidelity and refined dev gain: n/a" in page
    search = stored_spec(parent).base_config.training
    fidelity = {name: (searched, refined) for name, searched, refined in info.fidelity}
    assert fidelity["crop"] == (str(search.crop), "64") and fidelity["epochs"] == (str(search.epochs), "3")
    assert child.user_attrs[SEARCH_FIDELITY_ATTR]["steps_per_epoch"] == search.steps_per_epoch
    assert f"<td class=name>crop</td><td>{search.crop}</td><td>64</td>" in page

    out = tmp_path / "family"
    export = ["export", "--storage", url, "--study-name", "toy-refine", "--trial", "0", "1"]
    assert main([*export, "--family", "--out", str(out)]) == 0
    family = load_family(out)
    by_trial = {t.number: t for t in refined}
    for member in family.members:  # the stored test curves, not measured again
        number = int(member.name.removeprefix("trial-"))
        stored = by_trial[number].user_attrs[TEST_CURVE_ATTR]["points"]
        assert [p.to_dict() for p in member.curve.points] == stored


def rated_trial(number: int, bpp: float, gain: float) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(
        values=[bpp, 1.0], user_attrs={"rd_point": {"dev_bpp": bpp, "dev_gain_db": gain}}
    )
    trial.number = number
    return trial


def test_spread_over_rate_keeps_both_ends_and_even_steps_between():
    rates = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    gains = [0.1, 0.4, 0.2, 0.9, 0.3, 0.5]
    trials = [rated_trial(n, bpp, gain) for n, (bpp, gain) in enumerate(zip(rates, gains, strict=True))]
    pick = lambda n: [t.number for t in spread_over_rate(trials, n)]  # noqa: E731
    # by rate: 1 (0.1), 5 (0.2), 3 (0.3), 0 (0.5), 4 (0.7), 2 (0.9)
    assert pick(2) == [1, 2]  # the lowest and the highest rate
    assert pick(3) == [1, 2, 3]  # positions 0, 2.5 -> 2 (rounded to even), 5
    assert pick(4) == [0, 1, 2, 3]  # positions 0, 1.67 -> 2, 3.33 -> 3, 5
    assert pick(1) == [3]  # the highest dev gain
    assert pick(6) == pick(9) == list(range(6))
    with pytest.raises(ValueError, match="at least 1"):
        spread_over_rate(trials, 0)


def test_refine_refuses_what_it_cannot_do_with_one_line(tmp_path: Path, image_folder: Path, capsys):
    missing = tmp_path / "nowhere"
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, extra=REFINE.format(images=missing))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    capsys.readouterr()
    assert main(["refine", "--storage", url, "--study-name", "toy", "--pareto"]) == 2
    assert "has no complete trial" in capsys.readouterr().err
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    capsys.readouterr()
    assert main(["refine", "--storage", url, "--study-name", "toy", "--pareto"]) == 2  # test folder missing
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1
    assert main(["refine", "--storage", url, "--study-name", "toy", "--trials", "7"]) == 2
    assert "no trial number 7" in capsys.readouterr().err
    assert main(["refine", "--storage", url, "--study-name", "toy", "--pareto", "--max-trials", "0"]) == 2
    assert "--max-trials: must be a positive integer, got 0" in capsys.readouterr().err
    assert main(["refine", "--storage", url, "--study-name", "toy", "--status"]) == 2
    assert "not a refine study" in capsys.readouterr().err
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["toy"]  # nothing half-made


def test_refine_refuses_a_trial_its_refine_crop_cannot_train(tmp_path: Path, image_folder: Path, capsys):
    """A study stored before specs checked [refine] against the space: a ratio-3 trial and a 64 px refine
    crop. Refine names the trial and the fields, exits 2 and makes no child study, instead of failing the
    trial at its first step."""
    extra = REFINE.format(images=image_folder).replace("crop = 64", "crop = 96") + RATIO_THREE
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, extra=extra)
    spec.write_text(spec.read_text().replace("crop = 48", "crop = 96"))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    parent = load(url)
    stored = json.loads(parent.user_attrs[SPEC_ATTR])
    stored["spec"]["refine"]["crop"] = 64  # what validation refuses today
    parent.set_user_attr(SPEC_ATTR, json.dumps(stored))
    searched = {"codec.quality": IntDistribution(20, 80), "model.ratio": CategoricalDistribution([3])}
    trial = parent.ask(searched)
    parent.tell(trial, [0.5, 0.9])
    trial_number = trial.number
    capsys.readouterr()
    assert main(["refine", "--storage", url, "--study-name", "toy", "--trials", str(trial_number)]) == 2
    err = capsys.readouterr().err
    assert f"trial {trial_number} cannot train at [refine]" in err
    assert "training.crop = 64 is not a multiple of model.ratio = 3" in err
    assert err.count("\n") == 1
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["toy"]
