from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shrink.search.cli import main

from .conftest import tiny_config_dict
from .helpers import write_toml


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


# ---- bad input: one line on stderr, exit 2, nothing written -----------------------------------------------


def one_line_error(capsys) -> str:
    """The command's stderr, asserted to be exactly one line and no traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_train_with_cuda_on_a_machine_without_it_exits_2_before_writing(
    image_folder: Path, tmp_path: Path, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = write_toml(tmp_path / "tiny.toml", tiny_config_dict(image_folder))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--set", "device.device=cuda", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert err == "shrink train: error: device.device = 'cuda' but CUDA is not available on this machine"
    assert not out.exists()


def test_bdrate_on_a_scalar_or_pointless_curves_exits_2_naming_the_file(tmp_path: Path, capsys):
    files = {
        "scalar.json": ("3", "neither a curves file nor a single curve (it holds a number)"),
        "empty.json": ('{"curves": {"jpeg": {"points": []}}}', "curve 'jpeg' has no points"),
        "bare.json": ('{"name": "mine", "points": []}', "curve 'mine' has no points"),
        "none.json": ('{"curves": {}}', "no curves"),
    }
    for name, (text, _) in files.items():
        (tmp_path / name).write_text(text)
    before = sorted(tmp_path.iterdir())
    for name, (_, message) in files.items():
        path = tmp_path / name
        assert main(["bdrate", str(path), str(path)]) == 2
        assert capsys.readouterr().out == ""  # refused before the table's header
        assert main(["bdrate", str(path), str(path)]) == 2
        assert one_line_error(capsys) == f"shrink bdrate: error: {path}: {message}"
    assert sorted(tmp_path.iterdir()) == before


def test_dashboard_on_a_port_in_use_exits_2_naming_the_port(tmp_path: Path, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        storage = f"sqlite:///{tmp_path / 'study.db'}"
        assert main(["dashboard", "--storage", storage, "--port", str(port)]) == 2
    err = one_line_error(capsys)
    assert (
        err
        == f"shrink dashboard: error: port {port} on 127.0.0.1 is already in use (pick another with --port)"
    )
    assert list(tmp_path.iterdir()) == []  # no storage file, no artifact folder


def test_unwritable_output_paths_exit_2_naming_the_path(
    image_folder: Path, tmp_path: Path, capsys, monkeypatch
):
    # tests run as root, whom chmod does not stop: a path below a regular file cannot be written by anyone
    blocker = tmp_path / "afile"
    blocker.write_text("")
    config = write_toml(tmp_path / "tiny.toml", tiny_config_dict(image_folder))
    storage = ["--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "s"]
    image = str(next(image_folder.iterdir()))
    bundle = str(tmp_path / "bundle")
    commands = [  # (the option argparse names, the command line without the path)
        ("--out", ["train", "--config", str(config), "--out"]),
        ("--json", ["eval", str(tmp_path / "x.ckpt"), "--data", str(image_folder), "--json"]),
        ("--json", ["baselines", "--data", str(image_folder), "--json"]),
        ("--out", ["export", *storage, "--pareto", "--out"]),
        ("-o/--output", ["compress", image, "--model", bundle, "-o"]),
        ("-o/--output", ["decompress", str(tmp_path / "x.jpg"), "--model", bundle, "-o"]),
        ("--out", ["report", *storage, "--out"]),
    ]
    before = sorted(tmp_path.iterdir())
    for option, argv in commands:
        target = blocker / "sub" / "out.png"
        assert main([*argv, str(target)]) == 2, argv
        err = one_line_error(capsys)
        assert err == (
            f"shrink {argv[0]}: error: argument {option}: cannot write {target}: {blocker} is not a directory"
        )
    assert (
        main(["report", *storage, "--out", str(tmp_path / "r.html"), "--cache", str(blocker / "c.json")]) == 2
    )
    assert one_line_error(capsys).endswith(f"cannot write {blocker / 'c.json'}: {blocker} is not a directory")
    assert sorted(tmp_path.iterdir()) == before  # no output, no storage file

    # a folder without write permission (what os.access reports for a non-root user on a 0555 folder)
    monkeypatch.setattr("shrink.search.cli._common.os.access", lambda path, mode: False)
    assert main(["baselines", "--data", str(image_folder), "--json", str(tmp_path / "b.json")]) == 2
    assert one_line_error(capsys).endswith(
        f"cannot write {tmp_path / 'b.json'}: no permission to write in {tmp_path}"
    )
    assert not (tmp_path / "b.json").exists()


def test_a_permission_error_while_running_is_one_line_exit_2(capsys):
    from shrink.search.cli._common import ArgumentParser, run_command

    def run(args):
        raise PermissionError(13, "Permission denied", "/data/out.json")

    assert run_command(ArgumentParser(prog="shrink x"), run, []) == 2
    assert one_line_error(capsys) == "shrink x: error: /data/out.json: Permission denied"


def test_launch_refuses_missing_malformed_and_absent_gpu_ids(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setattr("shrink.search.cli.launch.cuda_device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    storage = ["--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "s"]
    malformed = "is neither a non-negative integer nor a GPU UUID (GPU-... or MIG-...)"
    refusals = {
        ",": "no GPU ids in --gpus ','",
        "0,x": f"--gpus '0,x': GPU id 'x' {malformed}",
        "-1": f"--gpus '-1': GPU id '-1' {malformed}",
        "0,2": "--gpus '0,2': GPU id 2 is out of range: torch sees 2 CUDA devices (0..1)",
    }
    for gpus, message in refusals.items():
        assert main(["launch", *storage, f"--gpus={gpus}"]) == 2
        assert one_line_error(capsys) == f"shrink launch: error: {message}"
        assert capsys.readouterr().out == ""  # no worker started
    assert list(tmp_path.iterdir()) == []

    from shrink.search.launch import parse_gpus

    assert parse_gpus("0, 1,", 2) == ["0", "1"]
    assert parse_gpus("1,01", 2) == ["1", "1"]  # one GPU twice: two workers on it
    assert parse_gpus("GPU-5e1c3b2a-0f1d,MIG-GPU-5e1c3b2a/1/0", 0) == [
        "GPU-5e1c3b2a-0f1d",
        "MIG-GPU-5e1c3b2a/1/0",
    ]
    assert parse_gpus("7", None) == ["7"]  # device count unknown


def test_launch_limits_each_workers_threads_to_its_share_of_the_cores(capsys, monkeypatch):
    import shrink.search.launch as launcher

    assert launcher.thread_limits(4, {}, cores=8)[0] == {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    assert launcher.thread_limits(16, {}, cores=8)[0] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert launcher.thread_limits(2, {"MKL_NUM_THREADS": "5"}, cores=8)[0] == {"OMP_NUM_THREADS": "4"}
    kept, note = launcher.thread_limits(2, {"OMP_NUM_THREADS": "3"}, cores=8)
    assert kept == {} and note == "launch: 2 workers, OMP_NUM_THREADS=3 each (from the environment)"

    # two real worker processes (a stand-in command): the limit reaches them and torch runs that many threads
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(launcher, "cpu_cores", lambda: 2)  # torch caps its threads at the real cores here
    probe = "import os, torch; print(os.environ['OMP_NUM_THREADS'], os.environ['MKL_NUM_THREADS'], "
    probe += "torch.get_num_threads())"
    monkeypatch.setattr(launcher, "worker_command", lambda args, index: [sys.executable, "-c", probe])
    monkeypatch.delenv("SHRINK_CODEC_THREADS", raising=False)
    assert launcher.launch([], launcher.spread_slots(2, 0)) == 0
    out = capsys.readouterr().out
    assert (
        out.splitlines()[0]
        == "launch: 2 workers on 2 CPU cores, 1 thread each (OMP_NUM_THREADS; set it to override)"
    )
    assert "[w0] 1 1 1" in out and "[w1] 1 1 1" in out  # torch alone would run one thread per core


def launched_workers(monkeypatch, capsys, argv: list[str], gpus: int, cores: int = 4) -> tuple[str, dict]:
    """``shrink launch ARGV`` with ``gpus`` CUDA devices and ``cores`` cores, each worker a stand-in printing
    its environment: (the first line, {prefix: (index, CUDA_VISIBLE_DEVICES, SHRINK_CODEC_THREADS)})."""
    import shrink.search.launch as launcher

    monkeypatch.setattr("shrink.search.cli.launch.cuda_device_count", lambda: gpus)
    monkeypatch.setattr(launcher, "cpu_cores", lambda: cores)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    probe = "import os, sys; env = os.environ.get; "
    probe += "print(sys.argv[1], env('CUDA_VISIBLE_DEVICES'), env('SHRINK_CODEC_THREADS'))"
    command = lambda args, index: [sys.executable, "-c", probe, str(index)]  # noqa: E731
    monkeypatch.setattr(launcher, "worker_command", command)
    assert main(["launch", "--storage", "sqlite:///unused.db", "--study-name", "s", *argv]) == 0
    first, *lines, last = capsys.readouterr().out.splitlines()
    assert last.startswith(f"launch: {len(lines)} workers exited with codes [0")
    workers = {}
    for line in lines:
        prefix, index, device, codec_threads = line.split()
        workers[prefix] = (int(index), device, codec_threads)
    return first, workers


@pytest.fixture
def no_parent_gpus(monkeypatch):
    """A launcher started outside any CUDA_VISIBLE_DEVICES (as on this machine, not under SLURM)."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("SHRINK_CODEC_THREADS", raising=False)


def test_launch_runs_several_workers_on_one_gpu_each_with_its_own_prefix(no_parent_gpus, capsys, monkeypatch):
    argv = ["--gpus", "0,1", "--workers-per-gpu", "2"]
    first, workers = launched_workers(monkeypatch, capsys, argv, gpus=2)
    assert workers == {
        "[gpu0.0]": (0, "0", "1"),
        "[gpu0.1]": (1, "0", "1"),
        "[gpu1.0]": (2, "1", "1"),
        "[gpu1.1]": (3, "1", "1"),
    }
    assert first == (
        "launch: 4 workers on GPUs 0,0,1,1 (2 per GPU), 4 CPU cores, 1 thread each "
        "(OMP_NUM_THREADS; set it to override)"
    )
    first, workers = launched_workers(monkeypatch, capsys, ["--gpus", "0,00,1"], gpus=2)
    assert workers == {"[gpu0.0]": (0, "0", "1"), "[gpu0.1]": (1, "0", "1"), "[gpu1]": (2, "1", "1")}
    assert first.startswith("launch: 3 workers on GPUs 0,0,1 (1-2 per GPU), 4 CPU cores, 1 thread each")
    first, workers = launched_workers(monkeypatch, capsys, ["--gpus", "0,1"], gpus=2)
    assert workers == {"[gpu0]": (0, "0", "2"), "[gpu1]": (1, "1", "2")}  # one per GPU: prefixes as before
    assert first.startswith("launch: 2 workers on GPUs 0,1 (1 per GPU), 4 CPU cores, 2 threads each")


def test_launch_spreads_workers_over_the_visible_gpus_or_runs_them_on_the_cpu(
    no_parent_gpus, capsys, monkeypatch
):
    first, workers = launched_workers(monkeypatch, capsys, ["--workers", "3"], gpus=2)
    assert workers == {"[w0]": (0, "0", "1"), "[w1]": (1, "1", "1"), "[w2]": (2, "0", "1")}
    assert first.startswith("launch: 3 workers on GPUs 0,1,0 (1-2 per GPU), 4 CPU cores, 1 thread each")
    first, workers = launched_workers(monkeypatch, capsys, ["--workers", "2"], gpus=0)
    assert workers == {"[w0]": (0, "None", "2"), "[w1]": (1, "None", "2")}
    assert first == "launch: 2 workers on 4 CPU cores, 2 threads each (OMP_NUM_THREADS; set it to override)"

    storage = ["--storage", "sqlite:///unused.db", "--study-name", "s"]
    assert main(["launch", *storage, "--workers", "2", "--workers-per-gpu", "2"]) == 2
    assert one_line_error(capsys) == (
        "shrink launch: error: --workers-per-gpu goes with --gpus "
        "(--workers K spreads K workers over the GPUs)"
    )


def test_launch_ids_index_the_launchers_own_cuda_visible_devices(capsys, monkeypatch):
    monkeypatch.delenv("SHRINK_CODEC_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    first, workers = launched_workers(monkeypatch, capsys, ["--gpus", "0,2"], gpus=8)  # the list wins
    assert workers == {"[gpu0]": (0, "3", "2"), "[gpu2]": (1, "7", "2")}
    assert first.startswith(
        "launch: 2 workers on GPUs 0,2 (1 per GPU; devices 3,7 of CUDA_VISIBLE_DEVICES=3,5,7), 4 CPU cores"
    )
    _, workers = launched_workers(monkeypatch, capsys, ["--workers", "4"], gpus=3)
    assert sorted(workers.values()) == [(0, "3", "1"), (1, "5", "1"), (2, "7", "1"), (3, "3", "1")]

    storage = ["--storage", "sqlite:///unused.db", "--study-name", "s"]
    assert main(["launch", *storage, "--gpus", "3"]) == 2
    assert one_line_error(capsys) == (
        "shrink launch: error: --gpus '3': GPU id 3 is out of range: "
        "the launcher's CUDA_VISIBLE_DEVICES='3,5,7' lists 3 GPUs (0..2)"
    )
    assert capsys.readouterr().out == ""  # no worker started

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa-1,GPU-bbbb-2")
    _, workers = launched_workers(monkeypatch, capsys, ["--gpus", "1,GPU-aaaa-1"], gpus=2)
    assert workers == {"[gpu1]": (0, "GPU-bbbb-2", "2"), "[gpuGPU-aaaa-1]": (1, "GPU-aaaa-1", "2")}
    assert main(["launch", *storage, "--gpus", "GPU-cccc-3"]) == 2
    assert one_line_error(capsys) == (
        "shrink launch: error: --gpus 'GPU-cccc-3': GPU GPU-cccc-3 is not in "
        "the launcher's CUDA_VISIBLE_DEVICES='GPU-aaaa-1,GPU-bbbb-2'"
    )

    for hidden in ("", "-1"):  # both hide every GPU from CUDA
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert main(["launch", *storage, "--gpus", "0"]) == 2
        assert one_line_error(capsys) == (
            "shrink launch: error: --gpus '0': no GPU is visible: "
            f"the launcher's CUDA_VISIBLE_DEVICES={hidden!r}"
        )


def test_codec_threads_default_to_the_share_the_launcher_gives_each_worker(capsys, monkeypatch):
    import threading

    from shrink.compression.baselines import _map
    from shrink.compression.codecs import BatchRoundTrip, JpegCodec, default_codec_threads

    monkeypatch.delenv("SHRINK_CODEC_THREADS", raising=False)
    assert default_codec_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SHRINK_CODEC_THREADS", "3")
    assert default_codec_threads() == 3
    with BatchRoundTrip(JpegCodec()) as round_trip:
        assert round_trip.pool._max_workers == 3
    with BatchRoundTrip(JpegCodec(), threads=5) as round_trip:  # codec.threads in the config wins
        assert round_trip.pool._max_workers == 5
    monkeypatch.setenv("SHRINK_CODEC_THREADS", "1")  # baselines: one thread, so no pool
    assert _map(lambda: threading.current_thread(), [()] * 3, 0) == [threading.current_thread()] * 3
    for malformed in ("0", "two", "-1", "2.5"):
        monkeypatch.setenv("SHRINK_CODEC_THREADS", malformed)
        with pytest.raises(ValueError) as refused:
            default_codec_threads()
        assert str(refused.value) == f"SHRINK_CODEC_THREADS={malformed!r} is not a positive integer"

    # the launcher keeps the user's value and refuses a malformed one before starting any worker
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SHRINK_CODEC_THREADS", "3")
    _, workers = launched_workers(monkeypatch, capsys, ["--workers", "2"], gpus=0)
    assert workers == {"[w0]": (0, "None", "3"), "[w1]": (1, "None", "3")}
    monkeypatch.setenv("SHRINK_CODEC_THREADS", "two")
    assert main(["launch", "--storage", "sqlite:///unused.db", "--study-name", "s", "--workers", "2"]) == 2
    line = one_line_error(capsys)
    assert line == "shrink launch: error: SHRINK_CODEC_THREADS='two' is not a positive integer"
    assert capsys.readouterr().out == ""  # no worker started


# ---------------------------------------------------------------- hostile inputs, round 2 (issue 35)


def test_outputs_that_are_not_regular_files_are_refused_force_or_not(
    image_folder: Path, tmp_path: Path, capsys
):
    # issue 35: `compress -o FIFO --force` replaced the FIFO (as root, -o /dev/null would replace /dev/null)
    fifo, to_null = tmp_path / "fifo", tmp_path / "null.json"
    os.mkfifo(fifo)
    to_null.symlink_to(os.devnull)
    storage = ["--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "s"]
    image, bundle, data = str(next(image_folder.iterdir())), str(tmp_path / "bundle"), str(image_folder)
    commands = [  # (the option argparse names, the command line without the path)
        ("--json", ["eval", str(tmp_path / "x.ckpt"), "--data", data, "--json"]),
        ("--compressai-json", ["eval", "x.ckpt", "--data", data, "--json", "a.json", "--compressai-json"]),
        ("--json", ["baselines", "--data", data, "--json"]),
        ("-o/--output", ["compress", image, "--model", bundle, "--force", "-o"]),
        ("-o/--output", ["decompress", str(tmp_path / "x.jpg"), "--model", bundle, "--force", "-o"]),
        ("--out", ["report", *storage, "--out"]),
    ]
    before = sorted(tmp_path.iterdir())
    for target in (fifo, to_null):
        for option, argv in commands:
            assert main([*argv, str(target)]) == 2, argv
            assert one_line_error(capsys) == (
                f"shrink {argv[0]}: error: argument {option}: cannot write {target}: it exists and is not a "
                "regular file (a FIFO, device, socket or folder: refused)"
            )
    assert sorted(tmp_path.iterdir()) == before and fifo.is_fifo() and to_null.resolve() == Path(os.devnull)


def test_atomic_writes_never_replace_a_fifo_or_a_device(tmp_path: Path):
    from shrink.compression.files import NotReplaceable, atomic_write_text

    fifo, to_null, plain = tmp_path / "fifo", tmp_path / "null", tmp_path / "plain"
    os.mkfifo(fifo)
    to_null.symlink_to(os.devnull)
    for target in (fifo, to_null, tmp_path):
        with pytest.raises(NotReplaceable, match=f"^cannot write {target}: it exists and is not a regular"):
            atomic_write_text(target, "x")
    assert fifo.is_fifo() and to_null.is_symlink() and Path(os.devnull).is_char_device()
    atomic_write_text(plain, "old")
    assert atomic_write_text(plain, "new").read_text() == "new"  # a regular file is replaced as before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null", "plain"]  # no temp file left


COMMAND_LINES = {  # each command's required arguments (none of them is opened: the numbers are refused first)
    "compress": ["compress", "p.png", "--model", "b", "-o", "x.jpg"],
    "decompress": ["decompress", "x.jpg", "-o", "x.png"],
    "eval": ["eval", "b", "--data", "d", "--json", "x.json"],
    "export": ["export", "--bundle", "b", "--family", "--test", "d", "--out", "f"],
    "report": ["report", "--storage", "s", "--study-name", "s", "--out", "r.html"],
    "worker": ["worker", "--storage", "s", "--study-name", "s"],
    "launch": ["launch", "--storage", "s", "--study-name", "s"],
    "dashboard": ["dashboard", "--storage", "s"],
    "refine": ["refine", "--storage", "s", "--study-name", "s", "--pareto"],
    "trial": ["trial", "--storage", "s", "--study-name", "s"],
}
BAD_NUMBERS = [  # (command, option and values, the message after "argument ")
    ("compress", ["--bpp", "1e308"], "--bpp: a target bpp lies in (0, 64], got 1e+308"),
    ("compress", ["--bpp", "inf"], "--bpp: a target bpp lies in (0, 64], got inf"),
    ("compress", ["--bpp", "nan"], "--bpp: a target bpp lies in (0, 64], got nan"),
    ("compress", ["--msssim", "5"], "--msssim: a target MS-SSIM lies in (0, 1), got 5"),
    ("compress", ["--msssim", "1e308"], "--msssim: a target MS-SSIM lies in (0, 1), got 1e+308"),
    ("compress", ["--effort", "9" * 30], f"--effort: must be at most 100, got {'9' * 30}"),
    ("compress", ["--tile", "-3"], "--tile: must be an integer in 0..65536, got -3"),
    ("decompress", ["--tile", "1e9"], "--tile: invalid integer value: '1e9'"),
    ("eval", ["--qualities", "5", "1000"], "--qualities: quality must be in 1..100, got 1000"),
    ("export", ["--qualities", "0"], "--qualities: quality must be in 1..100, got 0"),
    ("report", ["--crop", "99999999"], "--crop: must be an integer in 1..4096, got 99999999"),
    ("report", ["--gallery-images", "-1"], "--gallery-images: must be an integer in 0..100, got -1"),
    ("worker", ["--timeout", "1e400"], "--timeout: must be at most 1e+09, got inf"),
    ("worker", ["--n-trials", "0"], "--n-trials: must be a positive integer, got 0"),
    ("worker", ["--heartbeat", "0", "3"], "--heartbeat: must be an integer in 1..86400, got 0"),
    ("launch", ["--workers", "100000"], "--workers: must be at most 256, got 100000"),
    ("dashboard", ["--port", "70000"], "--port: must be an integer in 1..65535, got 70000"),
    ("refine", ["--budget", "1e308"], "--budget: must be at most 1e+09, got 1e+308"),
    ("trial", ["--trial-number", "-1"], "--trial-number: must be an integer in 0..1000000, got -1"),
]


@pytest.mark.parametrize(("command", "option", "message"), BAD_NUMBERS)
def test_numbers_are_bounded_where_they_are_parsed(
    command, option, message, tmp_path: Path, capsys, monkeypatch
):
    # issue 35: `compress --bpp 1e308` passed the check and overflowed in the byte budget (a traceback)
    monkeypatch.chdir(tmp_path)
    assert main([*COMMAND_LINES[command], *option]) == 2
    assert one_line_error(capsys) == f"shrink {command}: error: argument {message}"
    assert list(tmp_path.iterdir()) == []


def test_first_worker_index_gives_each_node_its_own_sampler_seeds(monkeypatch, capsys):
    _, workers = launched_workers(
        monkeypatch, capsys, ["--workers", "2", "--first-worker-index", "256"], gpus=0
    )
    assert sorted(index for index, _, _ in workers.values()) == [256, 257]
    assert (
        main(
            [
                "launch",
                "--storage",
                "sqlite:///unused.db",
                "--study-name",
                "s",
                "--workers",
                "1",
                "--first-worker-index",
                "-1",
            ]
        )
        == 2
    )


def test_a_repeated_sigterm_is_the_same_request_and_a_second_sigint_stops_at_once():
    from shrink.search.worker import SignalStop

    class Runner:
        stops = 0

        def request_stop(self):
            self.stops += 1

    runner = Runner()
    stop = SignalStop(runner)
    stop._handle(signal.SIGTERM, None)
    stop._handle(signal.SIGTERM, None)  # Slurm signals the step's processes and launch forwards it too
    assert (stop.signal, runner.stops) == (signal.SIGTERM, 1)
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)
