"""Hostile files (issue 35): every JSON file a user hands us goes through one reader with the bundle
reader's checks, a checkpoint that is no torch.save file and an Optuna journal of the wrong shape are one
line naming the file, and an existing output folder names the command's --force.

Each case is one stderr line naming the file, exit code 2, no traceback, nothing written.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.storages import BaseStorage

from shrink.compression import zoo
from shrink.compression.checkpoint import save_checkpoint
from shrink.compression.config import TrainConfig
from shrink.compression.files import MAX_JSON_DEPTH
from shrink.compression.rd import MAX_CURVE_NAME, RDCurve, RDPoint, load_curves, save_curves
from shrink.search.cli import main
from shrink.search.storage import StorageError, open_storage

from .helpers import trained_like

SHRINK = Path(sys.executable).parent / "shrink"
POINTS = [
    {"quality": quality, "bpp": rate, "msssim": 0.9, "msssim_db": 10 + rate, "psnr": 30 + rate}
    for quality, rate in [(10, 0.2), (30, 0.5), (60, 1.0), (90, 2.0)]
]


def one_refusal(code: int, err: str, path: Path, expected: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and expected in err, err


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def interrupted_after(seconds: int):
    def interrupt(*_) -> None:
        raise TimeoutError(f"blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def anchor(tmp_path: Path) -> Path:
    path = tmp_path / "anchor.json"
    save_curves(path, {"jpeg": RDCurve("jpeg", [RDPoint.from_dict(p) for p in POINTS])})
    return path


# ---------------------------------------------------------------- 1. curve files, the zoo's evaluation file

HOSTILE_CURVE_FILES = {
    "deep.json": ("[" * 100_000 + "]" * 100_000, f"nests deeper than {MAX_JSON_DEPTH} levels"),
    "huge-integer.json": (
        json.dumps({"name": "x", "points": [{**POINTS[0], "bpp": 7}]}).replace("7", "1" + "0" * 400),
        "beyond a double's range",
    ),
    "null-point.json": (json.dumps({"name": "x", "points": [None]}), "'points', a list of objects"),
    "not-utf8.json": (json.dumps({"name": "caf\xe9", "points": POINTS}, ensure_ascii=False), "not UTF-8"),
    "long-name.json": (json.dumps({"name": "n" * 2_000_000, "points": POINTS}), f"at most {MAX_CURVE_NAME}"),
    "nan.json": (json.dumps({"name": "x", "points": [{**POINTS[0], "psnr": float("nan")}]}), "NaN"),
    "zero-rate.json": (json.dumps({"name": "x", "points": [{**POINTS[0], "bpp": 0}]}), "bpp > 0"),
}


@pytest.mark.parametrize("name", HOSTILE_CURVE_FILES)
def test_a_hostile_curve_file_is_one_line_naming_it(name: str, anchor: Path, tmp_path: Path):
    text, expected = HOSTILE_CURVE_FILES[name]
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1" if name == "not-utf8.json" else "utf-8"))
    code, out, err = run_main(["bdrate", str(anchor), str(path)])
    one_refusal(code, err, path, expected)
    assert out == "" and len(err) < 1000


def test_a_fifo_or_a_link_to_dev_zero_is_refused_before_a_byte_is_read(anchor: Path, tmp_path: Path):
    """In a process of its own, bounded in time and memory: read without the checks, a FIFO blocks for ever
    and /dev/zero fills the memory."""
    fifo, zero = tmp_path / "fifo.json", tmp_path / "zero.json"
    os.mkfifo(fifo)
    zero.symlink_to("/dev/zero")

    def bounded_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    for path in (fifo, zero):
        command = [str(SHRINK), "bdrate", str(anchor), str(path)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, preexec_fn=bounded_memory)
        one_refusal(done.returncode, done.stderr, path, "the curve file is not a regular file")


def test_the_zoo_reads_its_evaluation_file_with_the_same_checks(tmp_path: Path):
    deep, null = tmp_path / "deep.json", tmp_path / "null.json"
    deep.write_text('{"meta": ' * 50_000)
    null.write_text("null")
    with pytest.raises(ValueError, match=re.escape(f"{deep}: the curve file nests deeper")):
        zoo.evaluation_meta(deep)
    with pytest.raises(ValueError, match=re.escape(f"{null}: not a `shrink eval` curve")):
        zoo.evaluation_meta(null)


def test_a_text_file_given_as_checkpoint_is_one_line_naming_it(tmp_path: Path):
    text, out = tmp_path / "notes.txt", tmp_path / "bundle"
    text.write_text("hello, this is not a checkpoint\n")
    code, _, err = run_main(["export", "--checkpoint", str(text), "--out", str(out)])
    one_refusal(code, err, text, "is not a shrink checkpoint (not a file torch.save writes)")
    assert "KeyError" not in err and not out.exists()


# ---------------------------------------------------------------- the hypothesis test over curve files

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
GOOD_NUMBER = st.floats(min_value=0.01, max_value=60, allow_nan=False, allow_infinity=False)
ANY_NUMBER = st.one_of(
    GOOD_NUMBER,
    st.floats(),  # NaN and +-Infinity too: json.dumps writes them as NaN and Infinity
    st.integers(),
    st.integers(min_value=10**300, max_value=10**420),
    st.booleans(),
    st.none(),
    st.sampled_from(["0.5", "nan", "1e999", "", [], {}, [0.5]]),
)
NAME = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["jpeg", "<b>x</b>", "\x1b]0;owned\x07", "a\nb", "\ud800"]),
    st.integers(MAX_CURVE_NAME - 2, MAX_CURVE_NAME + 2).map(lambda n: "n" * n),
)


@st.composite
def points(draw, valid: bool) -> list:
    count = draw(st.integers(1, 5))
    rates = sorted(draw(st.lists(GOOD_NUMBER, min_size=count, max_size=count, unique=True)))
    made = [{**POINTS[0], "quality": q, "bpp": rate, "msssim_db": 5 + rate} for q, rate in enumerate(rates)]
    if valid:
        return made
    for point in made:
        for key in draw(st.sets(st.sampled_from(sorted(point)))):
            if draw(st.booleans()):
                point[key] = draw(ANY_NUMBER)
            else:
                del point[key]
    shape = st.sampled_from([lambda p: p, lambda p: None, lambda p: 1.5, lambda p: [p], lambda p: "p"])
    return [draw(shape)(point) for point in made]


@st.composite
def ours(draw, valid: bool) -> tuple[dict, dict[str, list] | None]:
    """A curves file (or one bare curve) and, where valid, the curves it must load as: {name: points}."""
    names = draw(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3, unique=True))
    if not valid:
        names = draw(st.lists(NAME, min_size=1, max_size=3, unique=True))
    curves = {name: draw(points(valid)) for name in names}
    if draw(st.booleans()) and len(curves) == 1:
        [(name, curve_points)] = curves.items()
        return {"name": name, "points": curve_points}, curves if valid else None
    document = {"curves": {name: {"points": p} for name, p in curves.items()}, "meta": {"images": "kodak"}}
    return document, curves if valid else None


@st.composite
def compressai(draw, valid: bool) -> tuple[dict, dict[str, list] | None]:
    """A CompressAI results file and, where valid, the curve it must load as."""
    count = draw(st.integers(1, 5))
    rates = sorted(draw(st.lists(GOOD_NUMBER, min_size=count, max_size=count, unique=True)))
    quality = st.floats(min_value=0.5, max_value=0.999)
    msssim = draw(st.lists(quality, min_size=count, max_size=count))
    psnr = draw(st.lists(GOOD_NUMBER, min_size=count, max_size=count))
    name = draw(st.text(min_size=1, max_size=20) if valid else NAME)
    results = {"bpp": rates, "ms-ssim-rgb": msssim, "psnr-rgb": psnr}
    if not valid:
        for key in draw(st.sets(st.sampled_from(sorted(results)))):
            column = draw(st.lists(ANY_NUMBER, max_size=6))
            results[key] = draw(st.sampled_from([column, None, 3.0, {"x": column}]))
    document = {"name": name, "description": "fuzzed", "results": results}
    expected = [{"bpp": b, "msssim": m, "psnr": p} for b, m, p in zip(rates, msssim, psnr, strict=True)]
    return document, {name: expected} if valid else None


@st.composite
def curve_files(draw) -> tuple[bytes, dict[str, list] | None]:
    """(the file's bytes, the curves it must load as, or None when it may load or be refused)."""
    valid = draw(st.booleans())
    document, expected = draw(st.one_of(ours(valid), compressai(valid)))
    if valid:
        return json.dumps(document).encode(), expected
    for _ in range(draw(st.sampled_from([0, 0, 1, MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1, 100]))):
        document = draw(st.sampled_from([[document], {"curves": document}, {"points": document}]))
    data = json.dumps(document).encode()
    damage = draw(st.sampled_from(["none"] * 6 + ["latin-1", "cut", "bytes"]))
    if damage == "latin-1":
        data = data.decode().encode("latin-1", errors="replace") + "\xe9".encode("latin-1")
    elif damage == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == "bytes":
        data = draw(st.binary(max_size=200))
    return data, None


def loaded_as(curves: dict[str, RDCurve], expected: dict[str, list]) -> bool:
    return curves.keys() == expected.keys() and all(
        [{key: getattr(point, key) for key in want[0]} for point in curves[name].points] == want
        for name, want in expected.items()
    )


@FUZZ
@given(curve_files())
def test_every_curve_file_loads_as_before_or_is_one_line_naming_it(case: tuple[bytes, dict | None]):
    data, expected = case
    with tempfile.TemporaryDirectory() as folder:
        anchor, path = Path(folder) / "anchor.json", Path(folder) / "fuzzed.json"
        anchor.write_text(json.dumps({"name": "jpeg", "points": POINTS}))
        path.write_bytes(data)
        try:
            curves, refusal = load_curves(path), None
        except ValueError as error:
            curves, refusal = None, str(error)
        code, _, err = run_main(["bdrate", str(anchor), str(path)])
        written = sorted(p.name for p in Path(folder).iterdir())
    assert written == ["anchor.json", "fuzzed.json"]
    assert "Traceback" not in err and err.count("\n") <= 1, err
    if expected is not None:
        assert refusal is None and loaded_as(curves, expected), refusal
    if refusal is not None:
        assert "\n" not in refusal and refusal.startswith(f"{path}: ") and len(refusal) < 1000, refusal
        assert code == 2 and err.startswith("shrink bdrate: error: ") and str(path) in err, err
    else:
        assert code in (0, 2), err


# ---------------------------------------------------------------- 8. storage files of the wrong shape


def journal_with(tmp_path: Path, line: bytes) -> tuple[Path, BaseStorage]:
    """A journal holding study 's', then ``line``; and the storage that wrote the study."""
    path = tmp_path / "study.log"
    storage = open_storage(f"journal:{path}", heartbeat_interval=None)
    optuna.create_study(storage=storage, study_name="s")
    with path.open("ab") as handle:
        handle.write(line)
    return path, storage


JOURNAL_LINES = {  # what follows a valid first line, and why the second is refused
    "unknown-op-code": (b'{"op_code": 99, "worker_id": "w"}\n', "(unknown op code 99)"),
    "list": (b"[1, 2, 3]\n", "(an array, not an object)"),
    "random-bytes": (bytes(range(128, 256)) + b"\n{}\n", "(UnicodeDecodeError: 'utf-8' codec"),
    "missing-fields": (b'{"op_code": 0, "worker_id": "w"}\n', "(KeyError: 'study_name')"),
}


@pytest.mark.parametrize("name", JOURNAL_LINES)
def test_a_journal_line_of_the_wrong_shape_is_one_line_naming_the_file(name: str, tmp_path: Path):
    line, expected = JOURNAL_LINES[name]
    path, storage = journal_with(tmp_path, line)
    before, out = path.read_bytes(), tmp_path / "out"
    argv = ["export", "--storage", f"journal:{path}", "--study-name", "s", "--pareto", "--out", str(out)]
    code, _, err = run_main(argv)
    one_refusal(code, err, path, f"line 2 is not an Optuna journal entry {expected}")
    assert path.read_bytes() == before and not out.exists()
    for _ in range(2):  # a storage already open meets the line too, and never skips it
        with pytest.raises(StorageError, match="line 2 is not an Optuna journal entry"):
            storage.get_all_studies()


def test_a_journal_of_random_bytes_or_a_fifo_is_one_line_naming_it(tmp_path: Path):
    garbage, fifo = tmp_path / "garbage.log", tmp_path / "fifo.log"
    garbage.write_bytes(bytes(range(255, 10, -1)))  # no newline: to Optuna, a line being written
    os.mkfifo(fifo)  # Optuna would open it for appending and wait for a reader for ever
    cases = ((garbage, "line 1 is not an Optuna journal entry"), (fifo, "journal file is not a regular file"))
    for path, expected in cases:
        argv = ["export", "--storage", f"journal:{path}", "--study-name", "s", "--pareto", "--out", "o"]
        with interrupted_after(60):  # a blocked open fails the test instead of hanging it
            code, _, err = run_main(argv)
        one_refusal(code, err, path, expected)
    assert garbage.read_bytes() == bytes(range(255, 10, -1))


def test_an_existing_output_folder_names_the_commands_force(tiny_config: TrainConfig, tmp_path: Path):
    model = trained_like(tiny_config)
    checkpoint = save_checkpoint(
        tmp_path / "best.ckpt", {"config": tiny_config.model_dump_json(), "model": model.state_dict()}
    )
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_main(["export", "--checkpoint", str(checkpoint), "--out", str(out)])
    one_refusal(code, err, out, "exists and is not empty (pass --force to replace it)")
    assert "overwrite=True" not in err and [p.name for p in out.iterdir()] == ["keep.txt"]
