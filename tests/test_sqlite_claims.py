"""Processes popping re-queued (WAITING) trials from one SQLite study: each is claimed exactly once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.trial import TrialState

from shrink.search.storage import open_storage

POP = """
import json, sys, optuna
from optuna.trial import TrialState
from shrink.search.storage import open_storage
study = optuna.load_study(study_name="s", storage=open_storage(sys.argv[1], heartbeat_interval=None))
claimed = []
while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
    claimed.append(study.ask().number)
print(json.dumps(claimed))
"""


def test_each_waiting_trial_is_claimed_by_exactly_one_process(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    waiting = 60
    for value in range(waiting):
        study.enqueue_trial({"x": value})
    script = tmp_path / "pop.py"
    script.write_text(POP)
    workers = [
        subprocess.Popen([sys.executable, "-P", str(script), url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    claims = [number for worker in workers for number in json.loads(worker.communicate(timeout=120)[0])]
    requeued = sorted(number for number in claims if number < waiting)  # later numbers: asked after the race
    assert requeued == list(range(waiting))  # none twice, none missed
    states = [t.state for t in optuna.load_study(study_name="s", storage=url).trials[:waiting]]
    assert states == [TrialState.RUNNING] * waiting
