"""`shrink report` without a browser: the data behind each section equals what the study stores, and the
command writes one self-contained page holding every section.

One toy study (real workers, tiny nets, 3 epochs of 2 steps) is built once per session and shared with
test_report_browser.py; a synthetic pruned trial is added to it so the pruned-trial paths always run.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from PIL import Image

from shrink.compression.bdrate import bd_rate_curves
from shrink.compression.bundle import load_model
from shrink.compression.codecs import JpegCodec, build_codec
from shrink.compression.evaluate import evaluate_image
from shrink.compression.metrics import msssim_db
from shrink.compression.rd import RDCurve, RDPoint, save_compressai
from shrink.compression.trainer import load_dev_images
from shrink.dashboards.cache import CurveCache, cache_key
from shrink.dashboards.gallery import get_gallery_info, operating_quality
from shrink.dashboards.plots import curves_figure, rd_figure
from shrink.dashboards.references import reference_curves
from shrink.dashboards.report import EXTRA_CURVES_NOTE, SECTIONS, ReportOptions, gather_report, render_report
from shrink.dashboards.study_info import (
    best_front_trial,
    front_curve,
    get_bd_rate_table,
    get_hypervolume_info,
    get_importance_info,
    get_learning_curves_info,
    get_pruning_savings,
    get_rd_points_info,
    resolve_checkpoint,
    safe_bd_rate,
)
from shrink.search.cli import main
from shrink.search.pruning import hypervolume_2d

from .helpers import EPOCHS, QUALITIES, SYNTHETIC_REASON, export_front, load, shared_toy_study, write_spec


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory) -> tuple[optuna.Study, str, Path]:
    url, images = shared_toy_study(tmp_path_factory)
    return load(url), url, images


# ---------------------------------------------------------------- data gathering


def test_rd_points_are_the_stored_rd_points_and_the_front_is_best_trials(toy_study):
    study, _, _ = toy_study
    points = get_rd_points_info(study)
    completed = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert [p.number for p in points] == [t.number for t in completed]
    for point, trial in zip(points, completed, strict=True):
        stored = trial.user_attrs["rd_point"]
        assert (point.bpp, point.msssim, point.msssim_db, point.psnr, point.gain_db) == (
            stored["dev_bpp"],
            stored["dev_msssim"],
            stored["dev_msssim_db"],
            stored["dev_psnr"],
            stored["dev_gain_db"],
        )
        assert point.params == trial.params
        assert trial.values == [point.bpp, point.msssim]
    assert {p.number for p in points if p.on_front} == {t.number for t in study.best_trials}
    curve = front_curve(points)
    front = sorted((p for p in points if p.on_front), key=lambda p: p.bpp)
    assert [(q.bpp, q.msssim) for q in curve.points] == [(p.bpp, p.msssim) for p in front]
    best = best_front_trial(points)
    assert best.gain_db == max(p.gain_db for p in front)


def test_hypervolume_runs_over_completed_trials_and_never_decreases(toy_study):
    study, _, _ = toy_study
    points = get_rd_points_info(study)
    info = get_hypervolume_info(points)
    pairs = [(p.bpp, 1 - p.msssim) for p in points]
    assert info.reference == pytest.approx((1.1 * max(x for x, _ in pairs), 1.1 * max(y for _, y in pairs)))
    assert info.trial_numbers == [p.number for p in points]
    assert all(b >= a for a, b in zip(info.values, info.values[1:], strict=False))
    assert info.values[-1] == pytest.approx(hypervolume_2d(pairs, info.reference))
    assert info.values[0] == pytest.approx(
        (info.reference[0] - pairs[0][0]) * (info.reference[1] - pairs[0][1])
    )
    assert get_hypervolume_info([]).values == []


def test_learning_curves_and_pruned_trials_carry_their_stored_epochs_and_reason(toy_study):
    study, _, _ = toy_study
    curves = {c.number: c for c in get_learning_curves_info(study)}
    assert set(curves) == {t.number for t in study.trials if t.user_attrs.get("epochs")}
    for trial in study.trials:
        curve = curves[trial.number]
        epochs = [e for e in trial.user_attrs["epochs"] if not e["partial"]]
        assert curve.epochs == [e["epoch"] for e in epochs]
        assert curve.msssim == [e["dev_msssim"] for e in epochs]
        assert curve.state == trial.state.name
        if trial.state == TrialState.PRUNED:
            assert curve.prune_reason == trial.user_attrs["prune_reason"]
        else:
            assert curve.prune_reason is None
    assert curves[len(study.trials) - 1].prune_reason == SYNTHETIC_REASON


def test_pruning_savings_count_epochs_run_against_the_full_budget(toy_study):
    study, _, _ = toy_study
    savings = get_pruning_savings(study, EPOCHS)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    run = {t.number: len(t.user_attrs["epochs"]) for t in finished}
    assert savings.epochs_run == run
    assert savings.n_finished == len(finished)
    assert savings.total_run == sum(run.values())
    assert savings.total_budget == len(finished) * EPOCHS
    assert savings.saved == len(finished) * EPOCHS - sum(run.values()) >= EPOCHS - 1  # the synthetic one
    assert savings.saved_fraction == pytest.approx(savings.saved / savings.total_budget)
    assert set(savings.pruned) == {t.number for t in finished if t.state == TrialState.PRUNED}


@pytest.mark.filterwarnings("ignore:PedAnovaImportanceEvaluator computes")
def test_importances_use_the_dev_gain_of_completed_trials(toy_study):
    study, _, _ = toy_study
    info = get_importance_info(study)
    expected = optuna.importance.get_param_importances(
        study, target=lambda t: -t.user_attrs["rd_point"]["dev_gain_db"]
    )
    assert info.importances == pytest.approx(dict(expected))
    assert set(info.importances) <= set(study.trials[0].params)


def test_importances_of_a_study_with_one_trial_are_a_note():
    study = optuna.create_study(directions=["minimize", "maximize"])
    point = {"dev_bpp": 0.5, "dev_msssim": 0.9, "dev_msssim_db": 10.0, "dev_psnr": 30.0, "dev_gain_db": 0.1}
    distribution = optuna.distributions.IntDistribution(20, 80)
    study.add_trial(
        create_trial(
            values=[0.5, 0.9],
            params={"codec.quality": 40},
            distributions={"codec.quality": distribution},
            user_attrs={"rd_point": point},
        )
    )
    info = get_importance_info(study)
    assert info.importances == {} and "needs 2 or more completed trials" in info.notes[0]


def _curve(name: str, rates, dbs) -> RDCurve:
    return RDCurve(
        name, [RDPoint(None, r, 1 - 10 ** (-d / 10), d, d + 20) for r, d in zip(rates, dbs, strict=True)]
    )


def test_bd_rate_table_gives_values_or_na_with_a_reason():
    anchor = _curve("jpeg", [0.2, 0.4, 0.8, 1.6], [8.0, 11.0, 14.0, 17.0])
    good = _curve("front", [0.15, 0.3, 0.6], [8.5, 11.5, 14.5])
    far = _curve("far", [2.0, 3.0], [30.0, 32.0])
    single = _curve("single", [0.5], [12.0])
    rows = {
        row.test: row
        for row in get_bd_rate_table({"front": good, "far": far, "single": single}, {"jpeg": anchor})
    }
    assert rows["front"].values["msssim_db"] == pytest.approx(bd_rate_curves(anchor, good, "msssim_db"))
    assert rows["front"].values["psnr"] == pytest.approx(bd_rate_curves(anchor, good, "psnr"))
    assert rows["front"].notes == {}
    for name in ("far", "single"):
        assert rows[name].values == {"msssim_db": None, "psnr": None}
        assert set(rows[name].notes) == {"msssim_db", "psnr"}
    assert "overlap" in rows["far"].notes["psnr"]
    sliver = _curve("sliver", [1.5, 1.7], [16.9, 17.05])  # 0.1 dB of common quality
    assert safe_bd_rate(anchor, sliver, "msssim_db")[0] is None


def test_gallery_bytes_and_msssim_equal_a_direct_evaluation(toy_study):
    study, url, _ = toy_study
    points = get_rd_points_info(study)
    info = get_gallery_info(study, points, [Path.cwd()], n_images=2, crop=128)
    best = best_front_trial(points)
    assert info.trial == best.number and info.notes == []
    model, config = load_model(study.trials[best.number].user_attrs["checkpoint"])
    assert info.quality == operating_quality(config) == config.codec.quality
    images = load_dev_images(config.data)[:2]
    assert [row.image for row in info.rows] == [image.name for image in images]
    for row, image in zip(info.rows, images, strict=True):
        original, jpeg, shrink = row.tiles
        direct = evaluate_image(model, image, build_codec(config.codec), info.quality)
        assert shrink.nbytes == direct["bytes"] and shrink.bpp == pytest.approx(direct["bpp"])
        assert shrink.msssim == pytest.approx(direct["msssim"], rel=1e-6)
        array = image.pixels.permute(1, 2, 0).numpy()
        sizes = {q: len(JpegCodec().encode(array, q)) for q in range(1, 101)}
        assert jpeg.nbytes == sizes[jpeg.quality]
        assert abs(jpeg.nbytes - shrink.nbytes) == min(abs(s - shrink.nbytes) for s in sizes.values())
        for tile in row.tiles:
            with Image.open(io.BytesIO(tile.png)) as crop:
                assert crop.size == (128, 128)
        assert original.nbytes is None and tile.data_uri().startswith("data:image/png;base64,")


def test_relative_checkpoints_are_found_under_the_roots(tmp_path):
    target = tmp_path / "runs" / "t" / "best.ckpt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert (
        resolve_checkpoint("runs/t/best.ckpt", [tmp_path / "elsewhere", tmp_path])
        == tmp_path / "runs/t/best.ckpt"
    )
    assert resolve_checkpoint("runs/t/missing.ckpt", [tmp_path]) is None
    assert resolve_checkpoint(None, [tmp_path]) is None


def test_the_curve_cache_reuses_a_curve_across_instances(tmp_path):
    calls = []

    def compute() -> RDCurve:
        calls.append(1)
        return _curve("x", [0.1, 0.2], [5.0, 6.0])

    key = cache_key("baseline", "x", [1, 2])
    first = CurveCache(tmp_path / "c.json").get_or_compute(key, compute)
    again = CurveCache(tmp_path / "c.json")
    assert again.get_or_compute(key, compute).to_dict() == first.to_dict() and len(calls) == 1
    assert again.hits == [key]
    (tmp_path / "c.json").write_text("{broken")
    assert CurveCache(tmp_path / "c.json").curves == {}


# ---------------------------------------------------------------- the command


def test_report_writes_one_self_contained_page_with_every_section(toy_study, tmp_path):
    study, url, images = toy_study
    bundles = export_front(url, tmp_path / "bundles")
    out = tmp_path / "report.html"
    argv = ["report", "--storage", url, "--study-name", "toy", "--out", str(out), "--bundles", str(bundles)]
    assert main([*argv, "--data", str(images), "--gallery-images", "2", *QUALITIES]) == 0
    text = out.read_text()
    for key in SECTIONS:
        assert f'<h2 id="{key}">' in text
    assert re.search(r"<script[^>]*\bsrc=", text) is None  # nothing loaded from anywhere
    assert re.search(r"""<(link|img|iframe)[^>]*\b(href|src)=["']?(https?:)?//""", text) is None
    assert text.count("Plotly.newPlot(") >= 8
    assert "plotly.js" in text[:200_000]  # the library itself is inlined in the head
    assert len(re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)) == 2 * 3
    assert (tmp_path / "report.html.cache.json").is_file()
    assert not list(tmp_path.glob(".report.html.*.tmp"))
    n_bundles = len([p for p in bundles.iterdir() if p.is_dir()])
    assert text.count("<tr><td class=name>trial-") == 2 * n_bundles * 7  # dev and --data tables, 7 anchors


def test_report_data_reuses_cached_curves_and_notes_missing_parts(toy_study, tmp_path):
    study, _, _ = toy_study
    options = ReportOptions(cache=tmp_path / "cache.json", qualities=[30, 70], gallery_images=1)
    first = gather_report(study, options, log=lambda _: None)
    assert set(first.dev_baselines) == {"jpeg", "down2-jpeg", "mozjpeg", "webp", "avif", "jpegli", "jpegxl"}
    assert first.dev_baselines["jpeg"].points == RDCurve.from_dict(study.user_attrs["dev_jpeg"]).points
    assert first.data_set is None and first.dev_bundles == {}
    assert [r.test for r in first.bd_rows] == ["Pareto front"] * 7
    cache = CurveCache(tmp_path / "cache.json")
    assert len(cache.curves) == 6  # down2-jpeg, mozjpeg, webp, avif, jpegli, jpegxl: JPEG is the study's own
    second = gather_report(study, options, log=lambda _: None)
    assert {k: c.to_dict() for k, c in second.dev_baselines.items()} == {
        k: c.to_dict() for k, c in first.dev_baselines.items()
    }


def test_report_of_a_study_without_trials_still_has_every_section(tmp_path, toy_study):
    _, _, images = toy_study
    spec = write_spec(tmp_path / "empty.toml", images)
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    out = tmp_path / "empty.html"
    assert main(["report", "--storage", url, "--study-name", "toy", "--out", str(out), *QUALITIES]) == 0
    text = out.read_text()
    assert all(f'<h2 id="{key}">' in text for key in SECTIONS)
    assert "no completed trial yet" in text and "needs 2 or more completed trials" in text


def test_report_refuses_bad_input_with_exit_code_2(tmp_path, capsys, toy_study):
    _, url, _ = toy_study
    out = str(tmp_path / "r.html")
    assert main(["report", "--storage", url, "--study-name", "nope", "--out", out]) == 2
    assert (
        main(["report", "--storage", url, "--study-name", "toy", "--out", out, "--data-baselines", "x"]) == 2
    )
    assert (
        main(["report", "--storage", url, "--study-name", "toy", "--out", out, "--bundles", "/no/dir"]) == 2
    )
    err = capsys.readouterr().err
    assert "no study named 'nope'" in err and "--data-baselines needs --data" in err
    assert not Path(out).exists()


# ---------------------------------------------------------------- curves from elsewhere


def mine(tmp_path: Path) -> Path:
    """A CompressAI results file of a made-up curve, as `shrink eval --compressai-json` writes them."""
    points = [RDPoint(None, bpp, value, msssim_db(value), 30.0) for bpp, value in [(0.3, 0.95), (0.6, 0.98)]]
    return save_compressai(tmp_path / "mine.json", RDCurve("mine", points))


def test_extra_curves_are_thin_dashed_named_traces_on_the_rd_figures(tmp_path):
    extra = reference_curves("compressai-kodak")
    baselines = {"jpeg": RDCurve("jpeg", extra["JPEG (CompressAI, Kodak)"].points)}
    rd = rd_figure([], baselines, "psnr", "", None, extra)
    for fig in (rd, curves_figure({}, baselines, "psnr", "", extra)):
        drawn = [trace for trace in fig.data if trace.name in extra]
        assert [trace.name for trace in drawn] == list(extra)
        assert all(trace.line.dash == "dash" and trace.line.width == 1.5 for trace in drawn)
    assert len(rd_figure([], baselines, "psnr", "").data) == 3  # none without them: baseline, trials, front


def test_the_report_draws_curves_files_and_references_outside_its_bd_tables(toy_study, tmp_path):
    study, _, _ = toy_study
    options = ReportOptions(cache=tmp_path / "cache.json", qualities=[30, 70], gallery_images=1)
    options.curves, options.references = [mine(tmp_path)], ["compressai-kodak"]
    data = gather_report(study, options, log=lambda _: None)
    assert list(data.extra_curves) == ["mine (mine.json)", *reference_curves("compressai-kodak")]
    assert not {name for row in data.bd_rows for name in (row.test, row.anchor)} & set(data.extra_curves)
    assert EXTRA_CURVES_NOTE in data.notes["rd"]
    page = render_report(data)
    rd_plots = page.split('<h2 id="rd">', 1)[1].split('<h2 id="bd-rate">', 1)[0]
    for name in data.extra_curves:  # one trace on each of the three RD plots
        assert rd_plots.count(f'"name":"{name}"') == 3, name


def test_report_refuses_a_bad_curves_file_in_one_line(tmp_path, capsys, toy_study):
    _, url, _ = toy_study
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "bad", "results": {"bpp": [0.1], "ms-ssim": [2.0], "psnr": [30]}}')
    argv = ["report", "--storage", url, "--study-name", "toy", "--out", str(tmp_path / "r.html")]
    for extra, message in [
        (["--curves", str(tmp_path / "absent.json")], f"--curves: no file {tmp_path / 'absent.json'}"),
        (["--curves", str(bad)], f"{bad}: MS-SSIM must lie in (0, 1)"),
        (["--reference", "kodak"], "argument --reference: invalid choice: 'kodak'"),
    ]:
        assert main([*argv, *extra, "--no-cache"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, err
    assert not (tmp_path / "r.html").exists()
