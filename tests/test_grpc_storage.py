"""``shrink storage serve`` (Optuna's gRPC storage proxy) and ``--storage grpc://HOST:PORT``: the serve
command's one-line refusals, no password printed, and a worker that outlives a proxy restart mid-trial with
its study's exact budget. The storage contract over the proxy is in test_storage_contract.py."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import optuna
import pytest
import sqlalchemy
from optuna.storages import _CachedStorage
from optuna.trial import TrialState

from shrink.search.cli import main
from shrink.search.records import CREATE_TOKEN_ATTR, JOURNAL_HEARTBEAT_ATTR
from shrink.search.storage import ShrinkStorage, is_transient, open_storage, redact

from .conftest import grpc_proxy
from .helpers import write_spec

SHRINK = Path(sys.executable).parent / "shrink"
SECRET = "s3cretpw"
LINE_TIMEOUT_S = 240  # a slow, shared CI machine: imports alone take seconds


class Lines:
    """A process's stdout (and stderr), line by line, with a timeout on each wait."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.seen = process, []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str) -> re.Match:
        while True:
            line = self._queue.get(timeout=LINE_TIMEOUT_S)
            if line is None:
                raise AssertionError(f"no line matching {pattern!r}:\n{''.join(self.seen)}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def rest(self) -> str:
        self.process.wait(timeout=LINE_TIMEOUT_S)
        while (line := self._queue.get(timeout=LINE_TIMEOUT_S)) is not None:
            self.seen.append(line)
        return "".join(self.seen)


def start(args: list[str], cwd: Path) -> Lines:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [str(SHRINK), *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    return Lines(process)


def serve(url: str, port: int, cwd: Path) -> tuple[Lines, int]:
    """``shrink storage serve`` in front of ``url`` (port 0: a free one); returns it and its port."""
    proxy = start(["storage", "serve", "--storage", url, "--port", str(port)], cwd)
    return proxy, int(proxy.wait_for(r"listening on 127\.0\.0\.1:(\d+) ").group(1))


def one_refusal(code: int, out: str, err: str, problem: str) -> None:
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and problem in err, err
    assert "Traceback" not in out + err and SECRET not in out + err and out == ""


@pytest.fixture
def listening() -> socket.socket:
    """A port another process listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken


def test_serve_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path, capfd, listening, monkeypatch):
    monkeypatch.chdir(tmp_path)
    port = listening.getsockname()[1]
    sqlite = f"sqlite:///{tmp_path / 'study.db'}"
    cases = [
        (["--storage", "sqlite:///missing/study.db", "--port", "0"], "directory 'missing' does not exist"),
        (["--storage", "journal:study.log", "--port", "0"], "a gRPC proxy serves a database, not journal:"),
        (["--storage", "grpc://127.0.0.1:1", "--port", "0"], "a gRPC proxy serves a database"),
        (["--storage", f"postgres//u:{SECRET}@127.0.0.1/db", "--port", "0"], "malformed storage URL"),
        (
            ["--storage", f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db", "--port", "0"],
            "Connection refused",
        ),
        (["--storage", sqlite, "--port", str(port)], f"port {port} on 127.0.0.1 is already in use"),
        (["--storage", sqlite, "--port", "70000"], "must be an integer in 0..65535"),
        (
            ["--storage", sqlite, "--host", "no-such-host.invalid", "--port", "0"],
            "--host no-such-host.invalid",
        ),
    ]
    for args, problem in cases:
        code = main(["storage", "serve", *args])
        one_refusal(code, *capfd.readouterr(), problem)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_worker_outlives_a_proxy_restart_mid_trial_and_the_budget_is_exact(tmp_path, image_folder):
    """The proxy is killed (SIGKILL) while trial 0 trains, and once the worker's calls fail another starts on
    the same port (in this process: no start-up time to race the worker's minute of retries): the worker
    retries, finishes both trials, and the study holds exactly its budget, none RUNNING."""
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2, epochs=3, steps=2)
    database = f"sqlite:///{tmp_path / 'study.db'}"
    proxy, port = serve(database, 0, tmp_path)
    started = [proxy]
    try:
        url = f"grpc://127.0.0.1:{port}"
        assert main(["study", "create", str(spec), "--storage", url]) == 0
        worker = start(["worker", "--storage", url, "--study-name", "toy", "--run-root", "runs"], tmp_path)
        started.append(worker)
        worker.wait_for(r"\[trial 0\] epoch +1 ")
        proxy.process.kill()
        proxy.rest()
        worker.wait_for(r"storage: \S+ failed \(gRPC UNAVAILABLE")
        with grpc_proxy(database, port):
            out = worker.rest()
    finally:
        for lines in started:
            lines.process.kill()
    assert worker.process.returncode == 0, out
    assert "worker done: 2 trials (2 COMPLETE)" in out and "giving up" not in out, out
    study = optuna.load_study(study_name="toy", storage=open_storage(database, heartbeat_interval=None))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert [len(t.user_attrs["epochs"]) for t in study.trials] == [3, 3]


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    proxy, port = serve(f"sqlite:///{tmp_path / 'study.db'}", 0, tmp_path)
    try:
        storage = open_storage(f"grpc://127.0.0.1:{port}", heartbeat_interval=None)
        assert optuna.get_all_study_names(storage) == []
        storage.dispose()
        proxy.process.send_signal(signal.SIGTERM)
        out = proxy.rest()
    finally:
        proxy.process.kill()
    assert proxy.process.returncode == 0 and out.splitlines()[1:] == ["gRPC storage proxy stopping (SIGTERM)"]


def test_serve_prints_no_password(tmp_path, postgres_url):
    password = sqlalchemy.engine.make_url(postgres_url).password
    proxy, port = serve(postgres_url, 0, tmp_path)
    try:
        storage = open_storage(f"grpc://127.0.0.1:{port}", heartbeat_interval=None)
        optuna.create_study(storage=storage, study_name="s").optimize(lambda t: t.suggest_float("x", 0, 1), 2)
        storage.dispose()
        proxy.process.send_signal(signal.SIGINT)
        out = proxy.rest()
    finally:
        proxy.process.kill()
    assert proxy.process.returncode == 0, out
    assert redact(postgres_url) in out and password not in out, out
    assert optuna.load_study(study_name="s", storage=postgres_url).trials[1].state == TrialState.COMPLETE


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),  # the proxy is down, restarting, or its connection stalled
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, True),
        (grpc.StatusCode.UNKNOWN, False),  # the proxy's storage raised: its own retries are spent
        (grpc.StatusCode.INVALID_ARGUMENT, False),
    ],
)
def test_grpc_errors_that_a_worker_retries(code, transient):
    error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="x")
    assert is_transient(error) is transient


class LostAnswers(_CachedStorage):
    """Optuna's cached RDB storage whose next create and state change commit, then lose their answer."""

    def __init__(self, cached: _CachedStorage):
        super().__init__(cached._backend)
        self.lose = {"create", "state"}

    def _lost(self, what: str, result):
        if what in self.lose:
            self.lose.discard(what)
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, ConnectionResetError("server restarting"))
        return result

    def create_new_trial(self, study_id, template_trial=None):
        return self._lost("create", super().create_new_trial(study_id, template_trial))

    def set_trial_state_values(self, trial_id, state, values=None):
        return self._lost("state", super().set_trial_state_values(trial_id, state, values))


def test_the_proxy_settles_lost_answers_and_keeps_its_clients_token(tmp_path):
    """Behind the proxy a create whose answer was lost is found by the proxy's own token (the client's, in
    the template, stays: the client looks for it after a lost answer of its own), and a lost claim gets one
    beat of the clients' heartbeat, so that their stale check re-queues it."""
    base = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=None)
    study_id = base.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    proxy, log = ShrinkStorage(LostAnswers(base._inner), base.url), []
    proxy.serve_proxy(log.append)
    template = optuna.trial.create_trial(state=TrialState.WAITING, system_attrs={CREATE_TOKEN_ATTR: "client"})
    trial_id = proxy.create_new_trial(study_id, template)
    assert proxy.set_trial_state_values(trial_id, TrialState.RUNNING) is False  # unsure: not claimed here
    (trial,) = base.get_all_trials(study_id)
    assert trial._trial_id == trial_id and trial.system_attrs[CREATE_TOKEN_ATTR] == "client"
    assert trial.state == TrialState.RUNNING and JOURNAL_HEARTBEAT_ATTR in trial.system_attrs
    assert sum("not repeated" in line for line in log) == 2, log
