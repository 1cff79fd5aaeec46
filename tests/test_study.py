"""Studies end to end at toy scale: create, workers, attributes, export -> eval, the optuna CLI, signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState
from PIL import Image

from shrink.compression.bundle import load_bundle
from shrink.compression.codecs import build_codec
from shrink.compression.evaluate import evaluate
from shrink.compression.family import load_family
from shrink.compression.metrics import msssim_db
from shrink.compression.rd import (
    RDCurve,
    RDPoint,
    gain_at_rate,
    operating_gain,
    operating_point,
    operating_rate_change,
)
from shrink.compression.trainer import load_dev_images
from shrink.dashboards.report import _front_table
from shrink.dashboards.study_info import get_rd_points_info
from shrink.search.budget import issue_tickets
from shrink.search.cli import main
from shrink.search.records import (
    DEV_FINGERPRINT_ATTR,
    DEV_JPEG_ATTR,
    PARENT_TRIAL_ATTR,
    TEST_CURVE_ATTR,
    TICKET_ATTR,
)
from shrink.search.results import format_front, front_rows
from shrink.search.space import distributions
from shrink.search.spec import load_spec
from shrink.search.storage import open_storage
from shrink.search.study import (
    DevSetMismatch,
    _terminate_raises,
    attach,
    create,
)
from shrink.search.trial_runner import original_number

from .conftest import textured_image
from .helpers import BIN, load, storage_url, wait_for, write_spec


@pytest.fixture
def toy(tmp_path: Path, image_folder: Path):
    spec = write_spec(tmp_path / "toy.toml", image_folder)
    return spec, tmp_path


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_worker_runs_the_study_to_its_budget_and_records_each_trial(toy, kind):
    spec, tmp_path = toy
    url = storage_url(kind, tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    trials = load(url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for trial in trials:
        attrs = trial.user_attrs
        assert [e["epoch"] for e in attrs["epochs"]] == [1, 2, 3]
        assert Path(attrs["checkpoint"]).is_file()
        assert attrs["device"].startswith("cpu") and attrs["wall_s"] > 0
        best = attrs["rd_point"]
        assert trial.values == [best["dev_bpp"], best["dev_msssim"]]
        assert best["dev_gain_db"] == max(e["dev_gain_db"] for e in attrs["epochs"])
        assert [p["quality"] for p in attrs["dev_points"]] == [trial.params["codec.quality"]]


def test_export_bundle_reproduces_the_trials_dev_metrics(toy):
    spec, tmp_path = toy
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy", "--n-trials", "2"]) == 0
    assert (
        main(
            ["export", "--storage", url, "--study-name", "toy", "--trial", "1", "--out", str(tmp_path / "b")]
        )
        == 0
    )
    model, config, _ = load_bundle(tmp_path / "b" / "trial-00001")
    trial = load(url).trials[1]
    curve = evaluate(
        model, load_dev_images(config.data), config.data.dev_qualities, build_codec(config.codec)
    )
    point = operating_point(curve)
    assert point.bpp == pytest.approx(trial.user_attrs["rd_point"]["dev_bpp"], rel=1e-9)
    assert point.msssim == pytest.approx(trial.user_attrs["rd_point"]["dev_msssim"], rel=1e-6)
    # a running or missing trial is refused with exit code 2
    assert (
        main(
            ["export", "--storage", url, "--study-name", "toy", "--trial", "7", "--out", str(tmp_path / "c")]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("mode", "key", "direction", "best"),
    [
        ("gain", "dev_gain_db", optuna.study.StudyDirection.MAXIMIZE, max),
        ("rate", "dev_rate_change", optuna.study.StudyDirection.MINIMIZE, min),
    ],
)
def test_single_objective_reports_each_epoch_to_optunas_pruner(
    tmp_path, image_folder, mode, key, direction, best
):
    """Each epoch's score goes to Optuna's pruner, and the trial's value is the best epoch's, the one its
    checkpoint holds (mode "rate" with training.judge = "rate": a dev BD-rate at equal MS-SSIM)."""
    spec = write_spec(tmp_path / f"{mode}.toml", image_folder, n_trials=2, mode=mode, pruner="median")
    spec.write_text(
        spec.read_text().replace("rec_warmup_epochs = 1\n", f'rec_warmup_epochs = 1\njudge = "{mode}"\n')
    )
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    study = load(url)
    assert study.directions == [direction]
    for trial in study.trials:
        scores = [e[key] for e in trial.user_attrs["epochs"]]
        assert trial.intermediate_values == dict(enumerate(scores, start=1))
        assert trial.value == best(scores) == trial.user_attrs["rd_point"][key]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([*args], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def cli(program: str, command: list[str], url: str, *args: str) -> str:
    """stdout of ``program COMMAND --storage URL --study-name toy ARGS`` (the real installed command)."""
    return run_cli(str(BIN / program), *command, "--storage", url, "--study-name", "toy", *args).stdout


def optuna_create_study(url: str) -> None:
    cli("optuna", ["create-study"], url, "--directions", "minimize", "maximize")


def test_optuna_cli_round_trip(toy):
    spec, tmp_path = toy
    url = storage_url("sqlite", tmp_path)
    optuna_create_study(url)
    # a worker given the spec attaches to the study optuna made (and stores the spec with it)
    cli("shrink", ["worker"], url, "--spec", str(spec), "--n-trials", "1")
    space = run_cli(str(BIN / "shrink"), "space", str(spec)).stdout
    asked = json.loads(cli("optuna", ["ask"], url, "--search-space", space, "-f", "json"))
    number = str(asked["number"])
    values = cli("shrink", ["trial"], url, "--trial-number", number).split()
    cli("optuna", ["tell"], url, "--trial-number", number, "--values", *values)
    trials = json.loads(cli("optuna", ["trials"], url, "-f", "json"))
    assert [t["state"] for t in trials] == ["COMPLETE", "COMPLETE", "WAITING"]  # the budget's third ticket
    trials = trials[:2]
    assert all("codec.quality" in t["params"] for t in trials)
    assert trials[1]["params"] == asked["params"]
    assert trials[1]["values"] == pytest.approx([float(v) for v in values])
    best = json.loads(cli("optuna", ["best-trials"], url, "-f", "json"))
    assert {t["number"] for t in best} <= {0, 1} and best


def test_spec_stored_with_optuna_set_user_attr_lets_a_worker_attach_without_spec(toy):
    from shrink.search.spec import load_spec

    spec, tmp_path = toy
    url = storage_url("sqlite", tmp_path)
    optuna_create_study(url)
    assert main(["worker", "--storage", url, "--study-name", "toy", "--n-trials", "1"]) == 2  # no spec yet
    resolved = load_spec(spec).to_json()
    cli("optuna", ["study", "set-user-attr"], url, "--key", "shrink_spec", "--value", resolved)
    assert main(["worker", "--storage", url, "--study-name", "toy", "--n-trials", "1"]) == 0
    assert load(url).trials[0].state == TrialState.COMPLETE


def test_sigterm_checkpoints_requeues_and_the_retry_resumes(tmp_path, image_folder):
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=1, epochs=6, steps=30)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    worker = subprocess.Popen(
        [str(BIN / "shrink"), "worker", "--storage", url, "--study-name", "toy"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    wait_for(
        lambda: len(load(url).trials[0].user_attrs.get("epochs", [])) >= 2 if load(url).trials else False
    )
    worker.send_signal(signal.SIGTERM)
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 128 + signal.SIGTERM, output
    first, retry = load(url).trials
    assert first.state == TrialState.FAIL and "interrupted" in first.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    assert "fail_reason" not in retry.user_attrs  # the retry's own verdict is still to come
    assert retry.user_attrs["previous_fail_reason"] == first.user_attrs["fail_reason"]
    done_before = first.user_attrs["epochs"]

    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    first, retry = load(url).trials
    assert retry.state == TrialState.COMPLETE and retry.params == first.params
    assert retry.user_attrs["run_dir"] == first.user_attrs["run_dir"]  # keyed by the original trial
    epochs = retry.user_attrs["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[: len(done_before)] == done_before  # the epochs already done were not redone


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_shrink_trial_beats_and_on_sigterm_checkpoints_and_requeues_its_trial(tmp_path, image_folder):
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=1, epochs=6, steps=30)
    url = storage_url("sqlite", tmp_path)
    study = create(load_spec(spec), url).study
    asked = study.ask(distributions(load_spec(spec)))  # as `optuna ask --search-space` does
    command = [str(BIN / "shrink"), "trial", "--storage", url, "--study-name", "toy", "--trial-number", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: len(load(url).trials[0].user_attrs.get("epochs", [])) >= 1)
    beats = sqlalchemy.create_engine(url).connect().exec_driver_sql("SELECT count(*) FROM trial_heartbeats")
    assert beats.scalar() == 1  # a worker's stale check would re-queue it, were this process to die
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, output
    assert "re-queued to resume" in output.splitlines()[-1]
    first, retry = load(url).trials
    assert first.number == asked.number and first.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and original_number(retry) == 0
    assert retry.system_attrs[TICKET_ATTR] == 0 and retry.params == first.params


def test_launch_runs_cpu_workers_with_prefixed_logs(toy):
    spec, tmp_path = toy
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = run_cli(
        str(BIN / "shrink"), "launch", "--workers", "2", "--storage", url, "--study-name", "toy", env=env
    )
    assert "[w0]" in result.stdout and "[w1]" in result.stdout
    trials = load(url).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)  # the budget, exactly
    assert len({t.number for t in trials}) == len(trials)
    assert np.all(np.diff([t.number for t in trials]) == 1)


def test_killed_worker_trial_is_failed_by_heartbeat_and_resumed_from_its_checkpoint(tmp_path, image_folder):
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=1, epochs=6, steps=30)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    worker_args = ["worker", "--storage", url, "--study-name", "toy", "--heartbeat", "1", "2"]
    worker = subprocess.Popen([str(BIN / "shrink"), *worker_args], stdout=subprocess.DEVNULL)
    wait_for(
        lambda: len(load(url).trials[0].user_attrs.get("epochs", [])) >= 2 if load(url).trials else False
    )
    worker.kill()  # SIGKILL: no handler runs, the trial stays RUNNING until its heartbeat goes stale
    worker.wait(timeout=60)
    assert load(url).trials[0].state == TrialState.RUNNING
    done_before = load(url).trials[0].user_attrs["epochs"]
    time.sleep(3)  # past the grace period

    assert main(worker_args) == 0
    first, retry = load(url).trials
    assert first.state == TrialState.FAIL
    assert retry.state == TrialState.COMPLETE and retry.system_attrs["failed_trial"] == 0
    epochs = retry.user_attrs["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    assert epochs[: len(done_before)] == done_before


@pytest.mark.slow
def test_demo_runs_the_whole_path_end_to_end_and_resumes_without_training_again(tmp_path, capsys):
    """search -> refine of the front (spread over rate) -> test on the held-out photos -> family."""
    from shrink.search.cli.demo import main as demo_main

    spec = Path(__file__).resolve().parents[1] / "studies" / "demo.toml"
    overrides = ["budget.n_trials=3", "budget.epochs=2", "budget.steps_per_epoch=5", "data.dev_max_images=1"]
    overrides += ["refine.epochs=2", "refine.steps_per_epoch=6", "test.qualities=[30, 70]"]
    argv = ["--spec", str(spec), "--out", str(tmp_path / "demo"), "--no-report", "--refine", "2"]
    for item in overrides:
        argv += ["--set", item]
    assert demo_main(argv) == 0
    out = capsys.readouterr().out
    assert "Pareto front (" in out and "JPEG @bpp" in out and "created study 'demo-refine'" in out
    assert "family BD-rate vs JPEG on samples:test (msssim_db)" in out
    assert "family BD-rate vs mozjpeg on samples:test (msssim_db)" in out
    bundles = list((tmp_path / "demo" / "bundles").iterdir())
    assert len(bundles) == 1 and (bundles[0] / "manifest.json").is_file()
    url = f"sqlite:///{tmp_path / 'demo' / 'study.db'}"
    study, child = load(url, "demo"), load(url, "demo-refine")
    assert len(study.trials) == 3
    front = {t.number for t in study.best_trials}
    refined = child.get_trials(states=(TrialState.COMPLETE,))
    assert len(child.trials) == len(refined) == min(2, len(front))
    assert {t.user_attrs[PARENT_TRIAL_ATTR] for t in refined} <= front
    for trial in refined:
        assert [p["quality"] for p in trial.user_attrs[TEST_CURVE_ATTR]["points"]] == [30, 70]
        assert trial.user_attrs["epochs"][-1]["step"] == 12  # [refine]: 2 epochs x 6 steps
    family = load_family(tmp_path / "demo" / "family")
    assert {m.name for m in family.members} <= {f"trial-{t.number:05d}" for t in refined}
    assert family.test == "samples:test"  # where the stored test curves were measured: the spec's [test]
    # a second run attaches to both finished studies and trains nothing more
    assert demo_main(argv) == 0
    assert "continuing study 'demo-refine'" in capsys.readouterr().out
    assert (len(load(url, "demo").trials), len(load(url, "demo-refine").trials)) == (3, len(refined))


def test_launch_keeps_the_storage_url_out_of_worker_command_lines():
    from shrink.search.cli.launch import build_parser
    from shrink.search.cli.worker import worker_arguments

    url = "postgresql+psycopg://shrink:s3cret@db/shrink"
    args = build_parser().parse_args(
        ["--storage", url, "--study-name", "s", "--workers", "2", "--heartbeat", "5", "9"]
    )
    argv = worker_arguments(args)
    assert not any("s3cret" in part for part in argv)
    assert argv[-3:] == ["--heartbeat", "5", "9"] and argv[:2] == ["--study-name", "s"]


def test_a_restarted_worker_does_not_replay_the_first_workers_samples(tmp_path, image_folder):
    extra = '[space."loss.alpha_rec"]\ntype = "float"\nlow = 0.0\nhigh = 1.0'
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2, epochs=1, extra=extra)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    for _ in range(2):  # two worker processes' worth of attach, one trial each, same seed
        assert main(["worker", "--storage", url, "--study-name", "toy", "--n-trials", "1"]) == 0
    first, second = load(url).trials
    assert first.params["loss.alpha_rec"] != second.params["loss.alpha_rec"]


QUALITY_SPACE = '[space."codec.quality"]\ntype = "int"\nlow = 20\nhigh = 80\nstep = 20\n'


def test_a_trials_stored_point_and_gain_are_what_the_front_demo_and_report_show(tmp_path, image_folder):
    """A variable-rate trial (two dev qualities), where a mean of dBs or a mean of gains would differ: its
    stored point is the operating point of its dev points, and its stored gain is the one shown everywhere."""
    text = write_spec(tmp_path / "vr.toml", image_folder, n_trials=1, epochs=1).read_text()
    assert QUALITY_SPACE in text
    spec = tmp_path / "vr.toml"
    spec.write_text(text.replace(QUALITY_SPACE, "") + "\n[base.data]\ndev_qualities = [30, 70]\n")
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    study = load(url)
    (trial,) = study.trials
    stored = trial.user_attrs["rd_point"]
    points = [RDPoint.from_dict(p) for p in trial.user_attrs["dev_points"]]
    assert [p.quality for p in points] == [30, 70]
    point = operating_point(RDCurve("trial", points))
    assert (stored["dev_bpp"], stored["dev_msssim"], stored["dev_msssim_db"]) == (
        point.bpp,
        point.msssim,
        point.msssim_db,
    )
    assert stored["dev_msssim_db"] == msssim_db(stored["dev_msssim"])
    dev_jpeg = RDCurve.from_dict(study.user_attrs[DEV_JPEG_ATTR])
    assert stored["dev_gain_db"] == operating_gain(RDCurve("trial", points), dev_jpeg)
    assert stored["dev_gain_db"] != pytest.approx(gain_at_rate(point, dev_jpeg), abs=1e-6)  # not the mean's
    (row,) = front_rows(study, dev_jpeg)  # the demo's table and the report's front table
    assert row.gain_db == stored["dev_gain_db"]
    (shown,) = get_rd_points_info(study)  # the report's RD plot, best trial and gallery
    assert shown.gain_db == stored["dev_gain_db"] and shown.msssim_db == stored["dev_msssim_db"]
    gain_text = f"{stored['dev_gain_db']:+.3f}"
    assert gain_text in format_front([row]) and gain_text in _front_table([row])
    assert (
        row.rate_change
        == stored["dev_rate_change"]
        == operating_rate_change(RDCurve("trial", points), dev_jpeg)
    )
    rate_text = f"{100 * stored['dev_rate_change']:+.2f}%"
    assert rate_text in format_front([row]) and rate_text in _front_table([row])


def test_a_worker_refuses_a_dev_set_that_differs_from_the_studys(toy, capsys):
    spec, tmp_path = toy
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    fingerprint = load(url).user_attrs[DEV_FINGERPRINT_ATTR]
    images = tmp_path / "images"
    attach(url, "toy", load_spec(spec))  # unchanged: accepted
    (images / "img2.png").write_bytes(b"not among the 2 dev images used")  # dev_max_images = 2: not read
    attach(url, "toy")
    original = (images / "img0.png").read_bytes()
    Image.fromarray(textured_image(176, 208, 99)).save(images / "img0.png")
    with pytest.raises(DevSetMismatch, match=r"^dev set differs from the one the study was created with: "):
        attach(url, "toy")
    capsys.readouterr()
    assert main(["worker", "--storage", url, "--study-name", "toy", "--n-trials", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{images} (fingerprint {fingerprint[:12]} != " in err and len(err.strip().splitlines()) == 1
    assert not [t for t in load(url).trials if t.state != TrialState.WAITING]  # nothing trained
    (images / "img0.png").write_bytes(original)
    attach(url, "toy")


def test_a_study_without_a_dev_fingerprint_gets_one_at_its_first_attach(toy):
    spec, tmp_path = toy
    url = storage_url("sqlite", tmp_path)
    optuna.create_study(storage=url, study_name="toy", directions=["minimize", "maximize"])
    assert DEV_FINGERPRINT_ATTR not in load(url).user_attrs
    attach(url, "toy", load_spec(spec))
    assert len(load(url).user_attrs[DEV_FINGERPRINT_ATTR]) == 64
    Image.fromarray(textured_image(192, 176, 99)).save(tmp_path / "images" / "img1.png")
    with pytest.raises(DevSetMismatch):
        attach(url, "toy")


@pytest.mark.parametrize(
    ("extra", "problem"),
    [("n_trials", "budget.n_trials"), ("[base.loss]\nfidelity_weight = inf", "finite")],
    ids=["billion-trials", "infinite-weight"],
)
def test_an_absurd_budget_or_weight_creates_no_study(tmp_path, image_folder, capsys, extra, problem):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=10**9 if extra == "n_trials" else 2)
    if extra != "n_trials":
        spec.write_text(spec.read_text() + "\n" + extra + "\n")
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1, err
    assert not (tmp_path / "study.db").exists()


def test_tickets_are_issued_in_one_transaction(tmp_path, monkeypatch):
    """A creation killed while it issues tickets (SIGKILL runs no cleanup) leaves none of them."""
    url = storage_url("sqlite", tmp_path)
    study = optuna.create_study(storage=open_storage(url, heartbeat_interval=None), study_name="toy")
    prepare = optuna.storages.RDBStorage._get_prepared_new_trial
    made = []

    def dies_after_five(self, *args):
        if len(made) == 5:
            raise KeyboardInterrupt  # where the process would have died
        made.append(1)
        return prepare(self, *args)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_prepared_new_trial", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        issue_tickets(study, 50)
    assert len(made) == 5 and load(url).get_trials() == []
    monkeypatch.setattr(optuna.storages.RDBStorage, "_get_prepared_new_trial", prepare)
    assert issue_tickets(study, 50) == 50
    trials = load(url).get_trials()
    assert [t.system_attrs[TICKET_ATTR] for t in trials] == list(range(50))
    assert {t.state for t in trials} == {TrialState.WAITING}


def test_sigterm_while_a_study_is_created_raises_so_it_is_cleaned_up():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_, _terminate_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert exit_.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
