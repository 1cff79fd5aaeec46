"""Rate-distortion curves: points, per-image rows, JSON files, interpolation at a given rate.

Averaging convention (the field's usual one): a point's bpp, MS-SSIM and PSNR are means over images of the
per-image values, and its MS-SSIM dB is computed from the mean MS-SSIM (not the mean of per-image dB), so a
point's ``msssim_db`` is always ``msssim_db(msssim)``. :func:`mean_point` is that one definition, and a
trial's operating point (:func:`operating_point`) is built on it. A trial's gain over JPEG
(:func:`operating_gain`) is the mean of its points' vertical distances from the JPEG curve, each at the
point's own rate: a discrete BD-quality, so what the gain rewards is what a BD-rate rewards.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from scipy.interpolate import PchipInterpolator

from .files import atomic_write_text, read_json
from .metrics import bpp, ms_ssim, msssim_db, psnr

METRICS = ("msssim", "msssim_db", "psnr")
MAX_CURVE_FILE_BYTES = 256 << 20  # Kodak's baselines with every per-image row take 0.6 MB
MAX_CURVE_NAME = 200  # characters: a name labels a table row and a plot legend
# Per-image row keys of the seconds a file's encode and decode took (CompressAI's result keys for their means)
TIME_KEYS = ("encoding_time", "decoding_time")
Result = TypeVar("Result")


@dataclass
class RDPoint:
    quality: int | None
    bpp: float
    msssim: float
    msssim_db: float
    psnr: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RDPoint:
        quality = data.get("quality")
        return cls(
            quality=None if quality is None else int(quality),
            bpp=float(data["bpp"]),
            msssim=float(data["msssim"]),
            msssim_db=float(data["msssim_db"]),
            psnr=float(data["psnr"]),
        )


class PointTimes(NamedTuple):
    """A point's mean wall-clock seconds per image to encode an image into its file and decode it back."""

    encoding: float
    decoding: float


@dataclass
class RDCurve:
    """A named curve; ``times`` (one per point, where the curve was measured here or read from a CompressAI
    file) lives in memory only: our curve JSON never holds it, so files, bundles and stored trials stay
    reproducible to the byte."""

    name: str
    points: list[RDPoint]
    per_image: list[dict[str, Any]] | None = field(default=None)
    times: list[PointTimes] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "points": [p.to_dict() for p in self.points]}
        if self.per_image is not None:
            data["per_image"] = [dict(row) for row in self.per_image]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RDCurve:
        per_image = data.get("per_image")
        return cls(
            name=str(data["name"]),
            points=[RDPoint.from_dict(p) for p in data["points"]],
            per_image=None if per_image is None else [dict(row) for row in per_image],
        )

    def values(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(bpp, metric) arrays of the points, in point order."""
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
        rates = np.array([p.bpp for p in self.points], dtype=np.float64)
        return rates, np.array([getattr(p, metric) for p in self.points], dtype=np.float64)


def measure(image: str, quality: int, nbytes: int, x_hat, x) -> dict[str, Any]:
    """One per-image row: the file's size and rate over the original W x H, MS-SSIM and PSNR of x_hat."""
    height, width = x.shape[-2:]
    return {
        "image": image,
        "quality": int(quality),
        "bytes": int(nbytes),
        "bpp": bpp(nbytes, height, width),
        "msssim": float(ms_ssim(x_hat, x)[0]),
        "psnr": float(psnr(x_hat, x)[0]),
    }


def timed(function: Callable[..., Result], *args: Any) -> tuple[Result, float]:
    """(``function(*args)``, the wall-clock seconds it took)."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def time_row(encoding: float, decoding: float) -> dict[str, float]:
    """The :data:`TIME_KEYS` of a per-image row: seconds to encode the image into its file, and to decode."""
    return dict(zip(TIME_KEYS, (encoding, decoding), strict=True))


def mean_point(results: Iterable[RDPoint | Mapping[str, Any]], quality: int | None = None) -> RDPoint:
    """The one definition of the point of a set of results (per-image rows or points holding ``bpp``,
    ``msssim`` and ``psnr``): the means of bpp, MS-SSIM and PSNR, and the MS-SSIM dB of the mean MS-SSIM."""
    rows = [r.to_dict() if isinstance(r, RDPoint) else r for r in results]
    if not rows:
        raise ValueError("no rows to average")
    mean_msssim = float(np.mean([r["msssim"] for r in rows]))
    return RDPoint(
        quality=quality,
        bpp=float(np.mean([r["bpp"] for r in rows])),
        msssim=mean_msssim,
        msssim_db=msssim_db(mean_msssim),
        psnr=float(np.mean([r["psnr"] for r in rows])),
    )


def point_from_rows(rows: list[Mapping[str, Any]], quality: int | None) -> RDPoint:
    """Mean point of per-image rows holding ``bpp``, ``msssim`` and ``psnr`` (:func:`mean_point`)."""
    return mean_point(rows, quality)


def operating_point(curve: RDCurve) -> RDPoint:
    """A trained model's single dev RD point, the one a search objective uses: the :func:`mean_point` of its
    curve's points (one per quality, each over the same images, so also the mean over every image and
    quality). With one quality it is that quality's point."""
    if not curve.points:
        raise ValueError(f"curve {curve.name!r} has no points")
    return mean_point(curve.points)


def gain_at_rate(point: RDPoint, anchor: RDCurve) -> float:
    """``point``'s MS-SSIM dB minus ``anchor``'s at the point's bpp (:func:`metric_at_rate`)."""
    return point.msssim_db - metric_at_rate(anchor, point.bpp, "msssim_db")


def operating_gain(curve: RDCurve, anchor: RDCurve) -> float:
    """The one definition of a model's gain over an anchor (the dev gain over JPEG that the guard, the
    checkpoint choice, the pruners and a search judge): the mean over its points of :func:`gain_at_rate`.

    Each point is compared with the anchor at its own rate. The gain of the mean point instead (the anchor at
    the mean bpp) would charge a variable-rate model for the anchor curve's concavity: on the cpu preset's
    five dev qualities a model 23 % below JPEG in dev BD-rate scored -0.53 dB that way. For one point the two
    are the same."""
    if not curve.points:
        raise ValueError(f"curve {curve.name!r} has no points")
    return float(np.mean([gain_at_rate(point, anchor) for point in curve.points]))


def curve_from_rows(name: str, rows: Iterable[Mapping[str, Any]]) -> RDCurve:
    """One point per quality (ascending) from per-image rows with quality, bpp, msssim and psnr. Rows that
    also carry :data:`TIME_KEYS` give the curve its :attr:`RDCurve.times` (the means per quality); the
    curve's per-image rows leave them out, so only the timing varies from run to run, never a file."""
    rows = [dict(row) for row in rows]
    by_quality: dict[int | None, list[dict[str, Any]]] = {}
    for row in rows:
        by_quality.setdefault(row.get("quality"), []).append(row)
    order = sorted(by_quality, key=lambda q: (q is None, q if q is not None else 0))
    points = [point_from_rows(by_quality[q], q) for q in order]
    times = [point_times(by_quality[q]) for q in order]
    per_image = [{key: value for key, value in row.items() if key not in TIME_KEYS} for row in rows]
    return RDCurve(name, points, per_image, None if None in times else times)


def point_times(rows: Iterable[Mapping[str, Any]]) -> PointTimes | None:
    """The mean encoding and decoding seconds of rows that all carry :data:`TIME_KEYS`, else None."""
    rows = list(rows)
    if not rows or not all(key in row for row in rows for key in TIME_KEYS):
        return None
    return PointTimes(*(float(np.mean([row[key] for row in rows])) for key in TIME_KEYS))


def save_curves(
    path: str | Path, curves: Mapping[str, RDCurve], meta: Mapping[str, Any] | None = None
) -> None:
    """Write ``{"curves": {name: curve}, "meta": meta}`` as JSON, atomically (temp file + os.replace)."""
    payload = {"curves": {name: curve.to_dict() for name, curve in curves.items()}, "meta": dict(meta or {})}
    atomic_write_text(path, json.dumps(payload, indent=1, allow_nan=True))


JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def read_curve_file(path: str | Path) -> Any:
    """The JSON document of a curve file, read as every file a user hands us is (:func:`read_json`: a regular
    file of at most :data:`MAX_CURVE_FILE_BYTES`, UTF-8, bounded nesting, finite numbers)."""
    return read_json(path, MAX_CURVE_FILE_BYTES, "curve file")


def load_curves(path: str | Path) -> dict[str, RDCurve]:
    """Curves of a file written by :func:`save_curves`, of a file holding one bare curve dict, or of a
    CompressAI results file (:func:`curve_from_compressai`).

    Anything else (not a regular file, not JSON, a scalar, a curve name over :data:`MAX_CURVE_NAME`
    characters, a curve without points or with a malformed or non-finite point) is a one-line ValueError
    naming the file and, where it applies, the curve.
    """
    data = read_curve_file(path)
    if not isinstance(data, dict):
        holds = JSON_TYPES.get(type(data), "a number")
        raise ValueError(f"{path}: neither a curves file nor a single curve (it holds {holds})")
    if "results" in data:
        curve = curve_from_compressai(path, data)
        return {curve.name: curve}
    if "curves" in data:
        if not isinstance(data["curves"], dict):
            raise ValueError(f"{path}: 'curves' is not an object of named curves")
        raw = {str(name): curve for name, curve in data["curves"].items()}
    elif "points" in data:
        raw = {str(data.get("name", Path(path).stem)): data}
    else:
        raise ValueError(f"{path}: neither a curves file nor a single curve (no 'curves' or 'points' key)")
    if not raw:
        raise ValueError(f"{path}: no curves")
    return {name: _curve_from_file(path, name, curve) for name, curve in raw.items()}


# CompressAI's results JSON ({"name", "description", "results": {"bpp": [...], ...}}): each metric's keys
COMPRESSAI_KEYS = {"msssim": ("ms-ssim-rgb", "ms-ssim"), "psnr": ("psnr-rgb", "psnr")}


def compressai_results(curve: RDCurve, description: str = "") -> dict[str, Any]:
    """``curve`` as CompressAI's results JSON: bpp, psnr-rgb and ms-ssim-rgb (0..1, not dB) in point order,
    and, where the curve has :attr:`RDCurve.times`, encoding_time and decoding_time (mean seconds per
    image). :func:`curve_from_compressai` reads it back; CompressAI's own plotting reads it too."""
    values = {"bpp": [p.bpp for p in curve.points], "psnr-rgb": [p.psnr for p in curve.points]}
    values["ms-ssim-rgb"] = [p.msssim for p in curve.points]
    if curve.times is not None:
        values |= {key: [float(t[index]) for t in curve.times] for index, key in enumerate(TIME_KEYS)}
    if not all(math.isfinite(value) for column in values.values() for value in column):
        raise ValueError(f"curve {curve.name!r} holds a value that is not finite (CompressAI JSON has none)")
    return {"name": curve.name, "description": description, "results": values}


def save_compressai(path: str | Path, curve: RDCurve, description: str = "") -> Path:
    """Write :func:`compressai_results` of ``curve`` as JSON, atomically: one curve a file, as CompressAI."""
    return atomic_write_text(path, json.dumps(compressai_results(curve, description), indent=2) + "\n")


def curve_from_compressai(path: str | Path, data: Mapping[str, Any]) -> RDCurve:
    """The curve of a CompressAI results file (its published curves, e.g. ``results/image/kodak/jpeg.json``):
    one point per entry, ordered by rate, quality unknown, with its times where it has both time lists;
    MS-SSIM must lie in (0, 1) and every value be finite."""
    results, name = data["results"], data.get("name")
    if not isinstance(results, dict) or not isinstance(name, str) or not name:
        raise ValueError(f"{path}: a CompressAI results file needs a 'name' and a 'results' object")
    _check_name(path, name)
    columns = {"bpp": _compressai_column(path, results, ("bpp",))}
    columns |= {metric: _compressai_column(path, results, keys) for metric, keys in COMPRESSAI_KEYS.items()}
    if all(key in results for key in TIME_KEYS):
        columns |= {key: _compressai_column(path, results, (key,)) for key in TIME_KEYS}
    if len({len(values) for values in columns.values()}) != 1:
        lists = "bpp, MS-SSIM, PSNR and time" if TIME_KEYS[0] in columns else "bpp, MS-SSIM and PSNR"
        raise ValueError(f"{path}: its {lists} lists differ in length")
    if not all(0 < value < 1 for value in columns["msssim"]) or min(columns["bpp"]) <= 0:
        raise ValueError(f"{path}: MS-SSIM must lie in (0, 1) and bpp be positive")
    rate, quality, peak = columns["bpp"], columns["msssim"], columns["psnr"]
    order = sorted(range(len(rate)), key=lambda i: (rate[i], quality[i], peak[i]))
    points = [RDPoint(None, rate[i], quality[i], msssim_db(quality[i]), peak[i]) for i in order]
    if TIME_KEYS[0] not in columns:
        return RDCurve(name, points)
    return RDCurve(name, points, times=[PointTimes(*(columns[key][i] for key in TIME_KEYS)) for i in order])


def _compressai_column(path: str | Path, results: Mapping[str, Any], keys: tuple[str, ...]) -> list[float]:
    key = next((key for key in keys if key in results), None)
    if key is None:
        raise ValueError(f"{path}: its results hold none of {', '.join(keys)}")
    values = results[key]
    if not isinstance(values, list) or not values:
        raise ValueError(f"{path}: results[{key!r}] is not a list of numbers")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{path}: results[{key!r}] holds a value that is not a finite number")
    return [float(value) for value in values]


def _curve_from_file(path: str | Path, name: str, data: Any) -> RDCurve:
    _check_name(path, name)
    points = data.get("points") if isinstance(data, dict) else None
    if not isinstance(points, list) or not all(isinstance(point, dict) for point in points):
        raise ValueError(f"{path}: curve {name!r} needs 'points', a list of objects")
    try:
        curve = RDCurve.from_dict({**data, "name": name})
    except KeyError as error:
        raise ValueError(f"{path}: curve {name!r} lacks the field {error}") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: curve {name!r} is malformed ({error})") from None
    if not curve.points:
        raise ValueError(f"{path}: curve {name!r} has no points")
    values = [value for p in curve.points for value in (p.bpp, p.msssim, p.msssim_db, p.psnr)]
    if not all(math.isfinite(value) for value in values) or min(p.bpp for p in curve.points) <= 0:
        raise ValueError(f"{path}: curve {name!r} needs points of finite values, bpp > 0")
    return curve


def _check_name(path: str | Path, name: str) -> None:
    if len(name) > MAX_CURVE_NAME:
        raise ValueError(f"{path}: a curve name of {len(name)} characters (at most {MAX_CURVE_NAME})")


def metric_at_rate(curve: RDCurve, bpp: float, metric: str = "msssim_db") -> float:
    """``metric`` at rate ``bpp``: PCHIP over log(bpp), clamped to the end values outside the curve's range.

    Clamping instead of extrapolating is the conservative choice: the answer is always a value the curve
    actually reached, never a trend continued past the measurements (a PCHIP or linear extrapolation in
    log-rate runs away quickly). Note the direction: below the curve's lowest rate a rising curve is
    over-credited, above its highest rate under-credited. Points with the same rate are averaged.
    """
    rates, values = curve.values(metric)
    if len(rates) == 0:
        raise ValueError(f"curve {curve.name!r} has no points")
    if np.any(rates <= 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"curve {curve.name!r}: rates must be > 0 and {metric} finite")
    unique_rates, inverse = np.unique(rates, return_inverse=True)
    means = np.bincount(inverse, weights=values) / np.bincount(inverse)
    if len(unique_rates) == 1:
        return float(means[0])
    log_rate = math.log(bpp)
    log_rates = np.log(unique_rates)
    if log_rate <= log_rates[0]:
        return float(means[0])
    if log_rate >= log_rates[-1]:
        return float(means[-1])
    return float(PchipInterpolator(log_rates, means)(log_rate))


def efficient_points(rates, qualities) -> tuple[np.ndarray, np.ndarray]:
    """(rates, qualities) of the points no cheaper point matches, both strictly increasing: sorted by rate,
    a point whose quality does not exceed that of every cheaper point (a duplicate quality, or a dip) is
    dominated and dropped, which makes quality a function of rate and rate a function of quality."""
    rates, qualities = np.asarray(rates, dtype=np.float64), np.asarray(qualities, dtype=np.float64)
    kept_rates: list[float] = []
    kept_qualities: list[float] = []
    for index in np.lexsort((-qualities, rates)):  # by rate, the best quality first among equal rates
        if not kept_qualities or qualities[index] > kept_qualities[-1]:
            kept_rates.append(float(rates[index]))
            kept_qualities.append(float(qualities[index]))
    return np.array(kept_rates), np.array(kept_qualities)


def rate_at_metric(curve: RDCurve, value: float, metric: str = "msssim_db") -> float:
    """The bpp at which ``curve`` reaches ``value`` of ``metric``: PCHIP of log(bpp) over the metric, through
    the curve's :func:`efficient_points` (a point that costs more for no more quality never sets the rate),
    clamped to the end rates outside their range, as :func:`metric_at_rate`.
    """
    rates, values = curve.values(metric)
    if len(rates) == 0:
        raise ValueError(f"curve {curve.name!r} has no points")
    if np.any(rates <= 0) or not np.all(np.isfinite(values)):
        raise ValueError(f"curve {curve.name!r}: rates must be > 0 and {metric} finite")
    rates, values = efficient_points(rates, values)
    if len(values) == 1 or value <= values[0]:
        return float(rates[0])
    if value >= values[-1]:
        return float(rates[-1])
    return float(math.exp(PchipInterpolator(values, np.log(rates))(value)))


def operating_rate_change(curve: RDCurve, anchor: RDCurve, metric: str = "msssim_db") -> float:
    """A model's rate against an anchor at equal quality, the horizontal twin of :func:`operating_gain`:
    ``exp(mean over points of ln(bpp / anchor bpp at the point's metric)) - 1``, so -0.25 means a quarter
    fewer bytes than the anchor for the same quality. It is a discrete BD-rate (the mean log-rate ratio that
    BD-rate integrates), defined from one point on.

    The gain in dB misjudges bytes wherever the anchor is flat or measured no lower: below JPEG's lowest
    rate the anchor is clamped, so there a point's extra bytes cost nothing. At equal quality every byte
    counts, and a trained model's qualities lie well inside JPEG's (q1 to q100)."""
    if not curve.points:
        raise ValueError(f"curve {curve.name!r} has no points")
    log_ratios = [
        math.log(point.bpp / rate_at_metric(anchor, getattr(point, metric), metric)) for point in curve.points
    ]
    return float(math.expm1(np.mean(log_ratios)))
