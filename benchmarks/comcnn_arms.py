"""What the ComCNN adds, and which gradient mode and loss mixture win: one preset, several arms, one process.

Each arm is the preset plus its own ``--set`` overrides, trained with the same seed, crops and budget; the
control arm never gives the ComCNN a turn (the RecCNN behind plain bicubic downscaling). Selection figures are
on the preset's dev images only: the dev BD-rate (MS-SSIM dB) of the best epoch's dev curve against the dev
JPEG curve, the best dev gain, and how many ComCNN turns the guard judged and rolled back. Report test-set
figures (Kodak) afterwards with ``shrink eval`` on the winner's ``best.ckpt``; never choose on them.

    .venv/bin/python benchmarks/comcnn_arms.py --config studies/presets/cpu.toml --out runs/arms \\
        --set training.epochs=10 --set training.steps_per_epoch=100 --set training.rec_warmup_epochs=2 \\
        --arm "rec-only:training.rec_warmup_epochs=10" --arm "straight-through:" \\
        --arm "identity:training.gradient_mode=identity" --arm "proxy:training.gradient_mode=proxy"
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from shrink.compression.bdrate import bd_rate_curves
from shrink.compression.config import load_config
from shrink.compression.files import atomic_write_text
from shrink.compression.rd import RDCurve, RDPoint
from shrink.compression.trainer import Trainer, best_record


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition(":")
    if not name:
        raise SystemExit(f"--arm {text!r}: expected NAME:key=value,key=value")
    return name, [item for item in overrides.split(",") if item]


def run_arm(config_path: str, overrides: list[str], out: Path) -> dict:
    config = load_config(config_path, overrides)
    trainer = Trainer(config, out, log=lambda line: print(f"  {line}", flush=True))
    start = time.monotonic()
    history = trainer.run().history
    best = best_record(history, config.training.judge)  # the epoch best.ckpt holds
    best_curve = RDCurve("best", [RDPoint.from_dict(point) for point in best.dev_points])
    judged = [record for record in history if record.com_baseline_gain_db is not None]
    return {
        "seconds": round(time.monotonic() - start, 1),
        "steps": trainer.step,
        "best_epoch": best.epoch,
        "best_gain_db": best.dev_gain_db,
        "best_rate_pct": 100 * best.dev_rate_change,  # the discrete dev BD-rate training.judge = "rate" uses
        "dev_bd_rate": bd_rate_curves(trainer.dev_jpeg, best_curve, "msssim_db"),
        "dev_bd_rate_psnr": bd_rate_curves(trainer.dev_jpeg, best_curve, "psnr"),
        "com_turns_judged": len(judged),
        "com_turns_rolled_back": sum(record.rolled_back for record in judged),
        "com_turn_effects_db": [  # what each kept turn added over the ComCNN before it
            round(record.dev_gain_db - record.com_baseline_gain_db, 4)
            for record in judged
            if not record.rolled_back
        ],
        "checkpoint": str(out / "best.ckpt"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="studies/presets/cpu.toml")
    parser.add_argument("--set", action="append", default=[], dest="overrides", help="for every arm")
    parser.add_argument("--arm", action="append", required=True, help="NAME:key=value,key=value")
    parser.add_argument("--out", default="runs/arms")
    args = parser.parse_args()

    out = Path(args.out)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    for name, overrides in map(parse_arm, args.arm):
        if name in summary:  # finished in an earlier invocation; arms are resumable one by one
            continue
        overrides = args.overrides + overrides
        print(f"arm {name}: {' '.join(overrides) or '(preset)'}", flush=True)
        summary[name] = {"overrides": overrides, **run_arm(args.config, overrides, out / name)}
        atomic_write_text(summary_path, json.dumps(summary, indent=1))
    print_table(summary)


COLUMNS = (  # (title, key, format)
    ("dev BD-rate", "dev_bd_rate", "{:.2f}%"),
    ("(PSNR)", "dev_bd_rate_psnr", "{:.2f}%"),
    ("best gain", "best_gain_db", "{:+.3f} dB"),
    ("best rate", "best_rate_pct", "{:+.2f}%"),
    ("judged", "com_turns_judged", "{}"),
    ("rolled back", "com_turns_rolled_back", "{}"),
    ("time", "seconds", "{:.0f} s"),
)


def print_table(summary: dict) -> None:
    print("\n" + f"{'arm':<20}" + "".join(f"{title:>13}" for title, _, _ in COLUMNS))
    for name, row in summary.items():
        cells = (fmt.format(row[key]) if key in row else "-" for _, key, fmt in COLUMNS)  # older summaries
        print(f"{name:<20}" + "".join(f"{cell:>13}" for cell in cells))


if __name__ == "__main__":
    main()
