"""Names a user gives (zoo models, family members, studies): one validator, one line when refused (issue 35).

``zoo add`` is tested in test_zoo.py (with a hypothesis test over names), ``export --bundle`` member names in
test_family_eval.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shrink.compression import zoo
from shrink.compression.bundle import BundleError
from shrink.compression.family import FAMILY_FILE, _identity, load_family, save_family
from shrink.compression.names import NAME_RULE, check_name, valid_name
from shrink.search.cli import main

from .helpers import LOW, curve, perturbed_bundle, write_spec

NAMES = ["cpu", "cpu-libjpeg", "cpu-mse", "trial-00007", "a", "A.b_c-9", "_x", "x" * 64]
NOT_NAMES = [
    "",
    ".",
    "..",
    ".x",
    "-x",
    "a b",
    "a/b",
    "a\\b",
    "a\nb",
    "a:b",
    "zoo:cpu",
    "x" * 65,
    "é",
    "\x1b[2J",
    7,
]


def test_the_validator_takes_plain_names_and_refuses_the_rest_in_one_line():
    assert all(valid_name(name) and check_name(name, "x") == name for name in NAMES)
    for name in NOT_NAMES:
        assert not valid_name(name)
        with pytest.raises(ValueError) as refused:
            check_name(name, "zoo model")
        assert "\n" not in str(refused.value) and str(refused.value).startswith(f"zoo model {name!r}")
    assert str(pytest.raises(ValueError, check_name, "y" * 5000, "study name").value) == (
        f"study name '{'y' * 80}'... is not a valid name ({NAME_RULE})"
    )


def test_every_shipped_zoo_model_has_a_valid_name():
    assert zoo.names() == ["cpu", "cpu-libjpeg", "cpu-mse"] and all(map(valid_name, zoo.names()))


@pytest.mark.parametrize("name", ["a\nb", "zoo:x", "toy study", "-x"])
def test_a_study_name_that_is_not_a_name_is_refused_before_storage_is_touched(
    name: str, image_folder: Path, tmp_path: Path, capsys
):
    spec = write_spec(tmp_path / "spec.toml", image_folder)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert main(["study", "create", str(spec), "--storage", url, f"--study-name={name}"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"shrink study: error: study name {name!r}") and error.count("\n") == 1
    assert not (tmp_path / "study.db").exists()


def test_family_member_names_use_the_same_validator(image_folder: Path, tmp_path: Path):
    bundle = perturbed_bundle(tmp_path / "b", image_folder, ratio=2, seed=1)
    with pytest.raises(BundleError, match=rf"member names must be distinct plain names \({NAME_RULE}\)"):
        save_family(tmp_path / "bad", [("two\nlines", bundle, curve("x", LOW))], test="t")
    assert not (tmp_path / "bad").exists()
    family = save_family(tmp_path / "family", [("low", bundle, curve("low", LOW))], test="t")
    document = json.loads((family / FAMILY_FILE).read_text())
    for name in ("zoo:low", [], "low low"):  # a resealed table naming a member badly, or with a list
        document["members"][0]["name"] = name
        resealed = {**document, "sha256": _identity(document["members"])}
        (family / FAMILY_FILE).write_text(json.dumps(resealed))
        with pytest.raises(BundleError, match="member names must be distinct plain names") as refused:
            load_family(family)
        assert "\n" not in str(refused.value)
