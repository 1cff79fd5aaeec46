"""ShrinkStorage: one wrapper around Optuna's storage, by delegation (as Optuna's _CachedStorage wraps
RDBStorage), instead of methods patched in place; Optuna's private names in search/storage.py only."""

from __future__ import annotations

import ast
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.storages import BaseStorage, _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState

from shrink.search.storage import BudgetSpent, ShrinkStorage, open_storage, storage_of, study_id_of

REPO = Path(__file__).resolve().parents[1]
LIBRARY = [*sorted((REPO / "search").rglob("*.py")), *sorted((REPO / "dashboards").rglob("*.py"))]
OPTUNA_PRIVATE_ATTRS = {
    "_storage", "_study_id", "_trial_id", "_backend", "_get_stale_trial_ids", "_get_prepared_new_trial",
    "_create_scoped_session", "_validate",
}  # fmt: skip


class FlakyCache(_CachedStorage):
    """Optuna's cached RDB storage whose get_all_trials loses its connection ``failures`` times."""

    def __init__(self, cached: _CachedStorage, failures: int):
        super().__init__(cached._backend)
        self.failures = failures

    def get_all_trials(self, *args, **kwargs):
        if self.failures:
            self.failures -= 1
            raise sqlalchemy.exc.OperationalError("SELECT", {}, ConnectionRefusedError("server restarting"))
        return super().get_all_trials(*args, **kwargs)


def sqlite_storage(tmp_path: Path) -> ShrinkStorage:
    return open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=None)


def test_every_abstract_storage_method_is_the_wrappers_own():
    abstract = BaseStorage.__abstractmethods__ | BaseHeartbeat.__abstractmethods__
    assert not ShrinkStorage.__abstractmethods__
    inherited = sorted(name for name in abstract if name not in vars(ShrinkStorage))
    assert not inherited, f"ShrinkStorage inherits, not delegates: {inherited}"


def test_optuna_studies_run_on_the_wrapper_and_a_second_connection_sees_them(tmp_path: Path):
    storage = sqlite_storage(tmp_path)
    assert isinstance(storage, ShrinkStorage)
    study = optuna.create_study(study_name="s", storage=storage, directions=["minimize", "maximize"])
    assert storage_of(study) is storage
    study.optimize(lambda trial: (trial.suggest_float("x", 0, 1), 1.0), n_trials=3)
    again = optuna.load_study(study_name="s", storage=sqlite_storage(tmp_path))
    assert [t.state for t in again.get_trials()] == [TrialState.COMPLETE] * 3
    assert [t.params for t in again.get_trials()] == [t.params for t in study.get_trials()]


def test_a_worker_retries_a_lost_connection_and_others_see_the_error(tmp_path: Path):
    base = sqlite_storage(tmp_path)
    study_id = base.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    plain = ShrinkStorage(FlakyCache(base._inner, failures=1), base.url)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        plain.get_all_trials(study_id)
    served, log = ShrinkStorage(FlakyCache(base._inner, failures=1), base.url), []
    served.serve_worker(log.append)
    assert served.get_all_trials(study_id) == []
    assert len(log) == 1 and "get_all_trials failed" in log[0] and "retry 1" in log[0]


def test_a_served_worker_gets_no_trial_beyond_the_tickets_but_retries_keep_theirs(tmp_path: Path):
    storage = sqlite_storage(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"x": 0.5})
    storage.serve_worker(lambda line: None)
    trial = study.ask()  # the enqueued (ticketed) trial is claimed, not created
    assert trial.suggest_float("x", 0, 1) == 0.5
    study.tell(trial, 1.0)
    with pytest.raises(BudgetSpent):
        study.ask()
    retry = optuna.trial.create_trial(state=TrialState.WAITING)
    storage.create_new_trial(study_id_of(study), retry)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE, TrialState.WAITING]


def library_sources() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), str(path))) for path in LIBRARY]


def test_no_module_patches_a_storage_with_setattr():
    patched = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for path, tree in library_sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr"
    ]
    assert not patched, f"setattr calls (wrap by delegation instead): {patched}"


def test_optuna_private_names_appear_in_search_storage_only():
    stray = []
    for path, tree in library_sources():
        if path == REPO / "search" / "storage.py":
            continue
        for node in ast.walk(tree):
            private_import = (
                isinstance(node, ast.ImportFrom)
                and "._" in f".{node.module or ''}"
                and ((node.module or "").startswith("optuna"))
            )
            private_attr = isinstance(node, ast.Attribute) and node.attr in OPTUNA_PRIVATE_ATTRS
            if private_import or private_attr:
                stray.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not stray, f"Optuna private names outside search/storage.py: {stray}"
