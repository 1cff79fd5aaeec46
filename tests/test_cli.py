from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shrink.search.cli import main

from .conftest import tiny_config_dict


def write_toml(path: Path, data: dict) -> Path:
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [
                f"{k} = {{ {', '.join(f'{a} = {value(b)}' for a, b in v.items())} }}"
                if isinstance(v, dict)
                else f"{k} = {value(v)}"
                for k, v in table.items()
            ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_dispatcher_usage_and_unknown_command(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_console_script_is_installed():
    script = shutil.which("shrink") or str(Path(sys.executable).parent / "shrink")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "baselines" in result.stdout


@pytest.mark.slow
def test_train_eval_baselines_bdrate_end_to_end(image_folder: Path, tmp_path: Path, capsys):
    config = write_toml(tmp_path / "tiny.toml", tiny_config_dict(image_folder))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--set", "training.epochs=1", "--out", str(out)]) == 0
    assert "jpeg @bpp" in capsys.readouterr().out
    assert (out / "last.ckpt").is_file() and (out / "best.ckpt").is_file()

    curve_json = tmp_path / "model.json"
    args = ["eval", str(out / "last.ckpt"), "--data", str(image_folder), "--qualities", "20", "50", "80"]
    assert main([*args, "--json", str(curve_json)]) == 0
    curve = json.loads(curve_json.read_text())["curves"]["shrink"]
    assert [p["quality"] for p in curve["points"]] == [20, 50, 80]
    assert len(curve["per_image"]) == 9

    base_json = tmp_path / "base.json"
    assert main(["baselines", "--data", str(image_folder), "--codecs", "jpeg", "--json", str(base_json)]) == 0
    assert set(json.loads(base_json.read_text())["curves"]) == {"jpeg", "down2-jpeg"}
    capsys.readouterr()
    assert main(["bdrate", str(base_json), str(curve_json)]) == 0
    assert "shrink" in capsys.readouterr().out

    assert (
        main(["train", "--config", str(config), "--set", "training.epochs=2", "--out", str(out), "--resume"])
        == 0
    )
    assert "resumed from" in capsys.readouterr().out


def test_bad_config_exits_2_with_one_line_and_writes_nothing(image_folder: Path, tmp_path: Path, capsys):
    data = tiny_config_dict(image_folder)
    data["training"]["epochz"] = 1
    config = write_toml(tmp_path / "bad.toml", data)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "training.epochz" in err
    assert not out.exists()
    assert main(["train", "--config", str(config), "--set", "nonsense", "--out", str(out)]) == 2


def test_bad_files_exit_2(tmp_path: Path, image_folder: Path, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"\x00" * 64)
    assert main(["eval", str(broken), "--data", str(image_folder), "--json", str(tmp_path / "x.json")]) == 2
    assert "broken.ckpt" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
    assert main(["baselines", "--data", str(tmp_path / "absent"), "--json", str(tmp_path / "b.json")]) == 2
    not_json = tmp_path / "curve.json"
    not_json.write_text("{")
    assert main(["bdrate", str(not_json), str(not_json)]) == 2
    assert main(["train", "--out", str(tmp_path)]) == 2  # missing --config
