from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy
from PIL import Image

from shrink.compression.config import TrainConfig, config_from_dict

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared data sets lie beside the checkout in CI)")
    return folder


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random photo-like image: low-frequency colour fields plus mild noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float64)
    noisy = smooth + rng.normal(0, 6, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, (height, width) in enumerate([(176, 208), (192, 176), (176, 176)]):
        Image.fromarray(textured_image(height, width, index)).save(folder / f"img{index}.png")
    return folder


def tiny_config_dict(folder: Path, **training) -> dict:
    return {
        "seed": 3,
        "model": {
            "ratio": 2,
            "comcnn": {"depth": 3, "width": 8},
            "reccnn": {"depth": 3, "width": 8, "norm": "batch", "dropout": 0.1},
        },
        "codec": {"quality_range": [20, 80], "threads": 2},
        "training": {
            "epochs": 3,
            "steps_per_epoch": 3,
            "rec_warmup_epochs": 1,
            "batch_size": 2,
            "crop": 48,
            **training,
        },
        "data": {"train": str(folder), "dev": str(folder), "dev_max_images": 2, "dev_qualities": [30, 70]},
        "device": {"device": "cpu"},
    }


@pytest.fixture
def tiny_config(image_folder: Path) -> TrainConfig:
    return config_from_dict(tiny_config_dict(image_folder))


POSTGRES_ENV = "SHRINK_TEST_POSTGRES_URL"


def postgres_url_file() -> Path:
    """Where .ci/postgres.sh (``make postgres``) writes its server's URL."""
    folder = os.environ.get("SHRINK_PG_DIR") or Path(tempfile.gettempdir()) / f"shrink-ci-pg-{os.getuid()}"
    return Path(folder) / "url"


def _no_postgres(reason: str) -> None:
    """Skip, or fail where SHRINK_REQUIRE_POSTGRES is set (a machine that must test PostgreSQL)."""
    message = f"no PostgreSQL server: {reason}; `make postgres` starts one (Debian's postgresql package)"
    if os.environ.get("SHRINK_REQUIRE_POSTGRES"):
        pytest.fail(message)
    pytest.skip(message)


def _pg_connect(url: sqlalchemy.engine.URL, database: str | None = None):
    import psycopg

    return psycopg.connect(
        host=url.host, port=url.port, user=url.username, password=url.password,
        dbname=database or url.database, connect_timeout=5, autocommit=True,
    )  # fmt: skip


@pytest.fixture(scope="session")
def postgres_server() -> sqlalchemy.engine.URL:
    """The test server's URL: $SHRINK_TEST_POSTGRES_URL, else the one .ci/postgres.sh wrote; skips if none."""
    import psycopg

    from shrink.search.storage import redact

    raw = os.environ.get(POSTGRES_ENV) or ""
    if not raw and postgres_url_file().is_file():
        raw = postgres_url_file().read_text().strip()
    if not raw:
        _no_postgres(f"{POSTGRES_ENV} is unset and {postgres_url_file()} is absent")
    url = sqlalchemy.engine.make_url(raw)
    try:
        with _pg_connect(url) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as error:
        reason = (redact(str(error)).strip().splitlines() or [type(error).__name__])[0]
        _no_postgres(f"{redact(raw)} is unreachable ({reason})")
    return url


@pytest.fixture
def postgres_url(postgres_server: sqlalchemy.engine.URL) -> Iterator[str]:
    """A fresh, empty database on the test server for this test alone (dropped afterwards)."""
    name = f"shrink_test_{uuid.uuid4().hex[:12]}"
    with _pg_connect(postgres_server) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield postgres_server.set(database=name).render_as_string(hide_password=False)
    _dispose_engines(name)
    with _pg_connect(postgres_server) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _dispose_engines(database: str) -> None:
    """Close the test's pooled connections (Optuna storages keep engines) before dropping its database."""
    gc.collect()
    for engine in [o for o in gc.get_objects() if type(o) is sqlalchemy.engine.Engine]:
        if engine.url.database == database:
            engine.dispose()


@pytest.fixture
def storage_url_any(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Iterator[str]:
    """A fresh storage URL of ``kind`` (parametrize it): "sqlite", "journal", "postgresql", or "grpc" /
    "grpc-postgresql" (a gRPC storage proxy, run in this process, in front of a fresh SQLite file /
    PostgreSQL database; stopped at teardown)."""
    if kind.startswith("grpc"):
        backend = "postgresql" if kind == "grpc-postgresql" else "sqlite"
        with grpc_proxy(_plain_url(request, tmp_path, backend)) as url:
            yield url
        return
    yield _plain_url(request, tmp_path, kind)


def _plain_url(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> str:
    if kind == "postgresql":
        return request.getfixturevalue("postgres_url")
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if kind == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    raise ValueError(f"unknown storage kind {kind!r}")


@contextlib.contextmanager
def grpc_proxy(database_url: str, port: int = 0) -> Iterator[str]:
    """``shrink storage serve``'s proxy in front of ``database_url``, in a thread of this process, on loopback
    ``port`` (0: a free one, which gRPC picks: nothing can take it in between); yields its grpc:// URL."""
    from shrink.search.storage import grpc_proxy_server, open_storage

    storage = open_storage(database_url, heartbeat_interval=None)
    server, port = grpc_proxy_server(storage, "127.0.0.1", port, log=lambda line: None)
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        server.stop(0).wait()
        storage.dispose()
