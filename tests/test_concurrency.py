"""Several real workers on one study (benchmarks/concurrency.py at toy size): nothing lost or duplicated."""

from __future__ import annotations

import datetime
import importlib.util
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import optuna
import pytest

from .conftest import POSTGRES_ENV, REPO

BENCHMARK = REPO / "benchmarks" / "concurrency.py"
WORKERS, TRIALS = 2, 6


def summary(stdout: str) -> dict[str, dict[str, str]]:
    """The benchmark's closing table: storage -> {column: value}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("storage ") and "contiguous" in line)
    header = lines[start].split()
    rows: dict[str, dict[str, str]] = {}
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        values = line.split()
        rows[values[0]] = dict(zip(header, values, strict=True))
    return rows


@pytest.mark.slow
def test_concurrent_workers_lose_duplicate_and_skip_nothing(request: pytest.FixtureRequest, tmp_path: Path):
    storages = ["sqlite", "journal"]
    env = {k: v for k, v in os.environ.items() if k not in (POSTGRES_ENV, "SHRINK_STORAGE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        # a fresh database, passed in the environment (no password on a command line)
        env[POSTGRES_ENV] = request.getfixturevalue("postgres_url")
        storages.append("postgresql")
    except pytest.skip.Exception:
        pass
    keep = tmp_path / "bench"
    command = [sys.executable, str(BENCHMARK), "--workers", str(WORKERS), "--trials", str(TRIALS)]
    command += ["--journal-workers", str(WORKERS), "--storages", ",".join(storages), "--keep", str(keep)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    logs = {kind: keep / kind / "launch.log" for kind in storages}
    context = result.stdout[-3000:] + result.stderr[-3000:]
    for kind, path in logs.items():
        if path.is_file():
            context += f"\n--- {kind} launch.log\n{path.read_text()[-1500:]}"
    assert result.returncode == 0, context

    rows = summary(result.stdout)
    assert sorted(rows) == sorted(storages), context
    for kind, row in rows.items():
        assert row["workers"] == str(WORKERS) and row["trials"] == str(TRIALS), (kind, row)
        assert int(row["complete"]) == TRIALS, (kind, row, context)  # the budget is exact
        assert (row["lost"], row["dup"], row["contiguous"], row["left"], row["over"]) == (
            ("0", "0", "yes", "0", "0")
        ), (kind, row)
        assert row["requeued"] == "done", (kind, row, context)  # a retry raced its live original, one won
        assert float(row["storage_s/trial"]) > 0, (kind, row)  # the timing shim ran in the workers
    assert result.stdout.rstrip().splitlines()[-1].startswith("OK"), context


def load_benchmark():
    name = "shrink_benchmark_concurrency"
    if name not in sys.modules:  # registered first: its dataclasses look their module up
        spec = importlib.util.spec_from_file_location(name, BENCHMARK)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_the_checks_catch_lost_duplicated_left_and_gaps(tmp_path: Path):
    """The benchmark's checks can fail: a study and a log with each fault, read back as the benchmark does."""
    bench = load_benchmark()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=url, study_name="s", directions=["minimize", "maximize"])
    width = {"w": optuna.distributions.CategoricalDistribution([4, 8])}
    for original in [0, 0, 2]:  # trial 1 re-ran trial 0 to the end: a duplicate
        attrs = {
            "original_trial": original,
            "run_dir": f"runs/trial-{original:05d}",
            "epochs": [{"seconds": 0.5}],
        }
        study.add_trial(
            optuna.trial.create_trial(
                params={"w": 4}, distributions=width, values=[1.0, 0.9], user_attrs=attrs
            )
        )
    study.ask()  # left RUNNING
    run = bench.Run("sqlite", workers=2, planned=5)
    bench.read_study(run, url, "s", datetime.datetime.now())
    bench.read_logs(run, ["[w0] trial 0 COMPLETE: ...", "[w1] trial 0 COMPLETE: ...", "[w1] [trial 2] epoch"])
    assert (run.complete, run.lost, run.left) == (3, 2, 1)
    assert run.without_ticket == 4 and run.over == 4  # added and asked outside the budget's tickets
    assert run.duplicated == 2, run.duplicate_notes  # original trial 0 twice; trial 0 reported by two workers
    assert run.per_worker == [1, 1] and run.train_s == [0.5, 0.5, 0.5]
    assert run.contiguous and not run.ok
    run.numbers = [0, 1, 3]
    assert not run.contiguous
    clean = bench.Run("sqlite", workers=1, planned=1, states=Counter(COMPLETE=1), numbers=[0])
    assert clean.ok and bench.summary_row(clean).split()[4:8] == ["0", "0", "yes", "0"]
