"""Storage URLs -> Optuna storages, configured for long trials shared by many workers.

- ``sqlite:///study.db``: WAL journal and a busy timeout, so several local workers can write.
- ``postgresql+psycopg://user:pass@host/db``: for workers on several machines.
- ``journal:PATH`` or a path ending in ``.log``/``.journal``: Optuna's journal file storage.
RDB storages get a heartbeat: a trial whose worker died is failed after the grace period and re-queued by
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (our trial runner resumes it from the original
trial's checkpoint). The journal storage has no heartbeat in Optuna; its interrupted trials are re-queued
only by signal handling.

A URL that is malformed, names an unknown driver or no SQLite file, or whose server cannot be reached (a
PostgreSQL connection attempt gives up after ``PG_CONNECT_TIMEOUT_S``) or refuses the password raises one
:class:`StorageError` (a ``ValueError``: exit code 2 in the CLI) before anything is written. Passwords never
leave this module: messages use :func:`redact`, and driver messages are scrubbed of the password too.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from urllib.parse import quote, quote_plus

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

# Heartbeats, retries and metric names are "experimental" in Optuna 5; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 90
MAX_RETRY = 3
SQLITE_BUSY_TIMEOUT_S = 60
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


class StorageError(ValueError):
    """A storage URL that is malformed or cannot be reached; the message never holds a password."""


URL_FORMS = "sqlite:///FILE, postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB or journal:FILE"
BACKENDS = ("sqlite", "postgresql", "mysql")
PG_CONNECT_TIMEOUT_S = 5
_PASSWORD_PARAM = re.compile(r"(\b(?:password|passwd|pwd)=)[^&;\s]*", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL (or a message holding URLs) with any password replaced by ``***``.

    In a word holding an '@', whatever lies between the user name and the last '@' is the password, even in a
    malformed URL or one whose password holds a stray '@'; ``password=`` parameters are masked too.
    """
    return _PASSWORD_PARAM.sub(r"\1***", re.sub(r"\S*@\S*", _redact_word, url))


def _redact_word(match: re.Match) -> str:
    userinfo, at, rest = match.group().rpartition("@")
    scheme_end = userinfo.find("://") + 3 if "://" in userinfo else 0
    colon = userinfo.find(":", scheme_end)
    return match.group() if colon < 0 else f"{userinfo[: colon + 1]}***{at}{rest}"


def journal_path(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:").removeprefix("//"))
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url)
    return None


def open_storage(
    url: str,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> optuna.storages.BaseStorage:
    """The storage at ``url``, created if need be; a bad URL raises :class:`StorageError`, writing nothing."""
    path = journal_path(url)
    if path is not None:
        return _open_journal(url, path)
    parsed = parse_rdb_url(url)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry, inherit_intermediate_values=True)
    heartbeat = (
        {}
        if heartbeat_interval is None
        else {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": retry,
        }
    )
    # Optuna fills {SCHEMA_VERSION} in the URL with str.format: double the braces so a password keeps its own.
    template = url.replace("{", "{{").replace("}", "}}")
    try:
        storage = RDBStorage(template, engine_kwargs=_engine_kwargs(parsed), **heartbeat)
        if parsed.get_backend_name() == "sqlite":
            _enable_wal(storage)
        return storage
    except ImportError as error:
        raise StorageError(
            f"cannot open storage {redact(url)}: the database driver is not installed "
            f"({_first_line(error.__cause__ or error, parsed)}); for PostgreSQL use postgresql+psycopg://"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, RuntimeError) as error:
        raise StorageError(f"cannot open storage {redact(url)}: {_first_line(error, parsed)}") from None


def parse_rdb_url(url: str) -> sqlalchemy.engine.URL:
    """The SQLAlchemy URL of an RDB storage, checked without connecting: scheme, driver, SQLite file."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise StorageError(f"malformed storage URL {redact(url)!r}: use {URL_FORMS}") from None
    if "@" in (parsed.host or ""):
        raise StorageError(f"malformed storage URL {redact(url)!r}: write an '@' in the password as %40")
    if parsed.get_backend_name() not in BACKENDS:
        raise StorageError(
            f"unsupported storage URL scheme {parsed.drivername!r} in {redact(url)!r}: use {URL_FORMS}"
        )
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(
            f"unknown database driver {parsed.drivername!r} in storage URL {redact(url)!r}: use {URL_FORMS}"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed, url)
    return parsed


def _check_sqlite_file(parsed: sqlalchemy.engine.URL, url: str) -> None:
    database = parsed.database or ""
    if database in ("", ":memory:"):
        raise StorageError(
            f"storage URL {redact(url)!r} names no database file (an in-memory study would vanish): "
            "use sqlite:///relative/study.db or sqlite:////absolute/study.db"
        )
    path = Path(database)
    if path.is_dir():
        raise StorageError(f"storage URL {redact(url)!r} names a directory, not a database file")
    if not path.parent.is_dir():
        raise StorageError(f"storage URL {redact(url)!r}: directory {str(path.parent)!r} does not exist")


def _open_journal(url: str, path: Path) -> JournalStorage:
    if not str(path) or path.is_dir():
        raise StorageError(f"storage URL {url!r} names no journal file: use journal:PATH/study.log")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as error:
        raise StorageError(f"cannot open journal storage {str(path)!r}: {error.strerror or error}") from None


def _engine_kwargs(parsed: sqlalchemy.engine.URL) -> dict:
    if parsed.get_backend_name() == "sqlite":
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query:
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": PG_CONNECT_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _first_line(error: BaseException, parsed: sqlalchemy.engine.URL) -> str:
    """``Type: first line of the message``, with the URL's password (plain or percent-encoded) scrubbed."""
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.orig is not None:
        error = error.orig  # the driver's own message, without SQLAlchemy's "(module.Class)" prefix
    text = redact(str(error))
    password = parsed.password
    if password and len(str(password)) >= 4:  # shorter ones would garble the message, and are no secret
        for secret in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
            text = text.replace(secret, "***")
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _enable_wal(storage: RDBStorage) -> None:
    """WAL lets readers (dashboard, optuna CLI) work beside a writer; the mode persists in the file."""
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
