from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from shrink.compression.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


class Exploit:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_round_trip_with_versions(tmp_path: Path):
    path = save_checkpoint(tmp_path / "a.ckpt", {"weights": torch.arange(3), "step": 7})
    state = load_checkpoint(path)
    assert state["step"] == 7 and torch.equal(state["weights"], torch.arange(3))
    assert state["versions"]["torch"] == str(torch.__version__)


def test_truncated_checkpoint_is_refused(tmp_path: Path):
    path = save_checkpoint(tmp_path / "a.ckpt", {"weights": torch.zeros(1000)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(path)


def test_pickled_objects_are_never_executed(tmp_path: Path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"format": "shrink-checkpoint/1", "payload": Exploit()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        load_checkpoint(plain)


def test_foreign_checkpoint_is_refused(tmp_path: Path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a shrink checkpoint"):
        load_checkpoint(path)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path):
    path = save_checkpoint(tmp_path / "a.ckpt", {"step": 1})

    class Unsaveable:
        pass

    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises, the old file must survive
        save_checkpoint(path, {"step": 2, "bad": Unsaveable()})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt"]
