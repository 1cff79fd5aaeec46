"""Storage URLs -> Optuna storages, configured for long trials shared by many workers.

- ``sqlite:///study.db``: WAL journal and a busy timeout, so several local workers can write.
- ``postgresql+psycopg://user:pass@host/db``: for workers on several machines.
- ``journal:PATH`` or a path ending in ``.log``/``.journal``: Optuna's journal file storage.
- ``grpc://HOST:PORT``: Optuna's gRPC storage proxy (``shrink storage serve``, :func:`grpc_proxy_server`)
  in front of one of the databases above, for very many workers (one connection each to the proxy, which
  holds a small pool to the database).
Every storage is opened as a :class:`ShrinkStorage`, one wrapper around Optuna's storage that adds, in one
place, what the search needs: a heartbeat on every backend (a trial whose worker died is failed after the
grace period and re-queued by :class:`Requeue`, and our trial runner resumes it from the original trial's
checkpoint; Optuna gives the journal storage and the gRPC proxy none, the wrapper keeps one in a trial system
attribute), and for a worker the budget's refusal of new trials and retries that outlive a database (or
proxy) restart.
Optuna's private names are used in this module only; other modules reach a study's storage and ids through
:func:`storage_of`, :func:`study_id_of` and :func:`trial_id_of`.

A URL that is malformed, names an unknown driver or no SQLite file, or whose server cannot be reached (a
PostgreSQL connection attempt gives up after ``PG_CONNECT_TIMEOUT_S``) or refuses the password raises one
:class:`StorageError` (a ``ValueError``: exit code 2 in the CLI) before anything is written. Passwords never
leave this module: URLs are shown by :func:`redact` (SQLAlchemy's rendering with the password hidden), and
driver messages are scrubbed of the password text too.
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import re
import time
import uuid
import warnings
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

import grpc
import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import (
    BaseStorage,
    GrpcStorageProxy,
    JournalStorage,
    RDBStorage,
    RetryHeartbeatStaleTrialCallback,
    _CachedStorage,  # private: how Optuna caches an RDBStorage; ShrinkStorage wraps one
)

# Optuna's private names, used in this module only: the gRPC proxy's stub, client cache and servicer (we
# open its client's channel and build its server with options of our own); the heartbeat interface Optuna's
# optimize() checks for and the thread it beats in; the RDB session and models for add_trials_at_once
from optuna.storages._grpc.auto_generated import api_pb2_grpc
from optuna.storages._grpc.client import GrpcClientCache
from optuna.storages._grpc.servicer import OptunaStorageProxyService
from optuna.storages._heartbeat import BaseHeartbeat, BaseHeartbeatThread, get_heartbeat_thread
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal._storage import JournalOperation
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from shrink.compression.checkpoint import one_line
from shrink.compression.files import UnreadableFile, read_start
from shrink.compression.rd import JSON_TYPES

from .records import (
    CREATE_TOKEN_ATTR,
    FAIL_REASON_ATTR,
    FAILED_TRIAL_ATTR,
    FIXED_PARAMS_ATTR,
    JOURNAL_HEARTBEAT_ATTR,
    PREVIOUS_FAIL_ATTR,
    RETRY_HISTORY_ATTR,
    TICKET_ATTR,
    TICKET_WINDOW_ATTR,
    VERDICT_ATTRS,  # what a retry drops (a retry that completes must not say why its predecessor failed)
    TicketWindow,
)

if TYPE_CHECKING:
    from optuna.study._frozen import FrozenStudy  # BaseStorage.get_all_studies' type, exported nowhere

# Heartbeats, retries and metric names are "experimental" in Optuna 5; we rely on them knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

HEARTBEAT_INTERVAL_S = 30
GRACE_PERIOD_S = 90
MAX_RETRY = 3
SQLITE_BUSY_TIMEOUT_S = 60
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
MAX_JOURNAL_BYTES = 1 << 40  # no real bound: a journal only has to be a regular file
JOURNAL_OP_CODES = frozenset(JournalOperation)


class StorageError(ValueError):
    """A storage URL that is malformed or cannot be reached; the message never holds a password."""


PROXIED_FORMS = "serve sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB"
URL_FORMS = (
    "sqlite:///FILE, postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB, journal:FILE or grpc://HOST:PORT"
)
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
    ``fail_reason`` moves to ``previous_fail_reason`` instead of being inherited as the retry's own, and its
    last beat (journal, gRPC) is not inherited: the retry, once claimed, would look stale at once.
    """

    def __init__(self, max_retry: int | None = MAX_RETRY):
        super().__init__(max_retry=max_retry, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get(RETRY_HISTORY_ATTR, ()), trial.number]
        if self._max_retry is not None and len(history) > self._max_retry:
            return
        user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in VERDICT_ATTRS}
        if trial.user_attrs.get(FAIL_REASON_ATTR):
            user_attrs[PREVIOUS_FAIL_ATTR] = trial.user_attrs[FAIL_REASON_ATTR]
        kept = {k: v for k, v in trial.system_attrs.items() if k != JOURNAL_HEARTBEAT_ATTR}
        # what RetryFailedTrialCallback.__call__ adds (Optuna's): its template, built here so that the add
        # can be the storage's one-retry-per-trial add
        retry = optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=user_attrs,
            system_attrs={FAILED_TRIAL_ATTR: trial.number, **kept, RETRY_HISTORY_ATTR: history},
            intermediate_values=trial.intermediate_values,
        )
        storage = storage_of(study)
        if isinstance(storage, ShrinkStorage):  # it looks for an existing retry itself
            storage.add_retry(study_id_of(study), trial.number, retry)
        elif not _has_retry(study.get_trials(deepcopy=False), trial.number):
            study.add_trial(retry)


def _has_retry(trials: Sequence[FrozenTrial], number: int) -> bool:
    """Whether trial ``number`` is re-queued already (a FAIL whose answer was lost, settled as ours by a
    re-read; or another worker's repair)."""
    return any(number in t.system_attrs.get(RETRY_HISTORY_ATTR, ()) for t in trials)


def open_storage(
    url: str,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    max_retry: int = MAX_RETRY,
) -> ShrinkStorage:
    """The storage at ``url``, created if need be; a bad URL raises :class:`StorageError`, writing nothing.

    The one place storages are built: Optuna's (cached, as ``optuna.load_study`` would make it) wrapped in a
    :class:`ShrinkStorage`; ``optuna.create_study``/``load_study`` and optuna-dashboard take it as it is."""
    retry = Requeue(max_retry)
    path = journal_path(url)
    if path is not None:
        return _open_journal(url, path, heartbeat_interval, grace_period, retry)
    address = grpc_address(url)
    if address is not None:
        return _open_grpc(url, address, heartbeat_interval, grace_period, retry)
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
        return ShrinkStorage(_CachedStorage(storage), url)
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
) -> ShrinkStorage:
    if not str(path) or path.is_dir():
        raise StorageError(f"storage URL {url!r} names no journal file: use journal:PATH/study.log")
    try:
        _check_journal_file(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = CheckedJournalStorage(path)
        if heartbeat_interval is None:
            return ShrinkStorage(storage, url)
        return ShrinkStorage(storage, url, heartbeat_interval, grace_period, retry)
    except OSError as error:
        raise StorageError(f"cannot open journal storage {str(path)!r}: {error.strerror or error}") from None


def grpc_address(url: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``grpc://HOST:PORT`` URL (an IPv6 host in brackets, as gRPC's targets write
    it); None for another scheme; a :class:`StorageError` for a malformed one."""
    if not url.lower().startswith("grpc://"):
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is no number, or out of range
        port = None
    extra = parts.username or parts.password or parts.path not in ("", "/") or parts.query or parts.fragment
    if not parts.hostname or port is None or not 1 <= port <= 65535 or extra:
        raise StorageError(
            f"malformed storage URL {redact(url)!r}: a gRPC storage proxy is grpc://HOST:PORT "
            "(started with `shrink storage serve`)"
        )
    host = parts.hostname
    return (f"[{host}]" if ":" in host else host), port


# The proxy's client and server channels. Keepalive pings, each answered within 10 s or the connection is
# dropped (gRPC waits 60 s), find a stalled connection (a partition, a stopped proxy) within 10 to 20 s
# instead of TCP's minutes: the call fails UNAVAILABLE and is retried. A short reconnect backoff finds a
# restarted proxy within 4 s (gRPC's own grows to 2 minutes).
GRPC_CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", -1),  # Optuna's own: a study's trials come in one answer
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 500),
    ("grpc.min_reconnect_backoff_ms", 500),
    ("grpc.max_reconnect_backoff_ms", 4_000),
)
GRPC_SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", -1),  # a retry's template holds its predecessor's attributes
    ("grpc.so_reuseport", 0),  # a taken port is refused, not shared with the process holding it
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),  # the clients' keepalive is welcome
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)
GRPC_CONNECT_TIMEOUT_S = 5
GRPC_SERVER_THREADS = 10  # Optuna's default; a call holds a thread (and a database connection) briefly


class ShrinkGrpcProxy(GrpcStorageProxy):
    """Optuna's gRPC storage proxy client, its channel opened with :data:`GRPC_CHANNEL_OPTIONS`."""

    def _setup(self) -> None:  # GrpcStorageProxy's channel set-up, private in Optuna: its options are fixed
        self._channel = grpc.insecure_channel(f"{self._host}:{self._port}", options=GRPC_CHANNEL_OPTIONS)
        self._stub = api_pb2_grpc.StorageServiceStub(self._channel)
        self._cache = GrpcClientCache(self._stub)


def _open_grpc(
    url: str,
    address: tuple[str, int],
    heartbeat_interval: int | None,
    grace_period: int | None,
    retry: Requeue,
) -> ShrinkStorage:
    host, port = address
    proxy = ShrinkGrpcProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=GRPC_CONNECT_TIMEOUT_S)
    except ConnectionError:
        proxy.close()
        raise StorageError(
            f"cannot open storage {redact(url)}: no gRPC storage proxy answers at {host}:{port} within "
            f"{GRPC_CONNECT_TIMEOUT_S} s (start one with `shrink storage serve`)"
        ) from None
    if heartbeat_interval is None:
        return ShrinkStorage(proxy, url)
    return ShrinkStorage(proxy, url, heartbeat_interval, grace_period, retry)


def grpc_proxy_server(
    storage: ShrinkStorage,
    host: str,
    port: int,
    log: Callable[[str], None],
    threads: int = GRPC_SERVER_THREADS,
) -> tuple[grpc.Server, int]:
    """Optuna's gRPC storage proxy (``run_grpc_proxy_server``'s server) serving ``storage``, listening on
    ``host:port`` (port 0: a free one) and started; returns it and its port. ``storage`` retries what a lost
    database connection fails, logging with ``log`` (:meth:`ShrinkStorage.serve_proxy`). A port that cannot
    be bound is a :class:`StorageError`."""
    storage.serve_proxy(log)
    server = grpc.server(ThreadPoolExecutor(max_workers=threads), options=GRPC_SERVER_OPTIONS)
    api_pb2_grpc.add_StorageServiceServicer_to_server(OptunaStorageProxyService(storage), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio >= 1.60 raises where older ones returned 0
        bound = 0
    if not bound:
        raise StorageError(f"cannot listen on {address}: the port is taken or the address is not this host's")
    server.start()
    return server, bound


def _check_journal_file(path: Path) -> None:
    """Refuse, before Optuna opens it, a journal that is no regular file (a FIFO would block) or does not
    start as every journal does (random bytes without a newline pass in Optuna for a line being written)."""
    try:
        start = read_start(path, 1, MAX_JOURNAL_BYTES, "journal file")
    except FileNotFoundError:
        return  # a new study: Optuna creates it
    except UnreadableFile as error:
        raise StorageError(str(error)) from None
    if start not in (b"", b"{"):
        raise StorageError(f"{path}: line 1 is not an Optuna journal entry (it does not start with '{{')")


class CheckedJournalStorage(JournalStorage):
    """Optuna's journal storage on the file ``path``, each line of which must be an entry Optuna can apply:
    a line of another shape (not UTF-8, not JSON, not an object, an unknown op code, fields Optuna cannot
    use) is one :class:`StorageError` naming the file and the line, not Optuna's ``AssertionError: Should
    not reach.`` or ``TypeError``. The line stays unread: every later read says the same."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entry: Any = None  # the entry being applied
        super().__init__(JournalFileBackend(str(path)))

    def _sync_with_backend(self) -> None:
        replay = self._replay_result
        try:
            replay.apply_logs(self._checked_entries(replay.log_number_read))
        except StorageError:
            raise
        except Exception as error:
            entry, self._entry = self._entry, None
            if entry is None or entry.get("worker_id") == replay.worker_id:
                raise  # a failed read (a disk error), or Optuna's answer to this process's own call
            replay.log_number_read -= 1  # counted before it failed
            why = f"{type(error).__name__}: {error}"
            raise StorageError(self._bad_line(replay.log_number_read + 1, why)) from None

    def _checked_entries(self, first: int) -> Iterator[dict[str, Any]]:
        entries = self._backend.read_logs(first)
        for number in itertools.count(first + 1):
            self._entry = None  # reading the next line, not applying one
            try:
                entry = next(entries)
            except StopIteration:
                return
            except ValueError as error:  # not UTF-8, not JSON
                raise StorageError(self._bad_line(number, f"{type(error).__name__}: {error}")) from None
            if not isinstance(entry, dict):
                holds = JSON_TYPES.get(type(entry), "a number")
                raise StorageError(self._bad_line(number, f"{holds}, not an object"))
            op_code = entry.get("op_code")
            if not isinstance(op_code, int) or op_code not in JOURNAL_OP_CODES:
                raise StorageError(self._bad_line(number, f"unknown op code {op_code!r}"))
            self._entry = entry
            yield entry

    def _bad_line(self, number: int, why: str) -> str:
        return f"{self.path}: line {number} is not an Optuna journal entry ({one_line(why, 200)})"


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
    code = _grpc_code(error)
    if code is not None:  # a gRPC error's text is a multi-line dump: its status and details say it all
        lines = scrub(redact_message(error.details() or ""), parsed).strip().splitlines()
        return f"gRPC {code.name}: {lines[0] if lines else ''}"
    text = scrub(redact_message(str(error)), parsed)
    lines = text.strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def _grpc_code(error: BaseException) -> grpc.StatusCode | None:
    """The status of a failed gRPC call (the proxy's client raises the channel's error as it is)."""
    if isinstance(error, grpc.RpcError) and callable(getattr(error, "code", None)):
        return error.code()
    return None


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
# The database calls Optuna's Study, Trial, optimize() and heartbeat thread make through the storage: the
# ones a worker's ShrinkStorage retries.
STORAGE_CALLS = (
    "get_all_trials", "get_trial", "create_new_trial", "set_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_best_trial", "get_study_user_attrs",
    "get_study_system_attrs", "set_study_user_attr", "set_study_system_attr", "get_study_directions",
    "_get_stale_trial_ids",
)  # fmt: skip


def _unwrap(error: BaseException) -> BaseException:
    """The database's own error under Optuna's ``StorageInternalError`` and under a ``PendingRollbackError``
    raised while handling it (Optuna's ``_get_trials`` answers an ``OperationalError`` with a second query
    in the same session, which a connection the server terminated refuses that way)."""
    if isinstance(error, optuna.exceptions.StorageInternalError) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, sqlalchemy.exc.PendingRollbackError):
        error = error.__cause__ or error.__context__ or error
    return error


# gRPC statuses of a proxy that cannot be reached (down, restarting, a stalled connection found by keepalive)
# or is overloaded. UNKNOWN is not among them: it is an error the proxy's storage raised (after the proxy's
# own retries of its database).
GRPC_TRANSIENT_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


def is_transient(error: BaseException) -> bool:
    """A refused or lost database connection (a server restarting, a network blip, SQLite busy), or a
    gRPC storage proxy that cannot be reached."""
    error = _unwrap(error)
    if isinstance(error, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)):
        return True
    if _grpc_code(error) is not None:
        return _grpc_code(error) in GRPC_TRANSIENT_CODES
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


class BudgetSpent(RuntimeError):
    """No ticket is left: the study has every trial its budget allows (see :mod:`shrink.search.budget`)."""


class ShrinkStorage(BaseStorage, BaseHeartbeat):
    """Optuna's storage wrapped by delegation, as Optuna's ``_CachedStorage`` wraps ``RDBStorage``.

    Every call goes to ``inner`` (Optuna's cached RDB storage, its journal storage, or its gRPC proxy
    client); what shrink adds, in the order a call meets it:

    1. the budget (:meth:`serve_worker`): a new trial without a template (``study.ask()`` finding no ticket)
       raises :class:`BudgetSpent`; a re-queued retry, added with its template, stays allowed;
    2. retries (:meth:`serve_worker` on an RDB storage or a gRPC proxy; :meth:`serve_proxy` in the proxy in
       front of a database): each call in ``STORAGE_CALLS`` that fails for want of a connection is retried
       by :func:`retry_storage`, so a worker outlives a database (or proxy) restart, and a proxy its
       database's. The two calls that are not idempotent first read what the database holds:
       ``create_new_trial`` tags its trial with a fresh token and looks for it; ``set_trial_state_values``
       reads the trial's state. A claim (WAITING -> RUNNING) whose answer was lost is ambiguous (this
       worker's commit, or another's): the trial is left alone, given one heartbeat so that the stale check
       re-queues it if it was ours (a worker with an empty queue waits for every RUNNING trial to end or go
       stale: :mod:`shrink.search.drain`). A heartbeat is not retried: one that fails is logged and skipped
       (the heartbeat thread would die of the error), the next comes one interval later;
    3. the heartbeat: the RDB storage's own, or, on a journal and through a gRPC proxy (which Optuna gives
       none), the time of a trial's last beat kept in a trial system attribute (``heartbeat_interval``,
       ``grace_period`` and ``stale_callback`` configure it). The clocks of the machines sharing a journal
       file or a proxy must agree to within the grace period. Workers of one study use one route: a worker
       on the database itself does not see the beats of one through the proxy, nor the other way round.
    """

    def __init__(
        self,
        inner: BaseStorage,
        url: str,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        stale_callback: Requeue | None = None,
    ):
        self._inner = inner
        self.url = url
        self._attr_heartbeat = (heartbeat_interval, grace_period, stale_callback)
        self._log: Callable[[str], None] | None = None  # set by serve_worker/serve_proxy: retries on
        self._budget_closed = False
        self._proxy = False  # serving gRPC clients (serve_proxy)

    # ---- what shrink adds ----------------------------------------------------------------------------
    @property
    def rdb(self) -> RDBStorage | None:
        """The RDB storage under Optuna's cache; None for a journal."""
        # _CachedStorage is how Optuna itself wraps an RDBStorage (optuna.storages.get_storage); its
        # _backend is the only way to the uncached storage beneath it.
        return self._inner._backend if isinstance(self._inner, _CachedStorage) else None

    @property
    def remote(self) -> bool:
        """Whether this is a gRPC proxy's client (``grpc://``)."""
        return isinstance(self._inner, GrpcStorageProxy)

    def serve_worker(self, log: Callable[[str], None]) -> None:
        """From now on refuse trials beyond the budget, and (on an RDB storage or a gRPC proxy) retry what a
        lost connection fails, logging each retry with ``log``."""
        self._budget_closed = True
        if self.rdb is not None or self.remote:
            self._log = log

    def serve_proxy(self, log: Callable[[str], None]) -> None:
        """Serve as the database behind a gRPC proxy: retry what a lost database connection fails (logged
        with ``log``), keep the budget to the proxy's clients (a worker's own ShrinkStorage refuses), and
        give a claim whose answer was lost one beat of the clients' heartbeat (a trial system attribute)."""
        if self.rdb is None:
            raise StorageError(f"a gRPC proxy serves a database, not {redact(self.url)}: {PROXIED_FORMS}")
        self._log = log
        self._proxy = True
        for study_id in self._studies_issuing_lazily():  # a top-up the last proxy died before making
            self.top_up_tickets(study_id)

    def read_trial(self, trial_id: int) -> FrozenTrial:
        """The trial as the database holds it now (Optuna's cache may keep a RUNNING trial's old state)."""
        return self._call("get_trial", self._read_uncached, trial_id)

    def _read_uncached(self, trial_id: int) -> FrozenTrial:
        # a gRPC proxy's get_trial asks the proxy, whose cache keeps finished trials only
        return (self.rdb or self._inner).get_trial(trial_id)

    def add_trials_at_once(
        self,
        study_id: int,
        trials: Sequence[FrozenTrial],
        study_system_attrs: Mapping[str, Any] | None = None,
    ) -> bool:
        """Add ``trials``, and set ``study_system_attrs``, in one transaction, so all or none are added even
        if the process is killed (Optuna's ``add_trials`` commits each trial on its own, about 100 a second);
        this uses the RDB storage's own per-trial insert under the study lock, inside one session. False on a
        journal or a gRPC proxy, whose caller adds them one by one."""
        rdb = self.rdb
        if rdb is None:
            return False
        for trial in trials:
            trial._validate()  # the check Study.add_trial makes before it inserts (FrozenTrial's, private)
        # Optuna's RDBStorage has no public many-trial insert: its session helper, study model and
        # per-trial insert are what its own create_new_trial uses.
        with _create_scoped_session(rdb.scoped_session) as session:
            study = rdb_models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            for trial in trials:
                rdb._get_prepared_new_trial(study_id, trial, session)
            for key, value in (study_system_attrs or {}).items():
                _set_study_system_attr(session, study, key, value)
        return True

    def add_retry(self, study_id: int, failed_number: int, retry: FrozenTrial) -> bool:
        """Add ``retry``, the WAITING retry of trial ``failed_number``, unless the study holds one already (a
        trial whose retry history names it); returns whether it was added. On a database the look and the add
        are one transaction under the study row's lock, so that two workers re-queuing one trial add one
        retry (one that repairs a re-queue whose writer died, and that writer, late). On a journal and through
        a gRPC proxy they are two calls."""
        rdb = self.rdb
        if rdb is None:
            if _has_retry(self._delegate("get_all_trials", study_id, deepcopy=False), failed_number):
                return False
            self.create_new_trial(study_id, retry)
            return True
        retry._validate()  # the check Study.add_trial makes before it inserts (FrozenTrial's, private)
        # retried whole when the connection is lost: a commit whose answer was lost is found by the look
        add = functools.partial(self._add_retry_once, study_id, failed_number, retry)
        return self._call("add_retry", add)

    def _add_retry_once(self, study_id: int, failed_number: int, retry: FrozenTrial) -> bool:
        attr, trial = rdb_models.TrialSystemAttributeModel, rdb_models.TrialModel
        with _create_scoped_session(self.rdb.scoped_session) as session:
            rdb_models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            histories = (
                session.query(attr.value_json)
                .join(trial, trial.trial_id == attr.trial_id)
                .filter(trial.study_id == study_id, attr.key == RETRY_HISTORY_ATTR)
            )
            if any(failed_number in json.loads(history) for (history,) in histories):
                return False
            self.rdb._get_prepared_new_trial(study_id, retry, session)
            return True

    def _studies_issuing_lazily(self) -> list[int]:
        def read() -> list[int]:
            attr = rdb_models.StudySystemAttributeModel
            with _create_scoped_session(self.rdb.scoped_session) as session:
                return [
                    row.study_id
                    for row in session.query(attr.study_id).filter(attr.key == TICKET_WINDOW_ATTR)
                ]

        return self._call("get_all_studies", read)

    def top_up_tickets(self, study_id: int | None = None, trial_id: int | None = None) -> int:
        """Issue the next tickets of a study whose budget issues them lazily (a :class:`TicketWindow` in
        its system attributes), so that ``max(window, RUNNING trials)`` are WAITING while any is unissued;
        returns how many were issued. One transaction under the study row's lock: each index is issued
        once, whoever tops up at the same moment. The study is ``study_id``'s, or ``trial_id``'s. Nothing on
        a journal, whose tickets are all issued at create, nor through a gRPC proxy, which tops up itself."""
        rdb = self.rdb
        if rdb is None:
            return 0

        def top_up() -> int:
            with _create_scoped_session(rdb.scoped_session) as session:
                sid = study_id
                if sid is None:
                    sid = rdb_models.TrialModel.find_or_raise_by_id(trial_id, session).study_id
                study = rdb_models.StudyModel.find_or_raise_by_id(sid, session, for_update=True)
                stored = rdb_models.StudySystemAttributeModel.find_by_study_and_key(
                    study, TICKET_WINDOW_ATTR, session
                )
                if stored is None:  # tickets issued up front
                    return 0
                window = TicketWindow.model_validate_json(stored.value_json)
                trial = rdb_models.TrialModel
                counts = dict(
                    session.query(trial.state, sqlalchemy.func.count(trial.trial_id))
                    .filter(trial.study_id == sid, trial.state.in_([TrialState.WAITING, TrialState.RUNNING]))
                    .group_by(trial.state)
                    .all()
                )
                indices = window.next_indices(
                    counts.get(TrialState.WAITING, 0), counts.get(TrialState.RUNNING, 0)
                )
                for index in indices:
                    rdb._get_prepared_new_trial(sid, ticket(index), session)
                stored.value_json = window.after(len(indices)).model_dump_json()
                return len(indices)

        return self._call("top_up_tickets", top_up)

    def dispose(self) -> None:
        """Close the database connections, or the proxy's channel (a process that opens many storages)."""
        if self.rdb is not None:
            self.rdb.engine.dispose()
        if self.remote:
            self._inner.close()

    def _call(self, name: str, method: Callable[..., Any], *args, **kwargs) -> Any:
        if self._log is None:
            return method(*args, **kwargs)
        return retry_storage(lambda: method(*args, **kwargs), name, self._log, self.url)

    def _delegate(self, name: str, *args, **kwargs) -> Any:
        return self._call(name, getattr(self._inner, name), *args, **kwargs)

    # ---- trials: the budget, then retries ----------------------------------------------------------
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None and self._budget_closed:
            raise BudgetSpent("no trial of the study's budget is left to claim")
        if self._log is None:
            return self._inner.create_new_trial(study_id, template_trial)
        # A proxy keeps its client's token and adds its own: a template's token may be inherited, not fresh
        key = PROXY_CREATE_TOKEN_ATTR if self._proxy else CREATE_TOKEN_ATTR
        token = uuid.uuid4().hex
        template = _with_token(template_trial, key, token)

        def settled() -> tuple[bool, int | None]:
            for trial in self._inner.get_all_trials(study_id, deepcopy=False):
                if trial.system_attrs.get(key) == token:
                    return True, trial._trial_id
            return False, None

        create = functools.partial(self._inner.create_new_trial, study_id, template)
        return retry_storage(create, "create_new_trial", self._log, self.url, settled=settled)

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        if self._log is None:
            changed = self._inner.set_trial_state_values(trial_id, state=state, values=values)
        else:
            update = functools.partial(
                self._inner.set_trial_state_values, trial_id, state=state, values=values
            )
            settled = functools.partial(self._settled, trial_id, state)
            changed = retry_storage(update, "set_trial_state_values", self._log, self.url, settled=settled)
        if changed and state == TrialState.RUNNING:
            self._claimed(trial_id)
        return changed

    def _claimed(self, trial_id: int) -> None:
        """A WAITING trial was claimed, by this worker or by a client of this proxy."""
        if self._budget_closed and heartbeat_enabled(self):
            # its first beat now, not when Optuna's heartbeat thread starts: a worker killed in between would
            # leave a trial that never beat, which no stale check fails
            self.record_heartbeat(trial_id)
        if self._budget_closed or self._proxy:
            self.top_up_tickets(trial_id=trial_id)

    def _settled(self, trial_id: int, state: TrialState) -> tuple[bool, bool | None]:
        """Whether a state change whose answer was lost took effect (see the class's docstring)."""
        trial = self._read_uncached(trial_id)  # the state as the database holds it
        if state == TrialState.RUNNING:
            if trial.state == TrialState.WAITING:
                return False, None
            if trial.state == TrialState.RUNNING:
                if self._proxy:  # the proxy's clients, not the proxy, keep the heartbeat: theirs it gets
                    self._record_attr_heartbeat(trial_id)
                elif self.get_heartbeat_interval() is not None:
                    self.record_heartbeat(trial_id)
                self._log(f"storage: claim of trial {trial.number} unsure; left to the heartbeat check")
                return True, False
        elif trial.state == state:
            return True, True
        if trial.state.is_finished():
            raise UpdateFinishedTrialError(f"trial {trial.number} is already {trial.state.name}")
        return False, None

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        self._delegate("set_trial_param", trial_id, param_name, param_value_internal, distribution)

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self._delegate("set_trial_intermediate_value", trial_id, step, intermediate_value)

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._delegate("set_trial_user_attr", trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._delegate("set_trial_system_attr", trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._delegate("get_trial", trial_id)

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        return self._delegate("get_all_trials", study_id, deepcopy=deepcopy, states=states)

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._delegate("get_trial_id_from_study_id_trial_number", study_id, trial_number)

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._delegate("get_best_trial", study_id)

    # ---- studies ------------------------------------------------------------------------------------
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        return self._inner.create_new_study(directions, study_name)

    def delete_study(self, study_id: int) -> None:
        self._inner.delete_study(study_id)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._delegate("set_study_user_attr", study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._delegate("set_study_system_attr", study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._inner.get_study_id_from_name(study_name)

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._inner.get_study_name_from_id(study_id)

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._delegate("get_study_directions", study_id)

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._delegate("get_study_user_attrs", study_id)

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._delegate("get_study_system_attrs", study_id)

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._inner.get_all_studies()

    def remove_session(self) -> None:
        self._inner.remove_session()

    # ---- the heartbeat ------------------------------------------------------------------------------
    def record_heartbeat(self, trial_id: int) -> None:
        try:
            if self.rdb is None:
                self._record_attr_heartbeat(trial_id)
            else:
                self._inner.record_heartbeat(trial_id)
        except Exception as error:
            if self._log is None or not is_transient(error):
                raise
            self._log(f"storage: heartbeat of trial id {trial_id} skipped ({_error_line(error, self.url)})")

    def _record_attr_heartbeat(self, trial_id: int) -> None:
        try:
            self._inner.set_trial_system_attr(trial_id, JOURNAL_HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:  # finished elsewhere (failed as stale): its retry beats now
            pass

    # BaseHeartbeat's abstract method, private in Optuna: fail_stale_trials() asks it for the stale trials.
    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        if self.rdb is not None:
            return self._delegate("_get_stale_trial_ids", study_id)
        return self._call("_get_stale_trial_ids", self._attr_stale_trial_ids, study_id)

    def _attr_stale_trial_ids(self, study_id: int) -> list[int]:
        interval, grace, _ = self._attr_heartbeat
        grace = grace if grace is not None else 2 * interval
        now = time.time()
        return [
            trial._trial_id
            for trial in self._inner.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if now - trial.system_attrs.get(JOURNAL_HEARTBEAT_ATTR, now) > grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self._inner.get_heartbeat_interval() if self.rdb is not None else self._attr_heartbeat[0]

    def heartbeat_ages(self, study_id: int) -> dict[int, float] | None:
        """Seconds since the last beat of each RUNNING trial of the study that has beaten, by trial id (the
        database's clock on an RDB storage, this machine's where the beat is a trial system attribute); None
        when a transient error leaves them unknown this time. (Optuna gives no public read of its heartbeat
        table: this reads its model.)"""
        try:
            if self.rdb is None:
                now = time.time()
                running = self._inner.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
                return {
                    t._trial_id: now - t.system_attrs[JOURNAL_HEARTBEAT_ATTR]
                    for t in running
                    if JOURNAL_HEARTBEAT_ATTR in t.system_attrs
                }
            beat, trial = rdb_models.TrialHeartbeatModel, rdb_models.TrialModel
            with sqlalchemy.orm.Session(self.rdb.engine) as session:
                now = session.execute(sqlalchemy.func.now()).scalar_one().replace(tzinfo=None)
                rows = (
                    session.query(beat.trial_id, beat.heartbeat)
                    .join(trial, trial.trial_id == beat.trial_id)
                    .filter(trial.study_id == study_id, trial.state == TrialState.RUNNING)
                    .all()
                )
        except Exception as error:
            if not is_transient(error):
                raise
            return None
        return {trial_id: (now - at.replace(tzinfo=None)).total_seconds() for trial_id, at in rows}

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        if self.rdb is not None:
            return self._inner.get_heartbeat_stale_trial_callback()
        return self._attr_heartbeat[2]


# The token a gRPC proxy tags the trials it creates with, beside its client's CREATE_TOKEN_ATTR
PROXY_CREATE_TOKEN_ATTR = "shrink_proxy_create_token"


def _with_token(template: FrozenTrial | None, key: str, token: str) -> FrozenTrial:
    """The trial to create, tagged with ``token`` (a copy: a retry's template is its predecessor's)."""
    template = (
        optuna.trial.create_trial(state=TrialState.RUNNING) if template is None else copy.copy(template)
    )
    template.system_attrs = {**template.system_attrs, key: token}
    return template


def ticket(index: int, fixed: tuple[dict[str, Any], dict[str, Any]] | None = None) -> FrozenTrial:
    """The budget's ticket ``index`` (see :mod:`shrink.search.budget`): a WAITING trial; ``fixed``, when
    given, is its (params, user attributes): it samples exactly those params (``Study.enqueue_trial``'s
    ``fixed_params`` system attribute)."""
    system_attrs: dict[str, Any] = {TICKET_ATTR: index}
    user_attrs: dict[str, Any] = {}
    if fixed is not None:
        system_attrs[FIXED_PARAMS_ATTR], user_attrs = fixed
    return optuna.trial.create_trial(
        state=TrialState.WAITING, system_attrs=system_attrs, user_attrs=user_attrs
    )


def _set_study_system_attr(session: sqlalchemy.orm.Session, study: Any, key: str, value: Any) -> None:
    """``RDBStorage.set_study_system_attr`` inside a session of ours (it opens and commits its own)."""
    stored = rdb_models.StudySystemAttributeModel.find_by_study_and_key(study, key, session)
    if stored is None:
        session.add(
            rdb_models.StudySystemAttributeModel(
                study_id=study.study_id, key=key, value_json=json.dumps(value)
            )
        )
    else:
        stored.value_json = json.dumps(value)


def storage_of(study: optuna.Study) -> BaseStorage:
    """The study's storage: a :class:`ShrinkStorage` when opened through :func:`open_storage`."""
    return study._storage  # Optuna's Study keeps its storage private; shrink reads it only here


def study_id_of(study: optuna.Study) -> int:
    return study._study_id  # Study's storage key, private in Optuna; read only here


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage key of a trial (its number counts within the study, the id across the storage)."""
    return trial._trial_id  # private in Optuna's Trial and FrozenTrial; read only here


def heartbeat_enabled(storage: BaseStorage) -> bool:
    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None


def heartbeat_thread(storage: BaseStorage, trial_id: int) -> BaseHeartbeatThread:
    """A context that beats for the trial while it runs (as Optuna's optimize() does), if ``storage`` has a
    heartbeat: for a trial run outside optimize() (``shrink trial``)."""
    return get_heartbeat_thread(trial_id, storage)


def read_trial(storage: BaseStorage, trial_id: int) -> FrozenTrial:
    """The trial as the database holds it now; through a :class:`ShrinkStorage`, retried like its other
    calls."""
    return storage.read_trial(trial_id) if isinstance(storage, ShrinkStorage) else storage.get_trial(trial_id)


def _error_line(error: BaseException, url: str) -> str:
    """The driver's first line, the URL's password scrubbed (see ``storage._first_line``)."""
    return _first_line(_unwrap(error), sqlalchemy.engine.make_url(url))
