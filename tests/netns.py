"""Nodes as network namespaces, for tests/test_partitions.py: a database node and worker nodes joined by veth
links, a PostgreSQL server of the test's own on the database node, and a fault-injecting TCP relay.

Layout (addresses in 10.231.0.0/16, inside namespaces this module made; nothing reaches the host's network):

    <name>-db  (PostgreSQL on *:5432, the relay on *:6432)
       ├── veth  10.231.I.1/24  <->  10.231.I.2/24  <name>-wI   (one pair per worker node, I = 0, 1, 2)

A partition is ``ip link set down`` on a worker's end of its link (``Nodes.partition``/``heal``). Loss
and stalls come from :class:`Relay`, a threaded TCP relay in the database node between the workers and the
server: ``drop()`` resets every connection it carries (and ``refuse`` resets new ones), ``stall()`` holds
every byte until ``resume()``. This kernel has no ``tc netem``, and nftables is not used: neither is needed.

The test process itself reaches the database node through :func:`inside` (``setns`` on the calling thread
only, undone on exit), so its reads travel the node's loopback too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from .helpers import postgres_bin

CLONE_NEWNET = 0x40000000
SUBNET = "10.231"
PG_PORT, RELAY_PORT = 5432, 6432
_libc = ctypes.CDLL(None, use_errno=True)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can): root, ``ip netns`` and PostgreSQL."""
    if os.getuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"shrink-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {(made.stderr or made.stdout).strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    if postgres_bin() is None:
        return "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no postgres user to own the cluster (initdb refuses root)"
    return None


def ip(*arguments: str) -> None:
    done = subprocess.run(["ip", *arguments], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(arguments)}: {(done.stderr or done.stdout).strip()}")


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """The calling thread in network namespace ``namespace`` (sockets made now belong to it; threads started
    now inherit it); back in its own on exit."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(own)
        os.close(target)


class Nodes:
    """A database node and ``workers`` worker nodes, each link a veth pair; :meth:`close` removes them."""

    def __init__(self, workers: int = 3):
        self.tag = secrets.token_hex(2)
        self.db = f"shrink-{self.tag}-db"
        self.workers = [f"shrink-{self.tag}-w{i}" for i in range(workers)]
        self.made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        for namespace in (self.db, *self.workers):
            ip("netns", "add", namespace)
            self.made.append(namespace)
            ip("-n", namespace, "link", "set", "lo", "up")
        for index, namespace in enumerate(self.workers):
            db_end, worker_end = self.link(index)
            ip("link", "add", db_end, "netns", self.db, "type", "veth", "peer", "name", worker_end,
               "netns", namespace)  # fmt: skip
            ip("-n", self.db, "addr", "add", f"{self.db_address(index)}/24", "dev", db_end)
            ip("-n", namespace, "addr", "add", f"{SUBNET}.{index}.2/24", "dev", worker_end)
            ip("-n", self.db, "link", "set", db_end, "up")
            ip("-n", namespace, "link", "set", worker_end, "up")

    def link(self, index: int) -> tuple[str, str]:
        """The names of worker ``index``'s link: (database end, worker end); 15 characters at most."""
        return f"sk{self.tag}d{index}", f"sk{self.tag}w{index}"

    def db_address(self, index: int) -> str:
        """The database node's address on worker ``index``'s link."""
        return f"{SUBNET}.{index}.1"

    def partition(self, index: int) -> None:
        ip("-n", self.workers[index], "link", "set", self.link(index)[1], "down")

    def heal(self, index: int) -> None:
        ip("-n", self.workers[index], "link", "set", self.link(index)[1], "up")

    def command(self, namespace: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def close(self) -> None:
        """Remove the namespaces (and with them their veth ends); processes must be gone first."""
        for namespace in reversed(self.made):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        self.made.clear()


class Postgres:
    """A throwaway PostgreSQL cluster run inside the database node, listening on every address there.

    Commits are synchronous (a killed server keeps every commit it acknowledged) but not fsynced: the tests
    kill the server, never the machine."""

    def __init__(self, nodes: Nodes):
        self.nodes, self.bin = nodes, postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="shrink-netns-pg-"))  # the postgres user must reach it
        self.data = self.folder / "data"
        self.password = secrets.token_hex(12)

    def _as_owner(self, *command: str, namespace: bool = True, **kwargs) -> subprocess.CompletedProcess:
        argv = ["runuser", "-u", "postgres", "--", *command]
        if namespace:
            argv = self.nodes.command(self.nodes.db, argv)
        kwargs.setdefault("capture_output", True)
        done = subprocess.run(argv, cwd="/", timeout=120, text=True, **kwargs)
        if done.returncode != 0:
            log = self.folder / "server.log"
            detail = (done.stderr or "") + (log.read_text()[-1500:] if log.is_file() else "")
            raise RuntimeError(f"{' '.join(command[:2])} exited with {done.returncode}: {detail}")
        return done

    def create(self) -> None:
        shutil.chown(self.folder, "postgres")
        self._as_owner(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--locale=C", "-E", "UTF8", namespace=False,
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '*'\nport = {PG_PORT}\nunix_socket_directories = '{self.folder}'\n"
                "fsync = off\nfull_page_writes = off\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {SUBNET}.0.0/16 scram-sha-256\n")
        self.start()
        self.psql(f"CREATE ROLE shrink LOGIN PASSWORD '{self.password}';")

    def psql(self, sql: str) -> str:
        return self._as_owner(
            str(self.bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.folder),
            "-p", str(PG_PORT), "-U", "postgres", "-c", sql,
        ).stdout  # fmt: skip

    def new_database(self) -> str:
        name = f"shrink_{secrets.token_hex(4)}"
        self.psql(f"CREATE DATABASE {name} OWNER shrink;")
        return name

    def url(self, database: str, host: str = "127.0.0.1", port: int = PG_PORT) -> str:
        return f"postgresql+psycopg://shrink:{self.password}@{host}:{port}/{database}"

    def start(self) -> None:
        self._as_owner(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w",
            "-t", "60", "start", capture_output=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        """Every server process ends at once, as in a crash (``pg_ctl stop -m immediate``: SIGQUIT)."""
        self._as_owner(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").is_file():
                self.kill()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


class Relay:
    """A TCP relay inside namespace ``namespace``: ``*:listen_port`` -> ``127.0.0.1:target_port``, with
    faults: :meth:`drop` resets every connection it carries, :attr:`refuse` resets new ones as they arrive,
    :meth:`stall` holds every byte (both ways) until :meth:`resume`."""

    def __init__(self, namespace: str, listen_port: int = RELAY_PORT, target_port: int = PG_PORT):
        self.namespace, self.listen_port, self.target_port = namespace, listen_port, target_port
        self.flowing = threading.Event()
        self.flowing.set()
        self.refuse = False
        self.closed = threading.Event()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.lock = threading.Lock()
        self.counts = {"connections": 0, "drops": 0, "dropped": 0, "refused": 0, "stalls": 0}
        with inside(namespace):  # the listening socket and the accept thread (its sockets) live there
            self.server = socket.create_server(("0.0.0.0", listen_port), reuse_port=False)
            self.server.settimeout(0.2)
            self.thread = threading.Thread(target=self._accept, daemon=True, name="relay")
            self.thread.start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refuse:
                self.counts["refused"] += 1
                _reset(client)
                continue
            upstream = socket.socket()
            try:
                upstream.connect(("127.0.0.1", self.target_port))
            except OSError:
                _reset(client)
                upstream.close()
                continue
            pair = (client, upstream)
            with self.lock:
                self.pairs.add(pair)
                self.counts["connections"] += 1
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                while not self.flowing.wait(0.2):  # stalled: hold the bytes
                    if self.closed.is_set():
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._forget(pair, reset=False)

    def _forget(self, pair, reset: bool) -> None:
        with self.lock:
            if pair not in self.pairs:
                return
            self.pairs.discard(pair)
        for sock in pair:
            _reset(sock) if reset else _close(sock)

    def drop(self) -> int:
        """Reset every connection now carried (both ends see a reset); returns how many."""
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._forget(pair, reset=True)
        self.counts["drops"] += 1
        self.counts["dropped"] += len(pairs)
        return len(pairs)

    def stall(self) -> None:
        self.counts["stalls"] += 1
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed.set()
        self.flowing.set()
        self.server.close()
        with self.lock:
            pairs = list(self.pairs)
        for pair in pairs:
            self._forget(pair, reset=True)
        self.thread.join(timeout=5)


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a FIN: the peer's next read fails."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)  # wakes a thread blocked reading it; sends nothing
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def wait_until(predicate, timeout: float, what: str, period: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(period)
