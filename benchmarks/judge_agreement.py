"""Which dev score predicts Kodak BD-rate: the dev gain in dB, the dev rate at equal MS-SSIM, or dev BD-rate.

Reads the ``summary.json`` of ``benchmarks/architectures.py`` / ``comcnn_arms.py`` runs: per arm its
``ARM/best.ckpt`` beside the summary and its Kodak BD-rate vs JPEG (``test_bd_rate``). From each
checkpoint's best epoch (the one ``best.ckpt`` holds) it takes the dev curve and scores it against the dev
JPEG curve of the checkpoint's own dev set, three ways:

- ``training.judge = "gain"``: the mean dB over JPEG at each point's rate (``rd.operating_gain``);
- ``training.judge = "rate"``: the rate against JPEG at each point's MS-SSIM (``rd.operating_rate_change``);
- dev BD-rate (MS-SSIM dB, PCHIP on log-rate over the overlap), which needs two points or more.

It prints the table and each score's Spearman rank correlation with the Kodak BD-rate across the arms (signs
arranged so that +1 means the score ranks the arms as Kodak does). Nothing is trained; the JPEG curves are
encoded once per distinct dev set.

    .venv/bin/python benchmarks/judge_agreement.py runs/architectures/summary.json runs/arch300/summary.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import spearmanr

from shrink.compression.bdrate import bd_rate_curves
from shrink.compression.checkpoint import load_checkpoint
from shrink.compression.config import TrainConfig
from shrink.compression.rd import RDCurve, RDPoint, operating_gain, operating_rate_change
from shrink.compression.trainer import dev_jpeg_curve, load_dev_images


def best_dev_curve(checkpoint: dict) -> RDCurve:
    """The dev curve of the epoch ``best.ckpt`` holds (its last history record)."""
    record = json.loads(checkpoint["history"])[-1]
    return RDCurve("best", [RDPoint.from_dict(point) for point in record["dev_points"]])


def arm_scores(checkpoint_path: Path, jpeg_curves: dict[str, RDCurve]) -> dict[str, float]:
    checkpoint = load_checkpoint(checkpoint_path)
    data = TrainConfig.model_validate_json(checkpoint["config"]).data
    key = data.model_dump_json()
    if key not in jpeg_curves:
        jpeg_curves[key] = dev_jpeg_curve(load_dev_images(data))
    jpeg, curve = jpeg_curves[key], best_dev_curve(checkpoint)
    return {
        "gain_db": operating_gain(curve, jpeg),
        "rate_pct": 100 * operating_rate_change(curve, jpeg),
        "dev_bd_pct": bd_rate_curves(jpeg, curve, "msssim_db") if len(curve.points) > 1 else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "summaries", nargs="+", help="summary.json files of architectures.py / comcnn_arms.py"
    )
    args = parser.parse_args()
    rows, jpeg_curves = {}, {}
    for path in args.summaries:
        for name, arm in json.loads(Path(path).read_text()).items():
            if "test_bd_rate" in arm:
                label = f"{Path(path).parent.name}/{name}"
                checkpoint = Path(path).parent / name / "best.ckpt"  # the benchmarks' layout: OUT/ARM/
                rows[label] = {**arm_scores(checkpoint, jpeg_curves), "kodak_pct": arm["test_bd_rate"]}
    print(f"{'arm':<36}{'dev gain dB':>12}{'dev rate %':>12}{'dev BD %':>10}{'Kodak BD %':>12}")
    for label, row in rows.items():
        print(
            f"{label:<36}{row['gain_db']:>+12.3f}{row['rate_pct']:>+12.2f}{row['dev_bd_pct']:>+10.2f}"
            f"{row['kodak_pct']:>+12.2f}"
        )
    kodak = [-row["kodak_pct"] for row in rows.values()]  # higher = better, as the scores below
    for title, key, sign in (
        ("dev gain", "gain_db", 1),
        ("dev rate", "rate_pct", -1),
        ("dev BD", "dev_bd_pct", -1),
    ):
        rho = spearmanr([sign * row[key] for row in rows.values()], kodak, nan_policy="omit").statistic
        print(f"Spearman rho with Kodak BD-rate over {len(rows)} arms, {title}: {rho:+.3f}")


if __name__ == "__main__":
    main()
