"""One storage contract, five storages: SQLite, Optuna's journal file, PostgreSQL, and Optuna's gRPC proxy in
front of SQLite and of PostgreSQL behave alike for shrink.

PostgreSQL runs against the server of ``make postgres`` (.ci/postgres.sh), a fresh database per test; without
one those cases skip, saying why.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from shrink.compression.rd import RDCurve
from shrink.search.cli import main
from shrink.search.records import DEV_JPEG_ATTR, JOURNAL_HEARTBEAT_ATTR, TICKET_ATTR
from shrink.search.spec import load_spec
from shrink.search.storage import open_storage
from shrink.search.study import attach, create, stored_spec
from shrink.search.trial_runner import original_number
from shrink.search.worker import study_budget_reached

from .helpers import write_spec

KINDS = ["sqlite", "journal", "postgresql", "grpc", "grpc-postgresql"]
RDB_KINDS = ["sqlite", "postgresql"]
# study.ask() on a storage with a heartbeat: Optuna reminds us that only optimize() beats (we beat by hand).
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


@pytest.fixture
def spec_path(tmp_path: Path, image_folder: Path) -> Path:
    return write_spec(tmp_path / "toy.toml", image_folder, n_trials=2, epochs=2, steps=2)


def reopen(url: str, name: str = "toy") -> optuna.Study:
    """The study through a second, independent storage connection."""
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))


def password_of(url: str) -> str | None:
    return None if url.startswith("journal:") else sqlalchemy.engine.make_url(url).password


@pytest.mark.parametrize("kind", KINDS)
def test_created_study_is_listed_with_its_spec_and_dev_jpeg_curve(kind, storage_url_any, spec_path):
    handle = create(load_spec(spec_path), storage_url_any)
    storage = open_storage(storage_url_any, heartbeat_interval=None)
    assert optuna.get_all_study_names(storage) == ["toy"]
    study = optuna.load_study(study_name="toy", storage=storage)
    assert stored_spec(study).to_json() == handle.spec.to_json()
    assert RDCurve.from_dict(study.user_attrs[DEV_JPEG_ATTR]).to_dict() == handle.dev_jpeg.to_dict()
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    assert study.metric_names == ["dev_bpp", "dev_msssim"]


@pytest.mark.parametrize("kind", KINDS)
def test_ask_tell_numbers_are_contiguous_and_epoch_attrs_reach_other_connections(
    kind, storage_url_any, spec_path
):
    study = create(load_spec(spec_path), storage_url_any).study
    for number in range(4):
        trial = study.ask()
        assert trial.number == number
        trial.suggest_int("codec.quality", 20, 80, step=20)
        epochs = []
        for epoch in (1, 2):
            epochs.append({"epoch": epoch, "dev_bpp": 0.5 / epoch, "dev_msssim": 0.9})
            trial.set_user_attr("epochs", epochs)
            seen = reopen(storage_url_any).trials[number]
            assert seen.state == TrialState.RUNNING and seen.user_attrs["epochs"] == epochs
        study.tell(trial, [0.25, 0.9])
    trials = reopen(storage_url_any).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE and t.values == [0.25, 0.9] for t in trials)


@pytest.mark.parametrize("kind", KINDS)
def test_worker_runs_trials_to_complete_and_no_password_leaks(
    kind, storage_url_any, spec_path, tmp_path, capfd
):
    runs = tmp_path / "runs"
    assert main(["study", "create", str(spec_path), "--storage", storage_url_any]) == 0
    worker = ["worker", "--storage", storage_url_any, "--study-name", "toy", "--run-root", str(runs)]
    assert main(worker) == 0
    study = reopen(storage_url_any)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        assert [e["epoch"] for e in trial.user_attrs["epochs"]] == [1, 2]
        point = trial.user_attrs["rd_point"]
        assert trial.values == [point["dev_bpp"], point["dev_msssim"]]
        assert Path(trial.user_attrs["checkpoint"]).is_file()
    password = password_of(storage_url_any)
    if password:
        output = "".join(capfd.readouterr())
        stored = json.dumps([study.user_attrs, [(t.user_attrs, t.system_attrs) for t in trials]])
        written = [p for p in runs.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
        assert password not in output and password not in stored and not written


@pytest.mark.parametrize("kind", KINDS)
def test_creating_a_study_twice_exits_2_and_keeps_the_first(kind, storage_url_any, spec_path, capfd):
    assert main(["study", "create", str(spec_path), "--storage", storage_url_any]) == 0
    reopen(storage_url_any).set_user_attr("marker", 1)
    capfd.readouterr()
    assert main(["study", "create", str(spec_path), "--storage", storage_url_any]) == 2
    err = capfd.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    password = password_of(storage_url_any)
    assert not password or password not in err
    assert reopen(storage_url_any).user_attrs["marker"] == 1
    assert optuna.get_all_study_names(open_storage(storage_url_any, heartbeat_interval=None)) == ["toy"]


@pytest.mark.parametrize("kind", KINDS)
def test_stale_running_trial_is_failed_and_requeued_under_its_original_number(
    kind, storage_url_any, spec_path
):
    create(load_spec(spec_path), storage_url_any)
    handle = attach(storage_url_any, "toy", heartbeat=(1, 2))
    trial = handle.study.ask()  # pops ticket 0
    quality = trial.suggest_int("codec.quality", 20, 80, step=20)
    handle.study._storage.set_trial_intermediate_value(trial._trial_id, 1, 0.5)
    handle.study._storage.record_heartbeat(trial._trial_id)  # one beat, then the "worker" dies
    assert not study_budget_reached(handle)  # within the grace period: still RUNNING
    assert reopen(storage_url_any).trials[0].state == TrialState.RUNNING
    time.sleep(3)
    assert not study_budget_reached(handle)  # the retry waits
    first, ticket, retry = reopen(storage_url_any).trials
    assert first.state == TrialState.FAIL
    assert ticket.state == TrialState.WAITING and ticket.system_attrs[TICKET_ATTR] == 1
    assert retry.state == TrialState.WAITING and retry.params == {"codec.quality": quality}
    assert retry.system_attrs["failed_trial"] == 0 and original_number(retry) == 0
    assert retry.system_attrs[TICKET_ATTR] == 0 and retry.intermediate_values == {1: 0.5}
    assert (
        JOURNAL_HEARTBEAT_ATTR not in retry.system_attrs
    )  # claimed, it would look stale before its first beat
