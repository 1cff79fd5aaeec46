"""Faults a long search meets, each caused for real: signals to `shrink launch`, a worker killed with -9 on
PostgreSQL, PostgreSQL restarted under a worker, a trial whose loss diverges, that runs out of memory or
meets an unreadable image, and a disk that fills up while checkpointing.

What must hold after each: no trial is lost or run twice (counted by original trial number), a retried trial
resumes from its checkpoint without redoing epochs, a failed trial says why in ``fail_reason``, and the
worker goes on with the next trial. (SIGTERM and kill -9 of a single SQLite worker: tests/test_study.py.)
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import torch
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from shrink.compression import files
from shrink.compression.checkpoint import load_checkpoint
from shrink.compression.trainer import Trainer
from shrink.search.cli import main
from shrink.search.storage import STORAGE_RETRY_DELAYS_S, is_transient, retry_storage
from shrink.search.study import attach
from shrink.search.trial_runner import original_number
from shrink.search.worker import Worker

from .helpers import BIN, Trials, load, postgres_bin, storage_url, wait_for, write_spec

COMPLETE, FAIL, RUNNING, WAITING = (TrialState[name] for name in ("COMPLETE", "FAIL", "RUNNING", "WAITING"))
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
INTERRUPTED = re.compile(r"^interrupted: stopped at step (\d+); resume from .+; re-queued to resume$")


def assert_each_planned_trial_completed_once(trials: list[FrozenTrial], n_trials: int) -> None:
    """Every planned trial accounted for exactly once: one COMPLETE per original trial, nothing left over."""
    assert not [t.number for t in trials if t.state in (RUNNING, WAITING)]
    originals = sorted(original_number(t) for t in trials if t.state == COMPLETE)
    assert len(originals) == n_trials and len(set(originals)) == n_trials, originals
    for trial in trials:  # a failed trial was completed by its retry (or was a planned trial that failed)
        if trial.state == FAIL:
            assert original_number(trial) in originals


def epoch_lines(log: str, trial: int) -> list[int]:
    """Epochs a worker trained for ``trial``, from its log (``[trial N] epoch   E step ...``)."""
    return [int(e) for e in re.findall(rf"\[trial {trial}\] epoch +(\d+) step", log)]


def child_pids(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


def stop(process: subprocess.Popen, workers=()) -> None:
    """Test clean-up: end a process we started (and its workers, which launch puts in their own sessions)."""
    for pid in [process.pid, *workers]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)


# ---- 1. SIGTERM / SIGINT of `shrink launch --workers 2` ------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signalled_launch_checkpoints_every_worker_and_a_relaunch_finishes_the_study(
    signum, tmp_path, image_folder
):
    n_trials, epochs, steps = 2, 5, 40
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=n_trials, epochs=epochs, steps=steps)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    trials = Trials(url)
    launch_command = [str(BIN / "shrink"), "launch", "--workers", "2", "--storage", url]
    launch_command += ["--study-name", "toy"]
    log = tmp_path / "launch.log"
    with log.open("w") as out:  # same session as pytest: the signal reaches launch alone, which forwards it
        launch = subprocess.Popen(launch_command, stdout=out, stderr=subprocess.STDOUT, env=ENV)
    workers: list[int] = []
    try:
        wait_for(lambda: len(trials()) == 2 and all(trials.epochs(n) for n in (0, 1)), timeout=90)
        workers = child_pids(launch.pid)
        assert [t.state for t in trials()] == [RUNNING, RUNNING]  # both workers are mid-trial
        launch.send_signal(signum)
        code = launch.wait(timeout=90)
    finally:
        if launch.poll() is None:
            stop(launch, workers)
    output = log.read_text()
    assert code == 128 + signum, output[-3000:]
    requeued = re.findall(r"^\[w(\d)\] trial (\d+) checkpointed and re-queued$", output, re.MULTILINE)
    assert sorted(requeued) == [("0", "0"), ("1", "1")] or sorted(requeued) == [("0", "1"), ("1", "0")]

    after = trials()
    assert not [t.number for t in after if t.state == RUNNING]
    assert [t.state for t in after] == [FAIL, FAIL, WAITING, WAITING]
    retry_of = {t.system_attrs["failed_trial"]: t for t in after if t.state == WAITING}
    assert sorted(retry_of) == [0, 1]
    done_before, stopped_at = {}, {}
    for first in after[:2]:
        match = INTERRUPTED.match(first.user_attrs["fail_reason"])
        assert match, first.user_attrs["fail_reason"]
        stopped_at[first.number] = int(match.group(1))
        done_before[first.number] = first.user_attrs["epochs"]
        # the worker checkpointed where it stopped, after the epochs it had recorded and before the end
        checkpoint = load_checkpoint(Path(first.user_attrs["run_dir"]) / "last.ckpt")
        assert checkpoint["step"] == stopped_at[first.number]
        assert len(done_before[first.number]) * steps <= checkpoint["step"] < epochs * steps
        assert retry_of[first.number].params == first.params

    relaunch = subprocess.run(launch_command, capture_output=True, text=True, timeout=180, env=ENV)
    assert relaunch.returncode == 0, relaunch.stdout[-3000:] + relaunch.stderr[-3000:]
    final = trials()
    assert_each_planned_trial_completed_once(final, n_trials)
    assert len(final) == 4  # the two originals and one retry each: nothing ran twice
    for original, retry in retry_of.items():
        retried = final[retry.number]
        assert retried.state == COMPLETE
        run_dir = final[original].user_attrs["run_dir"]
        assert retried.user_attrs["run_dir"] == run_dir
        assert f"[trial {retry.number}] resumed from {run_dir}/last.ckpt at step {stopped_at[original]}" in (
            relaunch.stdout
        )
        recorded = retried.user_attrs["epochs"]
        assert [e["epoch"] for e in recorded] == list(range(1, epochs + 1))
        assert recorded[: len(done_before[original])] == done_before[original]  # resumed, not redone


# ---- 2. kill -9 of a worker on PostgreSQL --------------------------------------------------------------


def test_worker_killed_on_postgresql_is_failed_by_heartbeat_retried_by_another_and_resumed(
    postgres_url, tmp_path, image_folder
):
    n_trials, epochs, steps, grace = 2, 6, 30, 2
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=n_trials, epochs=epochs, steps=steps)
    assert main(["study", "create", str(spec), "--storage", postgres_url]) == 0
    trials = Trials(postgres_url)
    env = dict(ENV, SHRINK_STORAGE=postgres_url)
    command = [str(BIN / "shrink"), "worker", "--study-name", "toy", "--run-root", str(tmp_path / "runs")]
    command += ["--heartbeat", "1", str(grace)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: len(trials.epochs(0)) >= 2, timeout=90)
    finally:
        first.kill()  # SIGKILL: no handler runs; the trial stays RUNNING until its heartbeat goes stale
        first.wait(timeout=30)
    killed_at = time.monotonic()
    victim = trials()[0]
    assert victim.state == RUNNING
    run_dir = Path(victim.user_attrs["run_dir"])
    done_before = victim.user_attrs["epochs"]
    checkpoint_step = load_checkpoint(run_dir / "last.ckpt")["step"]
    assert checkpoint_step >= len(done_before) * steps

    log = tmp_path / "second.log"
    with log.open("w") as out:
        second = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: trials()[0].state == FAIL, timeout=90)
        failed_after = time.monotonic() - killed_at
        code = second.wait(timeout=180)
    finally:
        if second.poll() is None:
            stop(second)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert failed_after < 30  # the --heartbeat grace (2 s) applied, not the default 90 s

    final = trials()
    assert_each_planned_trial_completed_once(final, n_trials)
    assert final[0].state == FAIL
    (retry,) = [t for t in final if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == COMPLETE and retry.params == victim.params
    assert retry.user_attrs["run_dir"] == str(run_dir)
    assert f"[trial {retry.number}] resumed from {run_dir}/last.ckpt at step {checkpoint_step}" in output
    # the epochs already done were not redone: the second worker trained only the rest ...
    assert epoch_lines(output, retry.number) == list(range(checkpoint_step // steps + 1, epochs + 1))
    # ... and the retry's per-epoch record starts with the dead worker's, unchanged
    recorded = retry.user_attrs["epochs"]
    assert [e["epoch"] for e in recorded] == list(range(1, epochs + 1))
    assert recorded[: len(done_before)] == done_before


# ---- 3. the database goes away under a worker -------------------------------------------------------------


class PrivateServer:
    """A throwaway PostgreSQL cluster of this test's own, made as .ci/postgres.sh makes the shared one."""

    def __init__(self, bin_dir: Path, folder: Path):
        self.bin, self.folder, self.data = bin_dir, folder, folder / "data"
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.url = f"postgresql+psycopg://shrink:{self.password}@127.0.0.1:{self.port}/shrink"

    def as_owner(self, *command: str, **kwargs) -> None:
        if os.getuid() == 0:  # initdb refuses root: the cluster belongs to postgres
            command = ("runuser", "-u", "postgres", "--", *command)
        done = subprocess.run(command, cwd="/", timeout=120, **kwargs)
        if done.returncode != 0:
            log = self.folder / "server.log"
            detail = (done.stderr or done.stdout or "") or (log.read_text()[-2000:] if log.is_file() else "")
            raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {detail}")

    def create(self) -> None:
        sql = f"CREATE ROLE shrink LOGIN PASSWORD '{self.password}';\nCREATE DATABASE shrink OWNER shrink;\n"
        if os.getuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.as_owner(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--locale=C", "-E", "UTF8", capture_output=True, text=True,
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nunix_socket_directories = '{self.folder}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        self.start()
        self.as_owner(
            str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.folder), "-p",
            str(self.port), "-U", "postgres", capture_output=True, text=True,
            input=sql,
        )  # fmt: skip

    def start(self) -> None:
        # the server must not inherit our pipes: its output goes to its log
        self.as_owner(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
            "-t", "60", "-o", f"-p {self.port}", "start",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self.as_owner(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def query(self, sql: str):
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="shrink", password=self.password, dbname="shrink",
            connect_timeout=5, autocommit=True,
        ) as connection:  # fmt: skip
            return connection.execute(sql).fetchone()[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    def unavailable(reason: str) -> None:
        message = f"cannot start a private PostgreSQL server: {reason}; `make postgres` installs Debian's"
        if os.environ.get("SHRINK_REQUIRE_POSTGRES"):
            pytest.fail(message)
        pytest.skip(message)

    bin_dir = postgres_bin()
    if bin_dir is None:
        unavailable("no initdb/pg_ctl/psql under /usr/lib/postgresql/*/bin")
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no postgres user to own the cluster")
    # under the system temp folder (pytest's tmp_path is private to root; the postgres user must reach it)
    folder = Path(tempfile.mkdtemp(prefix="shrink-pg-restart-"))
    server = PrivateServer(bin_dir, folder)
    try:
        server.create()
        yield server
    finally:
        try:
            server.stop("immediate")
        except (RuntimeError, subprocess.SubprocessError):
            pass
        shutil.rmtree(folder, ignore_errors=True)


HEARTBEAT_OF_TRIAL_0 = (
    "SELECT h.heartbeat FROM trial_heartbeats h JOIN trials t ON t.trial_id = h.trial_id WHERE t.number = 0"
)
HEARTBEAT_SKIPPED = "storage: heartbeat of trial id"
RETRY_LINE = re.compile(r"^storage: (\w+) failed \((.*)\); retry (\d+) in ([\d.]+)s$", re.MULTILINE)


def test_worker_outlives_a_postgresql_restart_mid_trial(private_postgres, tmp_path, image_folder):
    server = private_postgres
    n_trials, epochs, steps = 2, 6, 60
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=n_trials, epochs=epochs, steps=steps)
    assert main(["study", "create", str(spec), "--storage", server.url]) == 0
    trials = Trials(server.url)
    env = dict(ENV, SHRINK_STORAGE=server.url)
    command = [str(BIN / "shrink"), "worker", "--study-name", "toy", "--run-root", str(tmp_path / "runs")]
    command += ["--heartbeat", "1", "30"]
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: len(trials.epochs(0)) >= 1, timeout=90)
        server.stop("fast")
        # down until the trial's per-epoch record has been retried twice and a heartbeat has been missed
        wait_for(lambda: "retry 2 in" in log.read_text() and HEARTBEAT_SKIPPED in log.read_text(), 90)
        server.start()
        back_at = server.query("SELECT localtimestamp")
        code = worker.wait(timeout=180)
    finally:
        if worker.poll() is None:
            stop(worker)
    output = log.read_text()
    assert code == 0, output[-3000:]
    final = trials()
    assert [t.state for t in final] == [COMPLETE] * n_trials  # nothing failed or re-ran: the trial went on
    assert [e["epoch"] for e in final[0].user_attrs["epochs"]] == list(range(1, epochs + 1))
    assert_each_planned_trial_completed_once(final, n_trials)
    # retried with backoff, each retry logged (the password never); heartbeats missed, not fatal to the thread
    retries = RETRY_LINE.findall(output)
    calls = {call for call, *_ in retries}
    # the per-epoch ownership check and record
    assert calls and calls <= {"get_trial", "set_trial_user_attr", "get_all_trials"}, output
    for call in calls:
        attempts = [(int(attempt), float(delay)) for name, _, attempt, delay in retries if name == call]
        schedule = [STORAGE_RETRY_DELAYS_S[min(k, len(STORAGE_RETRY_DELAYS_S)) - 1] for k in range(1, 99)]
        assert attempts == list(enumerate(schedule[: len(attempts)], start=1))
    lost = ("Connection refused", "terminating connection")  # the restart's shutdown, then the refusals
    assert all(any(why in reason for why in lost) for _, reason, *_ in retries), output
    assert HEARTBEAT_SKIPPED in output and server.password not in output
    assert "Traceback" not in output and "giving up" not in output
    # and the heartbeat thread of the running trial beat again once the server was back
    assert server.query(HEARTBEAT_OF_TRIAL_0) > back_at


class Flaky:
    """RDBStorage methods that, once armed, fail once each with the error a lost connection gives."""

    def __init__(self, monkeypatch, names: tuple[str, ...]):
        self.armed, self.failed = False, []
        for name in names:
            monkeypatch.setattr(RDBStorage, name, self._flaky(name, getattr(RDBStorage, name)))

    def _flaky(self, name, method):
        def flaky(storage, *args, **kwargs):
            if self.armed and name not in self.failed:
                self.failed.append(name)
                lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed connection"))
                raise optuna.exceptions.StorageInternalError("An exception is raised during commit") from lost
            return method(storage, *args, **kwargs)

        return flaky


def test_worker_retries_each_kind_of_storage_call_that_loses_its_connection(
    tmp_path, image_folder, monkeypatch
):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2, epochs=2, steps=2)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    # the budget check, the claim, the per-epoch record and the heartbeat each lose their connection once
    # before their commit (after it: tests/test_budget.py; workers create no trials, the budget's are queued)
    calls = ("_get_trials", "set_trial_user_attr", "record_heartbeat")
    flaky = Flaky(monkeypatch, (*calls, "set_trial_state_values"))
    logged: list[str] = []
    worker = Worker(attach(url, "toy"), tmp_path / "runs", log=logged.append)
    flaky.armed = True
    result = worker.run()
    assert len(flaky.failed) == 4
    assert result.exit_code == 0 and list(result.trials.values()) == ["COMPLETE", "COMPLETE"]
    assert [t.state for t in load(url).trials] == [COMPLETE, COMPLETE]
    out = "\n".join(logged)
    retried = {m[0] for m in RETRY_LINE.findall(out)}
    assert retried == {"get_all_trials", "set_trial_user_attr", "set_trial_state_values"}
    assert HEARTBEAT_SKIPPED in out


def test_storage_retry_backs_off_gives_up_and_never_retries_other_errors():
    logged: list[str] = []
    calls: list[int] = []
    secret = "s3cret-pw"
    url = f"postgresql+psycopg://shrink:{secret}@db:5432/shrink"

    def refused():
        calls.append(1)
        orig = Exception(f"connection to {url} failed: Connection refused (password {secret})")
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, orig)

    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry_storage(refused, "get_trial", logged.append, url, give_up_after_s=1.0)
    assert len(calls) == 2  # 0.5 s, then the next pause (1 s) would pass the limit: gave up
    assert logged[0].startswith("storage: get_trial failed (Exception: connection to postgresql+psycopg:")
    assert logged[0].endswith("; retry 1 in 0.5s") and "giving up" in logged[1]
    assert not any(secret in line for line in logged) and "***" in logged[0]

    calls.clear()
    with pytest.raises(ValueError):  # not a connection problem: raised at once
        retry_storage(lambda: calls.append(1) or int("x"), "get_trial", logged.append, url)
    assert calls == [1]
    answers = iter([sqlalchemy.exc.InterfaceError("SELECT 1", {}, Exception("closed")), 7])

    def once_then_works():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_storage(once_then_works, "get_trial", logged.append, url) == 7


def pending_rollback(during: BaseException | None) -> optuna.exceptions.StorageInternalError:
    """What Optuna's ``_get_trials`` raises when its fallback query (run while handling ``during``) meets a
    session whose connection broke."""
    refused = sqlalchemy.exc.PendingRollbackError("Can't reconnect until invalid transaction is rolled back")
    refused.__context__ = during
    wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit")
    wrapped.__cause__ = refused
    return wrapped


def test_a_session_left_pending_by_a_terminated_connection_is_retried_any_other_is_not():
    # the server's shutdown ended the connection mid-query (CI, stop 29: trial 0 failed of this)
    shutdown = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("terminating connection"))
    assert is_transient(pending_rollback(shutdown))
    # a pending rollback after, say, a failed flush of bad data is not a connection problem
    assert not is_transient(pending_rollback(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dup"))))
    assert not is_transient(pending_rollback(None))
    answers = iter([pending_rollback(shutdown), 7])

    def once_then_works():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    logged: list[str] = []
    assert retry_storage(once_then_works, "get_all_trials", logged.append, "sqlite:///x.db") == 7
    assert len(logged) == 1 and "retry 1 in 0.5s" in logged[0]


# ---- 4. a trial that fails: non-finite loss, out of memory, an unreadable image ---------------------------


@pytest.mark.parametrize("fault", ["non-finite loss", "out of memory"])
def test_trial_failing_mid_epoch_is_failed_with_its_reason_and_the_worker_goes_on(
    fault, tmp_path, image_folder, monkeypatch, capsys
):
    steps = 3
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=3, epochs=2, steps=steps)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    victims: list[weakref.ref] = []
    victim_alive_when_next_built: list[bool] = []
    train_step, init = Trainer.train_step, Trainer.__init__

    def faulty_train_step(self: Trainer) -> None:
        if self.out_dir.name == "trial-00001" and self.step == steps + 1:  # trial 1, mid-epoch 2
            victims.append(weakref.ref(self))
            if fault == "out of memory":
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (simulated)")
            with torch.no_grad():  # a diverged update: both nets' first weights become NaN
                for net in (self.model.comcnn, self.model.reccnn):
                    next(net.parameters()).fill_(float("nan"))
        return train_step(self)

    def next_trainer(self: Trainer, *args, **kwargs) -> None:
        if victims and not victim_alive_when_next_built:
            victim_alive_when_next_built.append(victims[0]() is not None)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train_step", faulty_train_step)
    monkeypatch.setattr(Trainer, "__init__", next_trainer)
    # pytest keeps the log records it captures, and Optuna's "trial failed" record holds the traceback (so the
    # trainer): no such record here, where nothing outside pytest would keep it
    monkeypatch.setattr(logging.getLogger("optuna.study._optimize"), "disabled", True)
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    trials = load(url).trials
    assert [t.state for t in trials] == [COMPLETE, FAIL, COMPLETE]
    reason = trials[1].user_attrs["fail_reason"]
    if fault == "out of memory":
        assert reason == "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB (simulated)"
    else:
        expected = (
            rf"NonFiniteLossError: non-finite (RecCNN|ComCNN) loss \(nan\) at step {steps + 1}, epoch 1"
        )
        assert re.fullmatch(expected, reason), reason
    assert [e["epoch"] for e in trials[1].user_attrs["epochs"]] == [1]  # it failed in epoch 2
    # the failed trial's trainer (model, optimisers, batches) was freed before the next one was built
    assert victim_alive_when_next_built == [False]
    assert f"trial 1 FAIL: {reason}" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_training_image_fails_the_trial_naming_the_file_and_the_worker_goes_on(
    damage, tmp_path, image_folder
):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=3, epochs=1, steps=2)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    victim = image_folder / "img2.png"  # a training image (the dev set is img0 and img1)
    whole = victim.read_bytes()
    victim.write_bytes(os.urandom(len(whole)) if damage == "garbage" else whole[: len(whole) // 2])
    ended: list[TrialState] = []

    def on_trial_end(trial: FrozenTrial) -> None:  # the file is whole again after the first trial
        ended.append(trial.state)
        victim.write_bytes(whole)

    logged: list[str] = []
    worker = Worker(attach(url, "toy"), tmp_path / "runs", log=logged.append, on_trial_end=on_trial_end)
    result = worker.run()
    assert result.exit_code == 0 and ended == [FAIL, COMPLETE, COMPLETE]
    trials = load(url).trials
    assert [t.state for t in trials] == [FAIL, COMPLETE, COMPLETE]
    reason = trials[0].user_attrs["fail_reason"]
    # images are read when the trial's trainer is built: it fails at its start, naming the file
    assert reason.startswith(f"ImageLoadError: cannot read image {victim}: "), reason
    assert "epochs" not in trials[0].user_attrs
    assert f"trial 0 FAIL: {reason}" in logged


# ---- 5. a full disk while checkpointing -------------------------------------------------------------------


class FullDisk:
    """A file on a disk that fills up after ``room`` bytes: the next write fails with ENOSPC."""

    def __init__(self, handle, room: int = 4096):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        if len(data) > self.room:
            self.handle.write(data[: self.room])
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()


def test_full_disk_at_a_checkpoint_fails_the_trial_clearly_and_keeps_the_previous_checkpoint(
    tmp_path, image_folder, monkeypatch, capsys
):
    steps = 2
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2, epochs=3, steps=steps)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    run_dir = tmp_path / "runs" / "toy" / "trial-00000"
    written: list[str] = []
    real_os = files.os

    class DiskFillsAtSecondLastCheckpoint:  # compression/files.py's view of `os`
        def __getattr__(self, name):
            return getattr(real_os, name)

        def fdopen(self, fd, *args, **kwargs):
            handle = real_os.fdopen(fd, *args, **kwargs)
            target = Path(real_os.readlink(f"/proc/self/fd/{fd}"))
            if target.parent == run_dir.resolve() and target.name.startswith(".last.ckpt."):
                written.append(target.name)
                if len(written) == 2:  # epoch 2's last.ckpt
                    return FullDisk(handle)
            return handle

    monkeypatch.setattr(files, "os", DiskFillsAtSecondLastCheckpoint())
    argv = ["worker", "--storage", url, "--study-name", "toy", "--run-root", str(tmp_path / "runs")]
    assert main(argv) == 0
    assert len(written) >= 2
    trials = load(url).trials
    assert [t.state for t in trials] == [FAIL, COMPLETE]  # the worker went on with the next trial
    reason = trials[0].user_attrs["fail_reason"]
    assert str(run_dir / "last.ckpt") in reason and "No space left on device" in reason, reason
    assert f"trial 0 FAIL: {reason}" in capsys.readouterr().out
    assert [e["epoch"] for e in trials[0].user_attrs["epochs"]] == [1]
    # the previous checkpoint is intact, and no temp file is left beside it
    assert load_checkpoint(run_dir / "last.ckpt")["step"] == steps
    assert load_checkpoint(run_dir / "best.ckpt")["step"] == steps
    assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "best.ckpt", "last.ckpt"]  # + its lock


# ---- 6. a falsely stale original and its retry ------------------------------------------------------------


def test_falsely_stale_original_and_its_retry_never_train_in_the_run_folder_together(tmp_path, image_folder):
    """A worker paused (SIGSTOP, its heartbeat with it) past the grace period is failed as stale and its trial
    re-queued while the process lives. A second worker claims the retry and waits for the run folder's lock;
    the original, continued, stops at its next epoch and the retry resumes from that checkpoint: each epoch is
    trained and checkpointed by exactly one of them, and both workers end cleanly."""
    epochs = 6
    spec = write_spec(tmp_path / "long.toml", image_folder, n_trials=1, epochs=epochs, steps=30)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    trials = Trials(url)
    command = [str(BIN / "shrink"), "worker", "--storage", url, "--study-name", "toy"]
    command += ["--run-root", str(tmp_path / "runs"), "--heartbeat", "1", "3"]
    logs = [tmp_path / "original.log", tmp_path / "retry.log"]
    processes: list[subprocess.Popen] = []
    try:
        with logs[0].open("w") as out:
            processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV))
        wait_for(lambda: len(trials.epochs(0)) >= 1, timeout=120)
        processes[0].send_signal(signal.SIGSTOP)
        time.sleep(5)  # > the grace period: the heartbeat is stale, the process alive
        with logs[1].open("w") as out:
            processes.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=ENV))
        wait_for(lambda: "still trains there" in logs[1].read_text(), timeout=120)
        processes[0].send_signal(signal.SIGCONT)
        codes = [process.wait(timeout=300) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                stop(process)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts
    final = trials()
    assert [t.state for t in final] == [FAIL, COMPLETE] and original_number(final[1]) == 0
    assert "trial 0 was taken over by its retry" in texts[0]
    by_original, by_retry = epoch_lines(texts[0], 0), epoch_lines(texts[1], 1)
    assert by_original and by_retry and max(by_original) < min(by_retry), texts
    assert sorted(by_original + by_retry) == list(range(1, epochs + 1)), texts
    assert [e["epoch"] for e in final[1].user_attrs["epochs"]] == list(range(1, epochs + 1))


def test_a_failing_dashboard_hook_is_logged_and_the_trial_stays_complete(tmp_path, image_folder):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, epochs=1, steps=1)
    url = storage_url("sqlite", tmp_path)
    assert main(["study", "create", str(spec), "--storage", url]) == 0

    def upload_fails(trial, trainer, best) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "artifacts/crops.png")

    logged: list[str] = []
    result = Worker(attach(url, "toy"), tmp_path / "runs", log=logged.append, on_complete=upload_fails).run()
    assert list(result.trials.values()) == ["COMPLETE"]
    (trial,) = load(url).trials
    assert trial.state == COMPLETE and "fail_reason" not in trial.user_attrs
    assert any(
        "trial artifacts not stored (OSError: [Errno 28] No space left on device" in line for line in logged
    )
