"""The budget as claim tickets, `shrink trial`'s verdicts (pruned, over budget, another space), live PRUNED
trials from both kinds of pruner, and storage calls whose commit went through but whose answer was lost."""

from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.distributions import IntDistribution
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from shrink.search.budget import OVER_BUDGET, BudgetSpent
from shrink.search.cli import main
from shrink.search.records import TICKET_ATTR
from shrink.search.space import distributions
from shrink.search.spec import load_spec
from shrink.search.storage import ShrinkStorage, heartbeat_enabled, open_storage
from shrink.search.study import attach, create
from shrink.search.trial_runner import original_number
from shrink.search.worker import Worker

from .helpers import load, storage_url, write_spec

# study.ask() on a storage with a heartbeat: Optuna reminds us that only optimize() beats.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
COMPLETE, FAIL, PRUNED, RUNNING, WAITING = (
    TrialState[name] for name in ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")
)
# An epoch record far better than any toy trial: tiny bpp, MS-SSIM near 1, +50 dB over JPEG.
UNBEATABLE = {"epoch": 1, "dev_bpp": 0.01, "dev_msssim": 0.999, "dev_gain_db": 50.0, "partial": False}


def study_trial_args(url: str, number: int) -> list[str]:
    return ["trial", "--storage", url, "--study-name", "toy", "--trial-number", str(number)]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_create_issues_one_waiting_ticket_per_trial_and_a_worker_never_creates_one(
    kind, tmp_path, image_folder
):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=3)
    url = storage_url(kind, tmp_path)
    handle = create(load_spec(spec), url)
    trials = load(url).trials
    assert [t.state for t in trials] == [WAITING] * 3
    assert [t.system_attrs[TICKET_ATTR] for t in trials] == [0, 1, 2]
    worker_handle = attach(url, "toy")
    Worker(worker_handle, tmp_path / "runs", log=lambda line: None)  # installs the refusal
    for _ in range(3):
        worker_handle.study.ask()  # the three tickets
    with pytest.raises(BudgetSpent):
        worker_handle.study.ask()
    assert len(load(url).trials) == 3  # no row was written for the refused trial
    assert handle.study.study_name == "toy"


def test_shrink_trial_fails_a_trial_beyond_the_budget_and_one_asked_in_another_space(
    tmp_path, image_folder, capsys
):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2)
    url = storage_url("sqlite", tmp_path)
    study = create(load_spec(spec), url).study
    other = study.ask({"codec.quality": IntDistribution(10, 90, step=10)})  # pops ticket 0
    fitting = study.ask(distributions(load_spec(spec)))  # pops ticket 1
    beyond = study.ask()  # no ticket left: `optuna ask` creates a trial
    capsys.readouterr()
    assert main(study_trial_args(url, beyond.number)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"trial {beyond.number} is beyond the study's budget of 2 trials" in err
    assert main(study_trial_args(url, other.number)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "codec.quality (asked IntDistribution(high=90" in err
    trials = load(url).trials
    assert trials[beyond.number].state == FAIL and trials[other.number].state == FAIL
    assert trials[beyond.number].user_attrs["fail_reason"].startswith(OVER_BUDGET)
    assert trials[other.number].user_attrs["fail_reason"].startswith("search space differs")
    assert trials[fitting.number].state == RUNNING  # untouched


def add_unbeatable_trials(study: optuna.Study, count: int, mode: str) -> None:
    """Finished peers far ahead at epoch 1, so a live toy trial is the one to prune there."""
    for _ in range(count):
        values = [UNBEATABLE["dev_bpp"], UNBEATABLE["dev_msssim"]] if mode == "multi" else [50.0]
        study.add_trial(
            optuna.trial.create_trial(
                values=values,
                user_attrs={"epochs": [UNBEATABLE]},
                intermediate_values={1: 50.0, 2: 50.0, 3: 50.0},
            )
        )


def test_worker_trial_is_pruned_live_by_pareto_halving(tmp_path, image_folder):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, epochs=3, pruner="pareto-halving")
    url = storage_url("sqlite", tmp_path)
    handle = create(load_spec(spec), url)
    add_unbeatable_trials(handle.study, 2, "multi")
    logged: list[str] = []
    result = Worker(attach(url, "toy"), tmp_path / "runs", log=logged.append).run()
    assert result.exit_code == 0 and list(result.trials.values()) == ["PRUNED"], logged
    ticket = load(url).trials[0]
    assert ticket.state == PRUNED
    assert ticket.user_attrs["pruned"]["epoch"] == 1 and len(ticket.user_attrs["epochs"]) == 1
    assert "Pareto front 1 > worst kept front 0" in ticket.user_attrs["prune_reason"]


def test_shrink_trial_tell_stores_a_trial_the_median_pruner_prunes_as_pruned(tmp_path, image_folder, capsys):
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=1, epochs=3, mode="gain", pruner="median")
    spec.write_text(spec.read_text().replace("min_peers = 2", "min_peers = 1"))
    url = storage_url("sqlite", tmp_path)
    study = create(load_spec(spec), url).study
    add_unbeatable_trials(study, 1, "gain")
    asked = study.ask(distributions(load_spec(spec)))
    capsys.readouterr()
    assert main([*study_trial_args(url, asked.number), "--tell"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "state pruned" and "median pruner at epoch 1" in err
    trial = load(url).trials[asked.number]
    assert trial.state == PRUNED and list(trial.intermediate_values) == [1]
    assert "fail_reason" not in trial.user_attrs


class LostAnswers:
    """RDBStorage calls that, once armed, commit and then fail with a lost connection (the answer is lost)."""

    def __init__(self, monkeypatch, wanted: dict[str, callable], owner: type = RDBStorage):
        self.armed, self.failed = False, []
        self.wanted = wanted
        for name in wanted:
            monkeypatch.setattr(owner, name, self._after(name, getattr(owner, name)))

    def _after(self, name, method):
        def after_commit(storage, *args, **kwargs):
            result = method(storage, *args, **kwargs)
            label = self.wanted[name](*args, **kwargs)
            if self.armed and label and label not in self.failed:
                self.failed.append(label)
                lost = sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed connection"))
                raise optuna.exceptions.StorageInternalError("An exception is raised during commit") from lost
            return result

        return after_commit


def test_calls_whose_answer_is_lost_after_commit_are_not_repeated_and_strand_nothing(
    tmp_path, image_folder, monkeypatch
):
    """The claim of ticket 0, the creation of its retry and the tell of ticket 1 each commit, then lose
    their connection: the worker lives, ticket 0 is re-queued once (no duplicate row), each trial completes
    once."""
    spec = write_spec(tmp_path / "toy.toml", image_folder, n_trials=2, epochs=1, steps=1)
    url = storage_url("sqlite", tmp_path)
    create(load_spec(spec), url)

    def state_label(trial_id, state, values=None):
        return {RUNNING: "claim", COMPLETE: "tell"}.get(state)

    lost = LostAnswers(monkeypatch, {"set_trial_state_values": state_label})
    # the retry's add: one transaction that looks for a retry first (a repeat finds the committed one)
    lost_retry = LostAnswers(monkeypatch, {"_add_retry_once": lambda *a, **k: "create"}, ShrinkStorage)
    logged: list[str] = []
    worker = Worker(attach(url, "toy", heartbeat=(1, 2)), tmp_path / "runs", log=logged.append)
    lost.armed = lost_retry.armed = True
    result = worker.run()
    out = "\n".join(logged)
    assert sorted(lost.failed + lost_retry.failed) == ["claim", "create", "tell"], out
    assert result.exit_code == 0, out
    trials = load(url).trials
    assert [t.state for t in trials] == [FAIL, COMPLETE, COMPLETE], out  # 0 stranded, failed as stale
    assert original_number(trials[2]) == 0 and trials[2].system_attrs[TICKET_ATTR] == 0  # re-queued once
    assert "claim of trial 0 unsure" in out and out.count("not repeated") == 2
    assert "add_retry failed" in out, out
    assert "fail_reason" not in trials[1].user_attrs and "fail_reason" not in trials[2].user_attrs


def test_open_storage_gives_the_journal_a_heartbeat(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.log'}", heartbeat_interval=1, grace_period=2)
    assert storage.get_heartbeat_interval() == 1
    assert not heartbeat_enabled(open_storage(f"journal:{tmp_path / 't.log'}", heartbeat_interval=None))


def test_tickets_issued_twice_by_workers_adopting_one_study_at_once_are_dropped(tmp_path, image_folder):
    from shrink.search.budget import drop_duplicate_tickets, issue_tickets

    url = storage_url("sqlite", tmp_path)
    study = optuna.create_study(storage=open_storage(url), study_name="toy", directions=["minimize"])
    study.ask()  # asked before any spec: it holds a ticket
    assert issue_tickets(study, 3) == 2 and issue_tickets(study, 3) == 0
    for index in (1, 2):  # what a second adopter, racing the first, would add
        study.add_trial(optuna.trial.create_trial(state=WAITING, system_attrs={TICKET_ATTR: index}))
    assert drop_duplicate_tickets(study) == 2 and drop_duplicate_tickets(study) == 0
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [RUNNING, WAITING, WAITING, FAIL, FAIL]
    assert [t.system_attrs[TICKET_ATTR] for t in trials] == [-1, 1, 2, 1, 2]
    assert trials[3].user_attrs["fail_reason"] == "ticket 1 issued twice"
