from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shrink.compression.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from shrink.compression.config import TrainConfig
from shrink.search.cli import main

from .helpers import eval_args, trained_like

SHRINK = Path(sys.executable).parent / "shrink"


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


def test_a_damaged_or_hostile_checkpoint_is_one_line_exit_2(
    tiny_config: TrainConfig, image_folder: Path, tmp_path: Path, capfd
):
    model = trained_like(tiny_config)
    cases = {
        "no-config": {"model": model.state_dict()},
        "bad-config": {"config": '{"training": {"epochs": "many"}}', "model": model.state_dict()},
        "unfit": {"config": tiny_config.model_dump_json(), "model": {"x": torch.zeros(2)}},
    }
    for name, state in cases.items():
        checkpoint = save_checkpoint(tmp_path / f"{name}.ckpt", state)
        assert main(eval_args(checkpoint, image_folder, tmp_path / f"{name}.json")) == 2, name
        err = capfd.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "checkpoint" in err or name in err, err
    hostile, zipped = tmp_path / "hostile.ckpt", tmp_path / "zipped.ckpt"
    hostile.write_bytes(pickle.dumps(Exploit(), protocol=4))  # torch warns about the protocol, in 2 lines
    torch.save({"format": "shrink-checkpoint/1", "payload": Exploit()}, zipped)
    for path in (hostile, zipped):  # in a process of its own: pytest would catch torch's warning itself
        command = [SHRINK, *eval_args(path, image_folder, tmp_path / "hostile.json")]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 2 and "code ran" not in done.stdout
        err = done.stderr
        assert err.count("\n") == 1 and "refused: it holds pickled objects" in err, err


def test_a_fifo_checkpoint_is_refused_without_blocking(tmp_path: Path):
    fifo = tmp_path / "fifo.ckpt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        load_checkpoint(fifo)
