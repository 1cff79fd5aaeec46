"""The load benchmark (benchmarks/load.py) at test size: a few simulated workers, 50 trials with the stub
trainer through shrink's real ask/report/prune/tell path, on SQLite and on PostgreSQL when a server is up.
Tickets are issued as they are claimed (a window of 8); the budget is exact, no ticket is finished twice,
nothing is left RUNNING or WAITING, and nothing erred."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from .conftest import POSTGRES_ENV, REPO

BENCHMARK = REPO / "benchmarks" / "load.py"
WORKERS, TRIALS = 4, 50
DONE = re.compile(
    r"^(\w+) +(\d+) +done (\d+)/(\d+) tickets in \d+ s; duplicate tickets (\d+), left (\d+), errors (\d+)",
    re.MULTILINE,
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_simulated_workers_spend_the_exact_budget_without_duplicates_or_errors(
    request: pytest.FixtureRequest, kind: str
):
    env = {k: v for k, v in os.environ.items() if k not in (POSTGRES_ENV, "SHRINK_STORAGE")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    command = [sys.executable, str(BENCHMARK), "--workers", str(WORKERS), "--trials", str(TRIALS)]
    command += ["--storages", kind, "--processes", "2", "--epochs", "3", "--epoch-s", "0.05"]
    command += ["--ticket-window", "8"]  # tickets issued as they are claimed (8 wait at least, not all 50)
    if kind == "postgresql":  # a fresh database on the test server, passed in the environment
        env[POSTGRES_ENV] = request.getfixturevalue("postgres_url")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    context = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, context
    ((storage, workers, done, planned, dup, left, errors),) = DONE.findall(result.stdout)
    assert (storage, int(workers)) == (kind, WORKERS), context
    assert int(done) == int(planned) == TRIALS, context  # one finished trial per ticket
    assert (int(dup), int(left), int(errors)) == (0, 0, 0), context
    # the table's row over all 50 trials: latencies measured, sampler's share within 0..100 %
    row = next(
        line for line in result.stdout.splitlines() if re.match(rf"^{kind} +{WORKERS} +{TRIALS} ", line)
    )
    values = row.split()
    assert float(values[3]) > 0 and 0 <= float(values[5].rstrip("%")) <= 100, row
    assert result.stdout.rstrip().endswith("OK"), context
