"""Tickets issued lazily (search/budget.py): on a database a study keeps a window of WAITING tickets, each
claim issues the next under the study row's lock, and the budget stays exact however many claim at once;
directly, through a gRPC proxy, and on a journal (which gets every ticket at create)."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState

from shrink.search.budget import BudgetSpent, issue_tickets, ticket_window, tickets_left
from shrink.search.records import TICKET_ATTR
from shrink.search.storage import open_storage, storage_of, study_id_of

from .conftest import grpc_proxy

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
WAITING, RUNNING = TrialState.WAITING, TrialState.RUNNING


def worker_study(url: str, **storage_args) -> optuna.Study:
    storage = open_storage(url, **storage_args)
    storage.serve_worker(lambda line: None)
    return optuna.load_study(study_name="s", storage=storage)


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(WAITING,)))


def indices(study: optuna.Study) -> list[int]:
    return sorted(t.system_attrs[TICKET_ATTR] for t in study.get_trials(deepcopy=False))


@pytest.fixture(params=["sqlite", "postgresql", "grpc"])
def url(request, tmp_path):
    """A database reached directly (SQLite, PostgreSQL), or through a gRPC proxy in front of SQLite."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    database = f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "sqlite":
        return database
    proxied = grpc_proxy(database)
    request.addfinalizer(lambda: proxied.__exit__(None, None, None))
    return proxied.__enter__()


def test_each_claim_issues_the_next_ticket_and_the_budget_stays_exact(url):
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    assert issue_tickets(study, 7, window=3) == 3
    assert waiting(study) == 3 and tickets_left(study) == 7
    worker = worker_study(url, heartbeat_interval=None)
    for claimed in range(1, 8):
        trial = worker.ask()
        worker.tell(trial, 1.0)
        assert waiting(study) == min(3, 7 - claimed), claimed  # topped up by the claim (or by its proxy)
        assert tickets_left(study) == 7 - claimed
    with pytest.raises(BudgetSpent):
        worker.ask()
    assert indices(study) == list(range(7)) and ticket_window(study).issued == 7


def test_claims_at_once_issue_every_ticket_once(url):
    """Eight workers claim a 40-ticket budget through a window of 2 at the same time: each index is
    issued and trained once. (Without the study row's lock in top_up_tickets, PostgreSQL issues some
    twice.)"""
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    issue_tickets(study, 40, window=2)
    errors: list[BaseException] = []

    def claim_until_spent() -> None:
        worker = worker_study(url, heartbeat_interval=None)
        storage = storage_of(worker)
        try:
            while tickets_left(worker):
                try:
                    worker.tell(worker.ask(), 1.0)
                except BudgetSpent:  # another took the last WAITING one; top up (the worker's own step)
                    storage.top_up_tickets(study_id_of(worker))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=claim_until_spent) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE] * 40
    assert indices(study) == list(range(40))


def test_the_window_grows_to_the_running_trials(tmp_path):
    """As many tickets wait as trials run (as many as the workers at hand may claim at once), and at least
    the window."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    issue_tickets(study, 20, window=2)
    worker = worker_study(url, heartbeat_interval=None)
    for running in range(1, 6):
        worker.ask()
        assert waiting(study) == max(2, running), running
    assert ticket_window(study).issued == 10  # 5 running, 5 waiting


def test_a_journal_gets_every_ticket_at_create(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    assert issue_tickets(study, 7, window=3) == 7
    assert waiting(study) == 7 and ticket_window(study) is None


def test_fixed_tickets_are_issued_at_create_whatever_the_window(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    fixed = [({"x": float(i)}, {"why": f"ticket {i}"}) for i in range(4)]
    assert issue_tickets(study, 6, fixed, window=2) == 4
    trials = study.get_trials(deepcopy=False)
    assert [t.user_attrs["why"] for t in trials] == [f"ticket {i}" for i in range(4)]
    assert ticket_window(study).issued == 4 and tickets_left(study) == 6


def test_a_proxy_tops_up_at_start_what_a_dead_one_left(tmp_path):
    """A claim whose top-up was lost (the proxy died between them) leaves the window short: the next
    proxy to start on the database issues what is missing."""
    database = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(database, heartbeat_interval=None))
    issue_tickets(study, 5, window=2)
    plain = optuna.load_study(study_name="s", storage=open_storage(database, heartbeat_interval=None))
    plain.ask()  # claimed by a storage that does not top up: what a lost top-up leaves
    assert waiting(study) == 1
    with grpc_proxy(database):
        assert waiting(study) == 2 and ticket_window(study).issued == 3


def test_a_claim_records_the_trials_first_heartbeat(tmp_path):
    """The claim itself beats: a worker killed before Optuna's heartbeat thread starts leaves a trial the
    stale check can fail (one that never beat is never stale)."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url, heartbeat_interval=None))
    issue_tickets(study, 2)
    worker = worker_study(url, heartbeat_interval=30, grace_period=60)
    trial = worker.ask()  # no heartbeat thread: only the claim can have beaten
    ages = storage_of(worker).heartbeat_ages(study_id_of(worker))
    assert list(ages) == [trial._trial_id] and 0 <= ages[trial._trial_id] < 30
