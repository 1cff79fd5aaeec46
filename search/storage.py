"""Storage URLs -> Optuna storages, configured for long trials shared by many workers.

- ``sqlite:///study.db``: WAL journal and a busy timeout, so several local workers can write.
- ``postgresql+psycopg://user:pass@host/db``: for workers on several machines.
- ``journal:PATH`` or a path ending in ``.log``/``.journal``: Optuna's journal file storage.
RDB storages get a heartbeat: a trial whose worker died is failed after the grace period and re-queued by
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` (our trial runner resumes it from the original
trial's checkpoint). The journal storage has no heartbeat in Optuna; its interrupted trials are re-queued
only by signal handling. Passwords never leave this module: messages use :func:`redact`.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

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


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


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
    path = journal_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith(("sqlite:", "postgresql", "mysql")):
        raise StorageError(
            f"unsupported storage URL {redact(url)!r}: use sqlite:///FILE, postgresql+psycopg://..., "
            "or journal:FILE"
        )
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
    try:
        storage = RDBStorage(url, engine_kwargs=_engine_kwargs(url), **heartbeat)
        if url.startswith("sqlite:"):
            _enable_wal(storage)
        return storage
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as error:
        raise StorageError(f"cannot open storage {redact(url)}: {_first_line(error)}") from None


def _engine_kwargs(url: str) -> dict:
    if url.startswith("sqlite:"):
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def _first_line(error: BaseException) -> str:
    text = redact(str(error)).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _enable_wal(storage: RDBStorage) -> None:
    """WAL lets readers (dashboard, optuna CLI) work beside a writer; the mode persists in the file."""
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")
