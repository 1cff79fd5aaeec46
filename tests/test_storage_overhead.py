"""benchmarks/storage_overhead.py: a short run prints finite per-trial costs and keeps complete trials."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "storage_overhead.py"
TRIALS, EPOCHS, DEMO_TRIAL_S = 30, 2, 10.0
NUMBER = r"([-+0-9.eE]+|nan|inf)"
ROW = re.compile(
    rf"^(sqlite|journal)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x\s+{NUMBER} %\s+{NUMBER} %$"
)


def test_short_run_prints_costs_and_keeps_complete_trials(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "SHRINK_TEST_POSTGRES_URL"}
    command = [
        sys.executable,
        str(SCRIPT),
        "--trials",
        str(TRIALS),
        "--epochs",
        str(EPOCHS),
        "--demo-trial-s",
        str(DEMO_TRIAL_S),
        "--keep",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()

    rows = {match[1]: [float(v) for v in match.groups()[1:]] for match in map(ROW.match, lines) if match}
    assert set(rows) == {"sqlite", "journal"}, done.stdout
    for name, (total, per_trial, first, last, growth, share, last_share) in rows.items():
        assert math.isfinite(per_trial) and per_trial > 0, (name, per_trial)
        assert math.isclose(total, per_trial * TRIALS, rel_tol=0.01, abs_tol=0.01), (name, total, per_trial)
        assert math.isclose(share, 100 * per_trial / DEMO_TRIAL_S, rel_tol=0.01), (name, share, per_trial)
        assert math.isfinite(last) and last > 0 and first > 0, (name, first, last)
        assert math.isclose(growth, last / first, rel_tol=0.01, abs_tol=0.01), (name, growth, first, last)
        assert math.isclose(last_share, 100 * last / DEMO_TRIAL_S, rel_tol=0.01), (name, last_share, last)
    assert any(line.startswith("postgres") and "skipped (no server)" in line for line in lines), done.stdout

    storages = {
        "sqlite": f"sqlite:///{tmp_path / 'bench.db'}",
        "journal": JournalStorage(JournalFileBackend(str(tmp_path / "bench.log"))),
    }
    for name, storage in storages.items():
        trials = optuna.load_study(study_name="storage-overhead", storage=storage).get_trials()
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        assert len(complete) == TRIALS, (name, [t.state for t in trials])
        for trial in complete:
            assert [r["epoch"] for r in trial.user_attrs["epochs"]] == list(range(1, EPOCHS + 1)), name
            assert len(trial.values) == 2 and len(trial.params) == 6, (name, trial.number)
