"""Storage URLs -> Optuna storages, configured for long trials shared by many workers.

- ``sqlite:///study.db``: WAL journal and a busy timeout, so several local workers can write.
- ``postgresql+psycopg://user:pass@host/db``: for workers on several machines.
- ``journal:PATH`` or a path ending in ``.log``/``.journal``: Optuna's journal file storage.
Every storage gets a heartbeat: a trial whose worker died is failed after the grace period and re-queued by
:class:`Requeue` (our trial runner resumes it from the original trial's checkpoint). Optuna gives the
journal storage no heartbeat; :class:`HeartbeatJournalStorage` keeps one in a trial system attribute.

A URL that is malformed, names an unknown driver or no SQLite file, or whose server cannot be reached (a
PostgreSQL connection attempt gives up after ``PG_CONNECT_TIMEOUT_S``) or refuses the password raises one
:class:`StorageError` (a ``ValueError``: exit code 2 in the CLI) before anything is written. Passwords never
leave this module: URLs are shown by :func:`redact` (SQLAlchemy's rendering with the password hidden), and
driver messages are scrubbed of the password text too.
"""

from __future__ import annotations

import copy
import functools
import re
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import optuna
import sqlalchemy
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .records import (
    CREATE_TOKEN_ATTR,
    FAIL_REASON_ATTR,
    JOURNAL_HEARTBEAT_ATTR,
    PREVIOUS_FAIL_ATTR,
    RETRY_HISTORY_ATTR,
    VERDICT_ATTRS,  # what a retry drops (a retry that completes must not say why its predecessor failed)
)

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
    """The storage URL with any password replaced by ``***``.

    A URL SQLAlchemy parses is rendered by it with the password hidden (a password may hold spaces, which no
    word-by-word match sees), and the password's text is scrubbed from what remains. In one it cannot parse,
    whatever lies between the user name and the last '@' is the password (a stray '@', spaces and all).
    ``password=`` parameters are masked too.
    """
    try:
        parsed = sqlalchemy.engine.make_url(url.strip())
    except (sqlalchemy.exc.ArgumentError, ValueError, TypeError):
        parsed = None
    if parsed is not None and parsed.password is not None:
        url = scrub(parsed.render_as_string(hide_password=True), parsed)
    return _PASSWORD_PARAM.sub(r"\1***", re.sub(r"^.*@.*$", _redact_word, url, flags=re.DOTALL))


def redact_message(text: str) -> str:
    """A message holding URLs with their passwords replaced by ``***``: in a word holding an '@', whatever
    lies between the user name and the last '@'; ``password=`` parameters too."""
    return _PASSWORD_PARAM.sub(r"\1***", re.sub(r"\S*@\S*", _redact_word, text))


def scrub(text: str, parsed: sqlalchemy.engine.URL) -> str:
    """``text`` without the URL's password, plain or percent-encoded."""
    password = parsed.password
    if password and len(str(password)) >= 4:  # shorter ones would garble the message, and are no secret
        for secret in {str(password), quote(str(password), safe=""), quote_plus(str(password))}:
            text = text.replace(secret, "***")
    return text


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


class Requeue(RetryHeartbeatStaleTrialCallback):
    """Re-queue a failed trial as a WAITING retry: after a stale heartbeat and after a signal alike.

    Intermediate values are inherited (the retry resumes the same learning curve); the predecessor's
    ``fail_reason`` moves to ``previous_fail_reason`` instead of being inherited as the retry's own.
    """

    def __init__(self, max_retry: int | None = MAX_RETRY):
        super().__init__(max_retry=max_retry, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        if any(trial.number in t.system_attrs.get(RETRY_HISTORY_ATTR, ()) for t in trials):
            return  # already re-queued (a FAIL whose answer was lost, settled as ours by a re-read)
        trial = copy.deepcopy(trial)
        attrs = {k: v for k, v in trial.user_attrs.items() if k not in VERDICT_ATTRS}
        if trial.user_attrs.get(FAIL_REASON_ATTR):
            attrs[PREVIOUS_FAIL_ATTR] = trial.user_attrs[FAIL_REASON_ATTR]
        trial.user_attrs = attrs
        super().__call__(study, trial)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with a heartbeat: the time of a trial's last beat is a system attribute.

    The clocks of the machines sharing the journal file must agree to within the grace period.
    """

    def __init__(self, backend, heartbeat_interval: int, grace_period: int | None, callback: Requeue):
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self._callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, JOURNAL_HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:  # finished elsewhere (failed as stale): its retry beats now
            pass

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval
        now = time.time()
        return [
            trial._trial_id
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if now - trial.system_attrs.get(JOURNAL_HEARTBEAT_ATTR, now) > grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self._callback


def open_storage(
    url: str,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> optuna.storages.BaseStorage:
    """The storage at ``url``, created if need be; a bad URL raises :class:`StorageError`, writing nothing."""
    retry = Requeue(max_retry)
    path = journal_path(url)
    if path is not None:
        return _open_journal(url, path, heartbeat_interval, grace_period, retry)
    parsed = parse_rdb_url(url)
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
            _serialize_sqlite_transactions(storage)
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


def _open_journal(
    url: str, path: Path, heartbeat_interval: int | None, grace_period: int | None, retry: Requeue
) -> JournalStorage:
    if not str(path) or path.is_dir():
        raise StorageError(f"storage URL {url!r} names no journal file: use journal:PATH/study.log")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = JournalFileBackend(str(path))
        if heartbeat_interval is None:
            return JournalStorage(backend)
        return HeartbeatJournalStorage(backend, heartbeat_interval, grace_period, retry)
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
    text = scrub(redact_message(str(error)), parsed)
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _enable_wal(storage: RDBStorage) -> None:
    """WAL lets readers (dashboard, optuna CLI) work beside a writer; the mode persists in the file."""
    with storage.engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode=WAL")


def _serialize_sqlite_transactions(storage: RDBStorage) -> None:
    """Every SQLite transaction takes the write lock when it begins (``BEGIN IMMEDIATE``).

    pysqlite runs a SELECT outside any transaction and opens one only at the first write, so Optuna's
    "read the trial, still WAITING? mark it RUNNING" is not atomic on SQLite (``FOR UPDATE`` is ignored
    there): two workers popping the same re-queued trial both won and trained it twice. SQLAlchemy's recipe
    for pysqlite: let SQLAlchemy emit BEGIN itself, as IMMEDIATE; pooled connections are replaced.
    """
    engine = storage.engine

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, connection_record) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


# A storage call that fails for want of a connection is retried after these pauses (then every 8 s) until it
# has been failing for STORAGE_RETRY_S; then its error is raised as before.
STORAGE_RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)
STORAGE_RETRY_S = 60.0
# The database calls Optuna's Study, Trial, optimize() and heartbeat thread make through the storage.
STORAGE_CALLS = (
    "get_all_trials", "get_trial", "create_new_trial", "set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_best_trial", "get_study_user_attrs",
    "get_study_system_attrs", "set_study_user_attr", "set_study_system_attr", "get_study_directions",
    "_get_stale_trial_ids",
)  # fmt: skip


def is_transient(error: BaseException) -> bool:
    """A refused or lost database connection (a server restarting, a network blip, SQLite busy).

    Optuna's RDB storage wraps SQLAlchemy errors in ``StorageInternalError``; the cause says which kind.
    """
    if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return True
    return isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated


def retry_storage(
    call: Callable[[], Any],
    what: str,
    log: Callable[[str], None],
    url: str,
    give_up_after_s: float = STORAGE_RETRY_S,
    settled: Callable[[], tuple[bool, Any]] | None = None,
) -> Any:
    """``call()``, retried with backoff while it fails with a transient storage error (each retry logged,
    password redacted); other errors, and one still failing after ``give_up_after_s``, are raised.

    ``settled()``, for a call that is not idempotent, runs before each repeat: it reads what the database
    holds and returns ``(True, result)`` when the failed attempt took effect after all (its commit went
    through, only the answer was lost), so the call is not made twice.
    """
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            if attempt and settled is not None:
                done, result = settled()
                if done:
                    log(f"storage: {what} had taken effect before its answer was lost; not repeated")
                    return result
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            delay = STORAGE_RETRY_DELAYS_S[min(attempt, len(STORAGE_RETRY_DELAYS_S) - 1)]
            attempt += 1
            reason = _error_line(error, url)
            if time.monotonic() - started + delay > give_up_after_s:
                log(f"storage: {what} still failing after {attempt} attempts, giving up ({reason})")
                raise
            log(f"storage: {what} failed ({reason}); retry {attempt} in {delay:g}s")
            time.sleep(delay)


UNSURE_CLAIMS = "_shrink_unsure_claims"
READ_TRIAL = "_shrink_read_trial"


def retry_storage_calls(storage: optuna.storages.BaseStorage, url: str, log: Callable[[str], None]) -> None:
    """Make a worker's RDB storage outlive a database restart (journal storages are left alone).

    Each database call in ``STORAGE_CALLS`` is retried by :func:`retry_storage`. The two that are not
    idempotent first read what the database holds: ``create_new_trial`` tags its trial with a fresh token
    and looks for it; ``set_trial_state_values`` reads the trial's state. A claim (WAITING -> RUNNING) whose
    answer was lost is ambiguous (this worker's commit, or another's): the trial is left alone, given one
    heartbeat so that the stale check re-queues it if it was ours, and listed in ``UNSURE_CLAIMS`` for the
    worker to wait on. A heartbeat is not retried: one that fails is logged and skipped (the heartbeat
    thread would die of the error), the next comes one interval later. Connections the restart broke are
    replaced by the engine's ``pool_pre_ping``.
    """
    if not isinstance(_backend(storage), RDBStorage) or getattr(storage, "_shrink_retrying", False):
        return
    originals = {name: getattr(storage, name) for name in STORAGE_CALLS}
    for name, method in originals.items():
        setattr(storage, name, functools.partial(_retried, method, name, log, url))
    beat = storage.record_heartbeat

    def record_heartbeat(trial_id: int) -> None:
        try:
            beat(trial_id)
        except Exception as error:
            if not is_transient(error):
                raise
            log(f"storage: heartbeat of trial id {trial_id} skipped ({_error_line(error, url)})")

    storage.record_heartbeat = record_heartbeat
    setattr(storage, UNSURE_CLAIMS, set())
    read = functools.partial(_retried, _backend(storage).get_trial, "get_trial", log, url)
    setattr(storage, READ_TRIAL, read)
    storage.create_new_trial = functools.partial(_create_once, originals, log, url)
    storage.set_trial_state_values = functools.partial(_set_state_once, storage, originals, log, url)
    storage._shrink_retrying = True


def _retried(method: Callable[..., Any], name: str, log: Callable[[str], None], url: str, *args, **kwargs):
    return retry_storage(lambda: method(*args, **kwargs), name, log, url)


def _create_once(
    originals: dict, log: Callable[[str], None], url: str, study_id: int, template_trial=None
) -> int:
    token = uuid.uuid4().hex
    template = _with_token(template_trial, token)

    def settled() -> tuple[bool, int | None]:
        for trial in originals["get_all_trials"](study_id, deepcopy=False):
            if trial.system_attrs.get(CREATE_TOKEN_ATTR) == token:
                return True, trial._trial_id
        return False, None

    create = originals["create_new_trial"]
    return retry_storage(lambda: create(study_id, template), "create_new_trial", log, url, settled=settled)


def _with_token(template: FrozenTrial | None, token: str) -> FrozenTrial:
    """The trial to create, tagged with ``token`` (a copy: a retry's template is its predecessor's)."""
    template = (
        optuna.trial.create_trial(state=TrialState.RUNNING) if template is None else copy.copy(template)
    )
    template.system_attrs = {**template.system_attrs, CREATE_TOKEN_ATTR: token}
    return template


def _set_state_once(
    storage,
    originals: dict,
    log: Callable[[str], None],
    url: str,
    trial_id: int,
    state: TrialState,
    values=None,
) -> bool:
    def settled() -> tuple[bool, bool | None]:
        trial = _backend(storage).get_trial(trial_id)  # uncached: the state as the database holds it
        if state == TrialState.RUNNING:
            if trial.state == TrialState.WAITING:
                return False, None
            if trial.state == TrialState.RUNNING:
                getattr(storage, UNSURE_CLAIMS).add(trial_id)
                if _backend(storage).heartbeat_interval is not None:
                    storage.record_heartbeat(trial_id)
                log(f"storage: claim of trial {trial.number} unsure; left to the heartbeat check")
                return True, False
        elif trial.state == state:
            return True, True
        if trial.state.is_finished():
            raise UpdateFinishedTrialError(f"trial {trial.number} is already {trial.state.name}")
        return False, None

    update = originals["set_trial_state_values"]
    return retry_storage(
        lambda: update(trial_id, state=state, values=values),
        "set_trial_state_values",
        log,
        url,
        settled=settled,
    )


def _backend(storage) -> RDBStorage:
    return storage._backend if isinstance(storage, _CachedStorage) else storage


def read_trial(storage: optuna.storages.BaseStorage, trial_id: int) -> FrozenTrial:
    """The trial as the database holds it now (Optuna's cache may keep a RUNNING trial's old state);
    retried like the other calls on a worker's storage."""
    return getattr(storage, READ_TRIAL, _backend(storage).get_trial)(trial_id)


def _error_line(error: BaseException, url: str) -> str:
    """The driver's first line, the URL's password scrubbed (see ``storage._first_line``)."""
    cause = error.__cause__ if error.__cause__ is not None else error
    return _first_line(cause, sqlalchemy.engine.make_url(url))
