"""Bad storage URLs: one clear stderr line, exit code 2, nothing written, and never the password."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy

from shrink.dashboards.study_info import storage_roots
from shrink.search.cli import main
from shrink.search.storage import PG_CONNECT_TIMEOUT_S, StorageError, grpc_address, open_storage, redact
from shrink.search.trial_runner import default_run_root

from .helpers import write_spec

REPO = Path(__file__).resolve().parents[1]
SHRINK = Path(sys.executable).parent / "shrink"
SECRET = "s3cretpw"
GRPC_FORM = "a gRPC storage proxy is grpc://HOST:PORT"
BAD_URLS = {
    "no-scheme-separator": (f"postgres//u:{SECRET}@127.0.0.1/db", "malformed storage URL"),
    "bare-path": ("study.db", "malformed storage URL"),
    "sqlite-one-slash": ("sqlite:/relative-bad.db", "malformed storage URL"),
    "unknown-driver": (f"mysql+nothing://u:{SECRET}@127.0.0.1/db", "unknown database driver 'mysql+nothing'"),
    "old-postgres-scheme": (f"postgres://u:{SECRET}@127.0.0.1/db", "unsupported storage URL scheme"),
    "sqlite-in-memory": ("sqlite://", "names no database file"),
    "sqlite-missing-dir": ("sqlite:///missing/study.db", "directory 'missing' does not exist"),
    "journal-no-file": ("journal:", "names no journal file"),
    "raw-at-in-password": ("postgresql+psycopg://u:s3cret@pw@127.0.0.1:1/db", "as %40"),
    "unreachable": (f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db", "Connection refused"),
    "unreachable-space-in-password": (f"postgresql+psycopg://u:{SECRET} and more@127.0.0.1:1/db", "refused"),
    "malformed-space-in-password": (f"postgres//u:{SECRET} and more@127.0.0.1/db", "malformed storage URL"),
    "unreachable-query-password": (
        f"postgresql+psycopg://u@127.0.0.1:1/db?password={SECRET}",
        "Connection refused",
    ),
    "grpc-no-port": ("grpc://127.0.0.1", GRPC_FORM),
    "grpc-port-out-of-range": ("grpc://127.0.0.1:99999", GRPC_FORM),
    "grpc-port-zero": ("grpc://127.0.0.1:0", GRPC_FORM),
    "grpc-password": (f"grpc://u:{SECRET}@127.0.0.1:13000", GRPC_FORM),
    "grpc-database-path": ("grpc://127.0.0.1:13000/db", GRPC_FORM),
}


@pytest.fixture
def workdir(tmp_path: Path, image_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current directory (relative URLs land here), holding the toy spec and images only."""
    write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, epochs=1, steps=1)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def tree(folder: Path) -> set[Path]:
    return {path.relative_to(folder) for path in folder.rglob("*")}


def argv(command: str, url: str) -> list[str]:
    if command == "create":
        return ["study", "create", "toy.toml", "--storage", url]
    return ["worker", "--storage", url, "--study-name", "toy"]


def assert_one_clear_line(out: str, err: str, problem: str) -> None:
    assert len(err.strip().splitlines()) == 1 and problem in err, err
    assert "Traceback" not in out + err
    assert "s3cret" not in out + err and "pw@" not in out + err and "more@" not in out + err, out + err


@pytest.mark.parametrize("command", ["create", "worker"])
@pytest.mark.parametrize(("url", "problem"), BAD_URLS.values(), ids=BAD_URLS.keys())
def test_bad_url_is_one_line_exit_2_and_writes_nothing(workdir, capfd, command, url, problem):
    before = tree(workdir)
    assert main(argv(command, url)) == 2
    out, err = capfd.readouterr()
    assert_one_clear_line(out, err, problem)
    assert tree(workdir) == before


@pytest.mark.parametrize("command", ["create", "worker"])
def test_wrong_password_is_one_line_exit_2_and_creates_no_tables(workdir, capfd, postgres_url, command):
    wrong = sqlalchemy.engine.make_url(postgres_url).set(password=f"{SECRET}-wrong")
    before = tree(workdir)
    assert main(argv(command, wrong.render_as_string(hide_password=False))) == 2
    out, err = capfd.readouterr()
    assert_one_clear_line(out, err, "password authentication failed")
    assert tree(workdir) == before
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_the_installed_command_reports_an_unreachable_server_in_one_line(tmp_path):
    url = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:1/db"
    for args in (
        ["study", "create", str(REPO / "studies" / "demo.toml"), "--storage", url],
        ["worker", "--storage", url, "--study-name", "demo"],
    ):
        done = subprocess.run([str(SHRINK), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        assert_one_clear_line(done.stdout, done.stderr, "Connection refused")
    assert list(tmp_path.iterdir()) == []


def test_a_grpc_proxy_that_is_not_there_is_one_line_exit_2(workdir, capfd):
    before = tree(workdir)
    assert main(argv("worker", "grpc://127.0.0.1:1")) == 2
    out, err = capfd.readouterr()
    assert_one_clear_line(out, err, "no gRPC storage proxy answers at 127.0.0.1:1 within 5 s")
    assert tree(workdir) == before


def test_a_grpc_url_keeps_trial_folders_in_the_working_directory():
    assert default_run_root("grpc://proxy-host:13000") == Path("shrink-runs")  # as PostgreSQL's
    assert storage_roots("grpc://proxy-host:13000") == [Path.cwd()]
    assert grpc_address("grpc://[::1]:13000") == ("[::1]", 13000)
    assert grpc_address("sqlite:///study.db") is None


def test_a_server_that_never_answers_fails_within_the_connect_timeout():
    with socket.socket() as silent:  # accepts TCP connections (the backlog) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://u:{SECRET}@127.0.0.1:{silent.getsockname()[1]}/db"
        start = time.monotonic()
        with pytest.raises(StorageError, match="cannot open storage") as raised:
            open_storage(url)
    assert time.monotonic() - start < PG_CONNECT_TIMEOUT_S + 5
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"postgresql+psycopg://u:{SECRET}@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql+psycopg://u:s3cret%40pw@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql+psycopg://u:s3cret@pw@h/db", "postgresql+psycopg://u:***@h/db"),
        (f"postgresql+psycopg://:{SECRET}@h/db", "postgresql+psycopg://:***@h/db"),
        (
            f"postgresql+psycopg://h/db?user=u&password={SECRET}",
            "postgresql+psycopg://h/db?user=u&password=***",
        ),
        (f"postgresql+psycopg://h/db?PASSWORD={SECRET}&x=1", "postgresql+psycopg://h/db?PASSWORD=***&x=1"),
        (f"postgres//u:{SECRET}@h/db", "postgres//u:***@h/db"),
        (f"postgresql+psycopg://u:{SECRET} with spaces@h/db", "postgresql+psycopg://u:***@h/db"),
        (f"postgres//u:{SECRET} with spaces@h/db", "postgres//u:***@h/db"),
        (f"in 'mysql://u:{SECRET}@h/db': refused", "in 'mysql://u:***@h/db': refused"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:////tmp/a@b/study.db", "sqlite:////tmp/a@b/study.db"),
        ("journal:runs/study.log", "journal:runs/study.log"),
        ("grpc://proxy-host:13000", "grpc://proxy-host:13000"),
        (f"grpc://u:{SECRET}@proxy-host:13000", "grpc://u:***@proxy-host:13000"),
    ],
)
def test_redact_hides_every_form_of_password(url, shown):
    assert redact(url) == shown
    assert issubclass(StorageError, ValueError)  # the CLI's user errors: exit code 2
