"""search/records.py: every stored attribute is named there; its records store the JSON stored before it."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import optuna
import pytest
from pydantic import ValidationError

from shrink.compression.trainer import EpochRecord
from shrink.search.pruning import PruneDecision
from shrink.search.records import (
    DECODER_MACS_ATTR,
    EPOCHS_ATTR,
    PARENT_VALUES_ATTR,
    PRUNED_ATTR,
    RD_POINT_ATTR,
    STORED_NAMES,
    DecoderOverLimit,
    EpochSummary,
    ParentValues,
    PrunedRecord,
    epochs_value,
    read_epochs,
    read_parent_values,
    read_pruned,
    read_trial_result,
)

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("search", "dashboards")
ATTR_MAPS = ("user_attrs", "system_attrs", "attrs")
# the same words, not as attributes: a CLI argument, a config field, an Optuna metric name, a table label
NOT_ATTRIBUTES = {
    ("search/cli/evaluate.py", "checkpoint"),
    ("search/refine.py", "epochs"),
    ("search/spec.py", "decoder_macs_per_pixel"),
    ("dashboards/plots.py", "pruned"),
    ("dashboards/report.py", "pruned"),
}

# what trial_runner.epoch_summary stored before records.py, one epoch of a real run's shape
STORED_EPOCH = {
    "epoch": 3,
    "step": 90,
    "seconds": 12.346,
    "dev_bpp": 0.41234567,
    "dev_msssim": 0.9512345,
    "dev_msssim_db": 13.1234,
    "dev_psnr": 29.87654,
    "dev_gain_db": 0.4321,
    "dev_rate_change": -0.1234,
    "rolled_back": False,
    "com_baseline_gain_db": None,
    "partial": False,
}
# an rd_point stored before dev_rate_change and com_baseline_gain_db existed
LATER_KEYS = ("dev_rate_change", "com_baseline_gain_db")
EARLY_POINT = {key: value for key, value in STORED_EPOCH.items() if key not in LATER_KEYS}


def _docstrings(tree: ast.AST) -> set[int]:
    bodies = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, bodies) and node.body and isinstance(node.body[0], ast.Expr)
    }


def _is_attr_map(node: ast.AST) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name in ATTR_MAPS


def _literal_keys(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals used as attribute keys: ``set_*_attr(..)``, ``x.user_attrs[..]`` / ``.get(..)`` /
    ``.. in x.user_attrs``, and dict literals given as ``user_attrs=`` / ``system_attrs=``."""
    keys: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            keys += [
                k
                for kw in node.keywords
                if kw.arg in ATTR_MAPS and isinstance(kw.value, ast.Dict)
                for k in kw.value.keys
            ]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            if name.startswith("set_") and name.endswith("_attr"):  # storage methods: (id, key, value)
                keys += node.args[1:2] if name.startswith(("set_trial_", "set_study_")) else node.args[:1]
            if name == "get" and _is_attr_map(node.func.value):
                keys += node.args[:1]
        elif isinstance(node, ast.Subscript) and _is_attr_map(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and any(_is_attr_map(c) for c in node.comparators):
            keys.append(node.left)
    return [(k.lineno, k.value) for k in keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]


def stray_literals(source: str, relative: str) -> list[str]:
    """Where ``source`` names a stored attribute with a literal instead of a records.py constant."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = [f"{relative}:{line}: {value!r} used as an attribute key" for line, value in _literal_keys(tree)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in STORED_NAMES and (relative, node.value) not in NOT_ATTRIBUTES:
                found.append(f"{relative}:{node.lineno}: {node.value!r} is a stored attribute's name")
    return sorted(set(found))


def test_no_stored_attribute_literal_outside_records():
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative != "search/records.py":
                found += stray_literals(path.read_text(encoding="utf-8"), relative)
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        'trial.set_user_attr("rd_point", point)',
        'storage.set_trial_user_attr(trial_id, "whatever_new", 1)',
        'value = trial.user_attrs.get("some_new_key")',
        'value = trial.system_attrs["retry_history"]',
        'found = "run_dir" in trial.user_attrs',
        'trial = create_trial(user_attrs={"brand_new": 1})',
        'NAME = "prune_reason"',
    ],
)
def test_the_scan_finds_a_stray_literal(source: str):
    assert stray_literals(source, "search/example.py")


def test_a_value_or_an_attribute_constant_is_no_stray_literal():
    source = 'trial.set_user_attr(FAIL_REASON_ATTR, "interrupted")\nstorage.set_trial_user_attr(1, KEY, "x")'
    assert stray_literals(source, "search/example.py") == []


def test_every_stored_name_is_distinct():
    import shrink.search.records as records

    constants = [value for name, value in vars(records).items() if name.endswith("_ATTR")]
    assert len(constants) == len(set(constants)) == len(STORED_NAMES)


def _record(**changes) -> EpochRecord:
    fields = dict(STORED_EPOCH, turns=["rec"], lr_com=1e-4, lr_rec=1e-3, loss_rec=0.1, loss_com=0.2)
    fields.update(train_bpp=0.5, dev_points=[{"quality": 50}], seconds=12.3456, **changes)
    return EpochRecord(**fields)


def test_an_epoch_summary_serialises_as_before():
    summary = EpochSummary.of(_record()).model_dump()
    assert json.dumps(summary) == json.dumps(STORED_EPOCH)  # same keys, order, values (seconds rounded)
    later = {**STORED_EPOCH, "epoch": 4, "partial": True}
    assert epochs_value([_record(), _record(epoch=4, partial=True)])[1] == later


def test_stored_epochs_read_back_old_and_new():
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={EPOCHS_ATTR: [EARLY_POINT, STORED_EPOCH, {**STORED_EPOCH, "epoch": 4, "partial": True}]},
    )
    old, new = read_epochs(trial)
    assert old.dev_rate_change is None and old.com_baseline_gain_db is None
    assert old.dev_bpp == EARLY_POINT["dev_bpp"]
    assert new.model_dump() == STORED_EPOCH
    assert [e.epoch for e in read_epochs(trial, partial=True)] == [3, 3, 4]
    with pytest.raises(ValidationError):
        EpochSummary(**STORED_EPOCH, dev_unknown=1.0)  # extra="forbid": a misspelt key is an error


def test_a_trial_result_reads_an_early_rd_point_and_its_decoder_cost():
    distribution = optuna.distributions.IntDistribution(20, 80)
    trial = optuna.trial.create_trial(
        values=[0.4, 0.95],
        params={"codec.quality": 40},
        distributions={"codec.quality": distribution},
        user_attrs={RD_POINT_ATTR: EARLY_POINT, DECODER_MACS_ATTR: 1234.5},
    )
    result = read_trial_result(trial)
    assert (result.bpp, result.msssim, result.gain_db) == (0.41234567, 0.9512345, 0.4321)
    assert result.rate_change is None and result.decoder_macs_per_pixel == 1234.5
    assert result.params == {"codec.quality": 40}
    assert read_trial_result(optuna.trial.create_trial(values=[0.4, 0.95])) is None


def test_verdict_records_serialise_as_before():
    decision = PruneDecision("gain-halving", 1, 3, -0.41, -0.12, 7)
    trial = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={
            PRUNED_ATTR: decision.to_dict(),
            PARENT_VALUES_ATTR: {"values": [0.4, 0.9], "dev_gain_db": 0.3},
        },
    )
    assert json.dumps(PrunedRecord(**decision.to_dict()).model_dump()) == json.dumps(decision.to_dict())
    assert read_pruned(trial).reason == decision.reason()
    assert read_parent_values(trial) == ParentValues(values=[0.4, 0.9], dev_gain_db=0.3)
    assert ParentValues(values=None, dev_gain_db=None).model_dump() == {"values": None, "dev_gain_db": None}
    over = DecoderOverLimit(decoder_macs_per_pixel=812.5, max=500.0)
    assert json.dumps(over.model_dump()) == json.dumps({"decoder_macs_per_pixel": 812.5, "max": 500.0})
