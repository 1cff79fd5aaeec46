from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shrink.compression.bdrate import MIN_OVERLAP_DB, bd_rate, bd_rate_curves, quality_overlap, safe_bd_rate
from shrink.compression.metrics import msssim_db, msssim_from_db
from shrink.compression.rd import (
    PointTimes,
    RDCurve,
    RDPoint,
    compressai_results,
    curve_from_rows,
    gain_at_rate,
    load_curves,
    mean_point,
    metric_at_rate,
    operating_gain,
    operating_point,
    operating_rate_change,
    rate_at_metric,
    save_compressai,
    save_curves,
)
from shrink.dashboards.study_info import get_bd_rate_table
from shrink.search.cli import export as export_cli
from shrink.search.cli import main

ANCHOR_BPP = [0.25, 0.45, 0.87, 1.4, 2.2]
ANCHOR_DB = [9.7, 12.7, 16.4, 19.0, 21.5]


def test_scaled_rates_give_exactly_minus_twenty_percent() -> None:
    test_bpp = [0.8 * r for r in ANCHOR_BPP]
    assert bd_rate(ANCHOR_BPP, ANCHOR_DB, test_bpp, ANCHOR_DB) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(test_bpp, ANCHOR_DB, ANCHOR_BPP, ANCHOR_DB) == pytest.approx(25.0, abs=1e-9)
    assert bd_rate(ANCHOR_BPP, ANCHOR_DB, ANCHOR_BPP, ANCHOR_DB) == pytest.approx(0.0, abs=1e-12)


def test_order_of_points_does_not_matter() -> None:
    order = [3, 0, 4, 2, 1]
    shuffled_bpp = [1.1 * ANCHOR_BPP[i] for i in order]
    shuffled_db = [ANCHOR_DB[i] for i in order]
    assert bd_rate(ANCHOR_BPP, ANCHOR_DB, shuffled_bpp, shuffled_db) == pytest.approx(10.0, abs=1e-9)


def test_quality_shift_on_a_straight_line() -> None:
    # Anchor: quality = 10 * ln(rate), so ln(rate) = q / 10 (PCHIP reproduces a straight line exactly).
    # The test reaches every quality 1 dB higher at the same rate: ln(rate_test) = (q - 1) / 10.
    # The log-rate gap is -0.1 everywhere on the overlap [q_min + 1, q_max]: BD-rate = exp(-0.1) - 1.
    rates = np.array([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    quality = 10 * np.log(rates)
    expected = (math.exp(-0.1) - 1) * 100
    assert bd_rate(rates, quality, rates, quality + 1.0) == pytest.approx(expected, abs=1e-9)
    assert bd_rate(rates, quality, rates, quality - 1.0) == pytest.approx((math.exp(0.1) - 1) * 100, abs=1e-9)


def test_only_the_overlapping_quality_range_counts() -> None:
    # Anchor on a straight line ln(rate) = q / 10 over q in [-10, 10]; the test follows a line 20 % cheaper
    # on [-10, 10] but reaches far beyond on both sides: outside the anchor's range it must be ignored.
    quality = np.linspace(-10, 10, 5)
    anchor_bpp = np.exp(quality / 10)
    test_quality = np.linspace(-30, 30, 13)
    test_bpp = 0.8 * np.exp(test_quality / 10)
    assert bd_rate(anchor_bpp, quality, test_bpp, test_quality) == pytest.approx(-20.0, abs=1e-9)


def test_dominated_points_are_dropped() -> None:
    # A duplicate quality and a dip at a higher rate are dominated by cheaper points.
    bpp = [*ANCHOR_BPP, 3.0, 1.0]
    db = [*ANCHOR_DB, 21.5, 16.0]
    assert bd_rate(ANCHOR_BPP, ANCHOR_DB, [0.8 * r for r in bpp], db) == pytest.approx(-20.0, abs=1e-9)


def test_no_overlap_raises() -> None:
    with pytest.raises(ValueError, match="no quality overlap"):
        bd_rate([0.1, 0.2], [5.0, 6.0], [0.3, 0.4], [7.0, 8.0])
    low, high = _curve("low", [0.1, 0.2], [5.0, 6.0]), _curve("high", [0.3, 0.4], [7.0, 8.0])
    assert quality_overlap(low, high) is None
    assert quality_overlap(low, _curve("wide", [0.15, 0.5], [5.5, 8.0])) == (5.5, 6.0)


def test_too_few_points_raise() -> None:
    with pytest.raises(ValueError, match="2 or more"):
        bd_rate([0.1], [5.0], [0.3, 0.4], [7.0, 8.0])
    with pytest.raises(ValueError, match="2 or more"):
        bd_rate([0.1, 0.2], [5.0, 5.0], [0.3, 0.4], [7.0, 8.0])
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0.0, 0.2], [5.0, 6.0], [0.3, 0.4], [7.0, 8.0])


def _curve(name: str, bpps: list[float], dbs: list[float]) -> RDCurve:
    points = [RDPoint(None, b, 1 - 10 ** (-d / 10), d, 20 + d) for b, d in zip(bpps, dbs, strict=True)]
    return RDCurve(name, points)


def test_bd_rate_curves_uses_the_metric_and_names_curves_in_errors() -> None:
    anchor = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    test = _curve("shrink", [0.8 * r for r in ANCHOR_BPP], ANCHOR_DB)
    assert bd_rate_curves(anchor, test) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate_curves(anchor, test, metric="psnr") == pytest.approx(-20.0, abs=1e-9)
    far = _curve("far", [1, 2], [50.0, 60.0])
    with pytest.raises(ValueError, match="'far' vs 'jpeg'"):
        bd_rate_curves(anchor, far)
    with pytest.raises(ValueError, match="metric"):
        bd_rate_curves(anchor, test, metric="ssim")


# RD-curve utilities (compression/rd.py) used by the BD-rate above.


def test_curve_from_rows_averages_per_quality() -> None:
    rows = [
        {"image": "a", "quality": 50, "bytes": 10, "bpp": 1.0, "msssim": 0.9, "psnr": 30.0},
        {"image": "b", "quality": 50, "bytes": 30, "bpp": 3.0, "msssim": 0.98, "psnr": 34.0},
        {"image": "a", "quality": 10, "bytes": 5, "bpp": 0.5, "msssim": 0.8, "psnr": 25.0},
    ]
    curve = curve_from_rows("x", rows)
    assert [p.quality for p in curve.points] == [10, 50]
    point = curve.points[1]
    assert (point.bpp, point.msssim, point.psnr) == pytest.approx((2.0, 0.94, 32.0))
    assert point.msssim_db == pytest.approx(msssim_db(0.94))  # dB of the mean, not mean of the dBs
    assert curve.per_image == rows


def test_save_and_load_round_trip(tmp_path) -> None:
    one = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    row = {"image": "a", "quality": 5, "bpp": 0.1, "msssim": 0.8, "psnr": 24.0}
    two = curve_from_rows("down2-jpeg", [row])
    path = tmp_path / "sub" / "curves.json"
    save_curves(path, {"jpeg": one, "down2-jpeg": two}, {"images": "kodak"})
    loaded = load_curves(path)
    assert loaded == {"jpeg": one, "down2-jpeg": two}
    assert [p.name for p in path.parent.iterdir()] == ["curves.json"]  # no temp file left behind
    single = tmp_path / "single.json"
    single.write_text(json.dumps(one.to_dict()))
    assert load_curves(single) == {"jpeg": one}


def test_timed_rows_give_a_curve_its_times_and_keep_them_out_of_its_rows() -> None:
    rows = [
        {"image": image, "quality": q, "bpp": q / 50, "msssim": 0.9, "psnr": 30.0, "encoding_time": t}
        | {"decoding_time": t / 2}
        for q, image, t in [(80, "a", 0.2), (20, "a", 0.1), (80, "b", 0.4), (20, "b", 0.3)]
    ]
    curve = curve_from_rows("timed", rows)
    times = [seconds for pair in curve.times for seconds in pair]
    assert times == pytest.approx([0.2, 0.1, 0.3, 0.15])  # by quality (20, 80), the mean over images
    assert all("encoding_time" not in row and "decoding_time" not in row for row in curve.per_image)
    assert "times" not in curve.to_dict() and curve == curve_from_rows("timed", curve.per_image)
    assert curve_from_rows("untimed", curve.per_image).times is None


def test_compressai_json_round_trip(tmp_path) -> None:
    curve = _curve("shrink q1-q5", ANCHOR_BPP, ANCHOR_DB)
    curve.times = [PointTimes(0.01 * i, 0.02 * i) for i in range(1, 6)]
    path = tmp_path / "sub" / "shrink.json"
    save_compressai(path, curve, "shrink eval of a test curve")
    data = json.loads(path.read_text())
    assert data["name"] == "shrink q1-q5" and data["description"] == "shrink eval of a test curve"
    assert set(data["results"]) == {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"}
    assert data["results"]["ms-ssim-rgb"] == [p.msssim for p in curve.points]  # 0..1, not dB
    [loaded] = load_curves(path).values()
    assert loaded.name == curve.name and loaded.times == curve.times
    for ours, theirs in zip(curve.points, loaded.points, strict=True):
        assert theirs.quality is None  # CompressAI's format has no quality
        assert (theirs.bpp, theirs.msssim, theirs.psnr) == (ours.bpp, ours.msssim, ours.psnr)
        assert theirs.msssim_db == pytest.approx(ours.msssim_db)
    assert [p.name for p in path.parent.iterdir()] == ["shrink.json"]  # atomic: no temp file left
    curve.times = None
    assert "encoding_time" not in compressai_results(curve)["results"]
    curve.points[0].psnr = math.inf
    with pytest.raises(ValueError, match="not finite"):
        compressai_results(curve)


def test_metric_at_rate_interpolates_and_clamps() -> None:
    curve = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    for rate, value in zip(ANCHOR_BPP, ANCHOR_DB, strict=True):
        assert metric_at_rate(curve, rate) == pytest.approx(value)
    middle = metric_at_rate(curve, math.sqrt(0.45 * 0.87))
    assert 12.7 < middle < 16.4
    assert metric_at_rate(curve, 0.01) == pytest.approx(ANCHOR_DB[0])
    assert metric_at_rate(curve, 100.0) == pytest.approx(ANCHOR_DB[-1])
    assert metric_at_rate(curve, 0.45, metric="psnr") == pytest.approx(32.7)


def test_rate_at_metric_inverts_the_curve_through_its_efficient_points() -> None:
    curve = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    for rate, value in zip(ANCHOR_BPP, ANCHOR_DB, strict=True):
        assert rate_at_metric(curve, value) == pytest.approx(rate)
    middle = rate_at_metric(curve, 14.0)
    assert 0.45 < middle < 0.87 and metric_at_rate(curve, middle) == pytest.approx(14.0, abs=0.05)
    assert rate_at_metric(curve, 1.0) == pytest.approx(ANCHOR_BPP[0])  # clamped, as metric_at_rate
    assert rate_at_metric(curve, 40.0) == pytest.approx(ANCHOR_BPP[-1])
    # JPEG's q1 and q2 on dev: more bytes for no more quality never set the rate of a quality
    dominated = _curve("jpeg", [*ANCHOR_BPP, 0.3, 1.0], [*ANCHOR_DB, 9.7, 15.0])
    for value in (9.7, 11.0, 14.0, 16.4, 20.0):
        assert rate_at_metric(dominated, value) == pytest.approx(rate_at_metric(curve, value))


def test_rate_change_is_a_discrete_bd_rate_that_charges_every_byte() -> None:
    anchor = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    cheaper = _curve("cheaper", [0.8 * r for r in ANCHOR_BPP], ANCHOR_DB)
    assert operating_rate_change(cheaper, anchor) == pytest.approx(-0.2)
    assert operating_rate_change(anchor, anchor) == pytest.approx(0.0, abs=1e-12)
    assert operating_rate_change(RDCurve("one", cheaper.points[2:3]), anchor) == pytest.approx(-0.2)
    # the dev gain's blind spot: below the anchor's lowest rate its quality is clamped, so spending 12.5 %
    # more bytes for the same quality leaves the gain unchanged; the rate change charges them in full
    low, spender = _curve("low", [0.16], [11.0]), _curve("spender", [0.18], [11.0])
    assert operating_gain(low, anchor) == operating_gain(spender, anchor) == pytest.approx(11.0 - 9.7)
    ratio = (1 + operating_rate_change(spender, anchor)) / (1 + operating_rate_change(low, anchor))
    assert ratio == pytest.approx(0.18 / 0.16)
    assert bd_rate_curves(anchor, cheaper, "msssim_db") == pytest.approx(-20.0)  # the two agree on BD-rate


def test_gain_over_anchor() -> None:
    anchor = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    better = _curve("better", ANCHOR_BPP[1:4], [d + 0.5 for d in ANCHOR_DB[1:4]])
    assert operating_gain(better, anchor) == pytest.approx(0.5)
    assert operating_gain(anchor, anchor) == pytest.approx(0.0)


def test_too_little_common_quality_is_n_a_in_bdrate_the_report_and_export_family(tmp_path, capsys) -> None:
    """One rule (:func:`safe_bd_rate`): ``shrink bdrate`` printed a number where the report said n/a."""
    anchor = _curve("jpeg", [0.2, 0.4, 0.8, 1.6], [8.0, 11.0, 14.0, 17.0])
    sliver = _curve("sliver", [1.5, 1.7], [16.9, 17.05])  # 0.1 dB of common quality
    wide = _curve("wide", [0.15, 0.3, 0.6], [8.5, 11.5, 14.5])
    assert math.isfinite(bd_rate_curves(anchor, sliver))  # computable, but noise over 0.1 dB
    for metric in ("msssim_db", "psnr"):
        why = f"quality overlap 0.10 dB < {MIN_OVERLAP_DB} dB"
        assert safe_bd_rate(anchor, sliver, metric) == (None, why)
        assert safe_bd_rate(anchor, wide, metric) == (bd_rate_curves(anchor, wide, metric), None)
    rows = {row.test: row for row in get_bd_rate_table({"sliver": sliver, "wide": wide}, {"jpeg": anchor})}
    assert rows["sliver"].values == {"msssim_db": None, "psnr": None}
    assert None not in rows["wide"].values.values()
    path = tmp_path / "curves.json"
    save_curves(path, {"jpeg": anchor, "sliver": sliver, "wide": wide})
    assert main(["bdrate", str(path), str(path)]) == 0
    table = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[1:]}
    assert table["sliver"][:2] == ["n/a", "n/a"]
    assert table["wide"][0] == f"{rows['wide'].values['msssim_db']:+.2f}"
    assert export_cli.safe_bd_rate is safe_bd_rate  # export --family's family BD-rate lines


def test_one_definition_of_a_point_and_of_a_gain() -> None:
    """A point's dB is the dB of its MS-SSIM, whether averaged from images or from points; a model's gain is
    the mean of its points' gains, each at its own rate, not the gain of its mean point (which the anchor's
    concavity would charge)."""
    rows = [
        {"image": "a", "quality": 10, "bpp": 0.3, "msssim": 0.85, "psnr": 26.0},
        {"image": "b", "quality": 10, "bpp": 0.5, "msssim": 0.91, "psnr": 28.0},
        {"image": "a", "quality": 70, "bpp": 1.2, "msssim": 0.975, "psnr": 33.0},
        {"image": "b", "quality": 70, "bpp": 1.6, "msssim": 0.985, "psnr": 35.0},
    ]
    curve = curve_from_rows("shrink", rows)
    point = operating_point(curve)
    for p in [*curve.points, point, mean_point(rows)]:
        assert p.msssim_db == msssim_db(p.msssim)
    overall = mean_point(rows)  # the mean of the per-quality points is the mean over every image and quality
    assert [point.bpp, point.msssim, point.msssim_db, point.psnr] == pytest.approx(
        [overall.bpp, overall.msssim, overall.msssim_db, overall.psnr]
    )
    assert (point.bpp, point.msssim, point.psnr) == pytest.approx((0.9, 0.93, 30.5))
    anchor = _curve("jpeg", ANCHOR_BPP, ANCHOR_DB)
    gain = operating_gain(curve, anchor)
    each = [p.msssim_db - metric_at_rate(anchor, p.bpp) for p in curve.points]
    assert gain == pytest.approx(sum(each) / len(each))
    assert gain > gain_at_rate(point, anchor)  # the mean point would be charged for the anchor's concavity
    one = RDCurve("one", curve.points[:1])
    assert operating_gain(one, anchor) == pytest.approx(gain_at_rate(one.points[0], anchor))
    assert msssim_from_db(msssim_db(0.93)) == pytest.approx(0.93)


def test_absurd_rates_are_a_one_line_error_not_an_overflow(tmp_path, capsys) -> None:
    def at(name: str, scale: float) -> RDCurve:
        return RDCurve(name, [RDPoint(q, scale * (q + 1), 0.9, 10.0 + q, 30.0 + q) for q in range(3)])

    save_curves(tmp_path / "anchor.json", {"jpeg": at("jpeg", 1e-300)}, {})
    save_curves(tmp_path / "test.json", {"test": at("test", 1e300)}, {})
    with pytest.raises(ValueError, match="e\\^709"):
        bd_rate_curves(at("jpeg", 1e-300), at("test", 1e300))
    assert main(["bdrate", str(tmp_path / "anchor.json"), str(tmp_path / "test.json")]) == 2
    err = capsys.readouterr().err
    assert "e^709" in err and err.count("\n") == 1 and "Traceback" not in err


def compressai_file(tmp_path, name: str, bpp, msssim, psnr, keys=("ms-ssim-rgb", "psnr-rgb")) -> str:
    """A results file as CompressAI publishes them (results/image/kodak/*.json)."""
    results = {"bpp": bpp, keys[0]: msssim, keys[1]: psnr, "encoding_time": [0.1] * len(bpp)}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "description": "test", "results": results}))
    return str(path)


def test_shrink_bdrate_reads_compressai_results_files(tmp_path, capsys) -> None:
    msssim = [msssim_from_db(db) for db in ANCHOR_DB]
    psnr = [24.0, 27.0, 30.0, 33.0, 36.0]
    anchor = compressai_file(tmp_path, "JPEG", ANCHOR_BPP, msssim, psnr)
    halved = [rate / 2 for rate in ANCHOR_BPP]  # reversed order and the older keys: both read
    test = compressai_file(tmp_path, "half", halved[::-1], msssim[::-1], psnr[::-1], ("ms-ssim", "psnr"))
    [curve] = load_curves(test).values()
    assert curve.name == "half" and [p.bpp for p in curve.points] == halved
    assert [p.msssim_db for p in curve.points] == pytest.approx(ANCHOR_DB)
    assert main(["bdrate", anchor, test]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[0] == "half" and row[1:5] == ["-50.00", "%", "-50.00", "%"]


@pytest.mark.parametrize(
    "results, message",
    [
        ({"bpp": [0.1, 0.2], "ms-ssim": [0.9, 0.95]}, "none of psnr-rgb, psnr"),
        ({"bpp": [0.1, 0.2], "ms-ssim": [0.9], "psnr": [30, 31]}, "differ in length"),
        ({"bpp": [0.1, 0.2], "ms-ssim": [0.9, 1.5], "psnr": [30, 31]}, "MS-SSIM must lie in (0, 1)"),
        ({"bpp": [0.1, "x"], "ms-ssim": [0.9, 0.95], "psnr": [30, 31]}, "not a finite number"),
        (
            {"bpp": [0.1, 0.2], "ms-ssim": [0.9, 0.95], "psnr": [30, 31]}
            | {"encoding_time": [0.1], "decoding_time": [0.1, 0.2]},
            "time lists differ in length",
        ),
    ],
)
def test_a_malformed_compressai_file_is_one_line_exit_2(tmp_path, capsys, results, message) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "bad", "results": results}))
    assert main(["bdrate", str(path), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "bad.json" in err
