"""A study finishes, whoever dies last: a worker that finds no WAITING trial waits for what may still come.

A worker killed with ``kill -9`` in the study's last trial, with a second worker started before or right
after the kill: the second waits for the RUNNING trial, fails it when its heartbeat grace runs out, trains
its retry, and the study ends with its budget COMPLETE or PRUNED and no trial RUNNING. A re-queue is two
writes (FAIL, then the WAITING retry): a worker reading between them waits for the retry. Without a
heartbeat, or for a RUNNING trial that never beat, nothing waits forever.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from shrink.search import drain
from shrink.search.records import FAIL_REASON_ATTR, TICKET_ATTR
from shrink.search.spec import load_spec
from shrink.search.storage import Requeue, open_storage, trial_id_of
from shrink.search.study import attach, create
from shrink.search.worker import Worker

from .helpers import BIN, load, storage_url, wait_for, write_spec

# study.ask() on a storage with a heartbeat: Optuna reminds us that only optimize() beats.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

HEARTBEAT = ("1", "5")  # interval, grace (s): the grace outlasts the second worker's first look
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
KINDS = ["sqlite", "postgresql"]


@pytest.fixture
def url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'study.db'}"


def new_study(tmp_path: Path, images: Path, url: str, n_trials=1, epochs=1, steps=1) -> None:
    spec = write_spec(tmp_path / "toy.toml", images, n_trials=n_trials, epochs=epochs, steps=steps)
    create(load_spec(spec), url)


def second_worker(url: str, tmp_path: Path, log: Callable[[str], None]) -> Worker:
    handle = attach(url, "toy", heartbeat=(int(HEARTBEAT[0]), int(HEARTBEAT[1])))
    return Worker(handle, tmp_path / "runs", log=log)


def first_worker_in_the_last_trial(url: str, tmp_path: Path, last: int) -> subprocess.Popen:
    """A ``shrink worker`` process, once trial ``last`` (the study's last ticket) has trained an epoch."""
    command = [str(BIN / "shrink"), "worker", "--storage", url, "--study-name", "toy"]
    command += ["--run-root", str(tmp_path / "runs"), "--heartbeat", *HEARTBEAT]
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: load(url).trials[last].user_attrs.get("epochs") or process.poll() is not None)
    assert process.poll() is None, (tmp_path / "first.log").read_text()
    return process


def assert_finished_exactly(url: str, budget: int, out: str) -> list[optuna.trial.FrozenTrial]:
    trials = load(url).trials
    states = [t.state for t in trials]
    assert sum(state in FINISHED for state in states) == budget, (states, out)
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states, (states, out)
    tickets = [t.system_attrs[TICKET_ATTR] for t in trials if t.state in FINISHED]
    assert sorted(tickets) == list(range(budget)), (tickets, out)  # each ticket trained once
    return trials


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_a_worker_started_before_the_last_trial_is_killed_waits_and_trains_its_retry(
    kind, url, tmp_path, image_folder
):
    new_study(tmp_path, image_folder, url, epochs=4, steps=6)
    logged: list[str] = []
    waiting = threading.Event()

    def log(line: str) -> None:
        logged.append(line)
        if "waiting for" in line:
            waiting.set()

    worker = second_worker(url, tmp_path, log)
    first = first_worker_in_the_last_trial(url, tmp_path, 0)
    first.send_signal(signal.SIGSTOP)  # held mid-trial (so that it cannot finish first on a loaded machine)

    def kill_once_waited_for() -> None:
        if waiting.wait(timeout=60):
            first.kill()  # SIGKILL: no handler runs; its trial stays RUNNING until its heartbeat goes stale

    killer = threading.Thread(target=kill_once_waited_for, daemon=True)
    killer.start()
    try:
        result = worker.run()
    finally:
        waiting.set()
        killer.join()
        first.kill()
        first.wait(timeout=60)
    out = "\n".join(logged)
    first_trial, retry = assert_finished_exactly(url, 1, out)
    assert "waiting for 1 running trial (0) of another worker" in out
    assert first_trial.state == TrialState.FAIL and retry.system_attrs["failed_trial"] == 0
    assert result.exit_code == 0 and result.trials == {1: retry.state.name}, out
    assert [e["epoch"] for e in retry.user_attrs["epochs"]] == [1, 2, 3, 4]  # resumed, each epoch once


@pytest.mark.slow
def test_a_worker_started_right_after_the_kill_waits_for_the_grace_and_trains_the_retry(
    tmp_path, image_folder
):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    new_study(tmp_path, image_folder, url, n_trials=2, epochs=4, steps=6)
    logged: list[str] = []
    worker = second_worker(url, tmp_path, logged.append)  # attached first: it looks within the grace
    first = first_worker_in_the_last_trial(url, tmp_path, 1)
    first.kill()
    first.wait(timeout=60)
    result = worker.run()
    out = "\n".join(logged)
    assert first.returncode == -9, (tmp_path / "first.log").read_text()  # killed, not finished on its own
    trials = assert_finished_exactly(url, 2, out)
    assert "waiting for 1 running trial (1) of another worker" in out
    assert [t.state for t in trials][1] == TrialState.FAIL and trials[2].system_attrs["failed_trial"] == 1
    assert result.exit_code == 0 and list(result.trials) == [2], out


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_worker_reading_between_the_fail_and_the_retry_of_a_requeue_waits_for_the_retry(
    kind, tmp_path, image_folder
):
    """Another process re-queues trial 0 (FAIL, then its WAITING retry a moment later); the worker looks
    in between, sees no ticket and no RUNNING trial, and must not stop: the retry would have nobody."""
    url = storage_url(kind, tmp_path)
    new_study(tmp_path, image_folder, url)
    other = open_storage(url, heartbeat_interval=None)
    study = optuna.load_study(study_name="toy", storage=other)
    trial = study.ask()  # ticket 0, as another worker claims it
    logged: list[str] = []
    worker = second_worker(url, tmp_path, logged.append)
    study.tell(trial, state=TrialState.FAIL)  # the re-queue's first write (a stale trial or a signal)

    def second_write() -> None:
        wait_for(lambda: any("waiting for" in line for line in logged), timeout=20)
        time.sleep(1)
        Requeue()(study, other.get_trial(trial_id_of(trial)))

    requeue = threading.Thread(target=second_write, daemon=True)
    requeue.start()
    result = worker.run()
    requeue.join(timeout=90)
    out = "\n".join(logged)
    first, retry = assert_finished_exactly(url, 1, out)
    assert "waiting for the retry of failed trial 0" in out
    assert result.trials == {1: retry.state.name} and retry.system_attrs["failed_trial"] == 0, out


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_a_failed_trial_whose_retry_was_never_written_is_requeued_on_a_database(
    kind, request, tmp_path, image_folder, monkeypatch
):
    """Its worker died between the FAIL and the retry: once the re-queue's gap is out, the waiting worker
    re-queues it and trains it (on a database); on a journal it says the ticket is left and stops."""
    monkeypatch.setattr(drain, "RETRY_GAP_S", 1.0)
    url = request.getfixturevalue("postgres_url") if kind == "postgresql" else storage_url(kind, tmp_path)
    new_study(tmp_path, image_folder, url)
    study = optuna.load_study(study_name="toy", storage=open_storage(url, heartbeat_interval=None))
    study.tell(study.ask(), state=TrialState.FAIL)  # and then nothing: its worker was killed
    time.sleep(1.2)
    logged: list[str] = []
    result = second_worker(url, tmp_path, logged.append).run()
    out = "\n".join(logged)
    if kind == "journal":
        assert result.trials == {} and "failed trial 0 has no retry" in out, out
        assert [t.state for t in load(url).trials] == [TrialState.FAIL]
        return
    first, retry = assert_finished_exactly(url, 1, out)
    assert "re-queued failed trial 0, whose retry was never written" in out
    assert result.trials == {1: retry.state.name} and retry.system_attrs["retry_history"] == [0], out


@pytest.mark.parametrize("kind", KINDS)
def test_workers_requeuing_one_trial_at_once_add_one_retry(kind, url, tmp_path, image_folder):
    """The repair above, by eight workers at the same moment (or by the writer, late, beside one): one
    retry. (Without the study row's lock in add_retry, PostgreSQL adds several.)"""
    new_study(tmp_path, image_folder, url)
    study = optuna.load_study(study_name="toy", storage=open_storage(url, heartbeat_interval=None))
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    failed = study.get_trials(deepcopy=False)[trial.number]
    studies = [
        optuna.load_study(study_name="toy", storage=open_storage(url, heartbeat_interval=None))
        for _ in range(8)
    ]
    start = threading.Barrier(len(studies))

    def requeue(each: optuna.Study) -> None:
        start.wait()
        Requeue()(each, failed)

    threads = [threading.Thread(target=requeue, args=(each,)) for each in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    states = [t.state for t in load(url).trials]
    assert states == [TrialState.FAIL, TrialState.WAITING], states


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_worker_does_not_wait_for_what_cannot_come(kind, tmp_path, image_folder):
    """A trial failed in training (no retry comes) is not waited for; a RUNNING trial that never beat (asked
    by `optuna ask`) is waited for two heartbeat intervals at most; without a heartbeat, not at all."""
    url = storage_url(kind, tmp_path)
    new_study(tmp_path, image_folder, url, n_trials=2)
    study = optuna.load_study(study_name="toy", storage=open_storage(url, heartbeat_interval=None))
    failed, asked = study.ask(), study.ask()
    failed.set_user_attr(FAIL_REASON_ATTR, "NonFiniteLossError: non-finite loss at step 4")
    study.tell(failed, state=TrialState.FAIL)

    logged: list[str] = []
    result = second_worker(url, tmp_path, logged.append).run()
    out = "\n".join(logged)
    assert result.trials == {} and "retry of failed trial" not in out, out
    assert "waiting for 1 running trial (1) of another worker (no heartbeat yet)" in out, out
    assert "not waiting for running trial 1: it has never beaten" in out, out

    logged.clear()
    handle = attach(url, "toy")
    handle.study = optuna.load_study(study_name="toy", storage=open_storage(url, heartbeat_interval=None))
    result = Worker(handle, tmp_path / "runs", log=logged.append).run()
    assert result.trials == {} and logged == [
        "worker: not waiting for running trial 1: this worker has no heartbeat: it cannot tell a dead "
        "worker's trial from a live one"
    ]
    assert load(url).trials[asked.number].state == TrialState.RUNNING


def worker_pid(launcher: int, index: str) -> int:
    """The pid of ``shrink launch``'s worker ``--worker-index index``."""
    for entry in Path("/proc").iterdir():
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if (
            parent == launcher
            and b"--worker-index" in argv
            and argv[argv.index(b"--worker-index") + 1] == index.encode()
        ):
            return int(entry.name)
    raise AssertionError(f"no worker {index} under launch {launcher}")


@pytest.mark.slow
def test_shrink_launch_finishes_the_study_when_the_worker_of_its_last_trial_is_killed(tmp_path, image_folder):
    """`shrink launch --workers 2` on a 1-trial study: one worker trains it, the other waits; the first is
    killed with kill -9, the second re-queues and trains the trial; launch exits 128 + 9 (a lost worker)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    new_study(tmp_path, image_folder, url, epochs=4, steps=6)
    command = [str(BIN / "shrink"), "launch", "--workers", "2", "--storage", url, "--study-name", "toy"]
    command += ["--run-root", str(tmp_path / "runs"), "--heartbeat", *HEARTBEAT]
    log = tmp_path / "launch.log"
    waiting = re.compile(r"^\[w(\d)\] worker: no WAITING trial left; waiting for 1 running trial \(0\)", re.M)
    with log.open("w") as out:
        launch = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: waiting.search(log.read_text()) and load(url).trials[0].user_attrs.get("epochs"))
        holder = "1" if waiting.search(log.read_text()).group(1) == "0" else "0"
        os.kill(worker_pid(launch.pid, holder), signal.SIGKILL)
        code = launch.wait(timeout=120)
    finally:
        if launch.poll() is None:
            for index in ("0", "1"):
                with contextlib.suppress(AssertionError, ProcessLookupError):
                    os.kill(worker_pid(launch.pid, index), signal.SIGKILL)
            launch.kill()
            launch.wait(timeout=30)
    output = log.read_text()
    assert code == 128 + signal.SIGKILL, output
    first, retry = assert_finished_exactly(url, 1, output)
    assert first.state == TrialState.FAIL and retry.system_attrs["failed_trial"] == 0
    assert f"launch: 2 workers exited with codes {[-9, 0] if holder == '0' else [0, -9]}" in output


def test_launch_reports_a_worker_killed_by_a_signal_as_a_shell_does(monkeypatch, capsys):
    from shrink.search import launch

    suicide = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    monkeypatch.setattr(launch, "worker_command", lambda args, index: [sys.executable, "-c", suicide])
    assert launch.launch([], launch.spread_slots(1, 0)) == 128 + signal.SIGKILL
    assert "launch: 1 workers exited with codes [-9]" in capsys.readouterr().out


def test_optunas_warnings_about_a_trial_taken_over_are_dropped_and_others_kept():
    """The worker says "taken over by its retry" in one line; Optuna's traceback and "failed with value None"
    about that trial are dropped, while a trial that failed for its own reasons is still reported."""
    import logging
    import sys

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.study._optimize import _log_failed_trial

    from shrink.search.trial_runner import TrialTakenOver
    from shrink.search.worker import OPTIMIZE_LOGGER, quiet_taken_over

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(OPTIMIZE_LOGGER)
    logger.addHandler(handler)

    def fail(number: int, error: Exception) -> None:
        try:
            raise error
        except Exception as caught:
            _log_failed_trial(number, {}, repr(caught), exc_info=sys.exc_info())

    try:
        with quiet_taken_over():
            fail(3, TrialTakenOver("trial 3 is FAIL: failed as stale while it ran"))
            fail(4, UpdateFinishedTrialError("trial 4 is finished"))
            fail(5, RuntimeError("out of memory"))
        fail(6, TrialTakenOver("outside the worker: kept"))
    finally:
        logger.removeHandler(handler)
    said = [record.getMessage() for record in records]
    assert [m.split(" failed")[0] for m in said] == ["Trial 5", "Trial 5", "Trial 6", "Trial 6"], said
