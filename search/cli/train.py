"""shrink train --config FILE [--set key=value ...] --out DIR [--resume]"""

from __future__ import annotations

import argparse

from shrink.compression.config import load_config
from shrink.compression.trainer import Trainer, require_device

from ._common import ArgumentParser, add_set_argument, format_rd_table, output_dir, run_command


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink train", description="Train ComCNN + RecCNN in alternation.")
    parser.add_argument("--config", required=True, help="TOML preset (e.g. studies/presets/demo.toml)")
    add_set_argument(parser, "training.epochs=3")
    parser.add_argument(
        "--out", required=True, type=output_dir, help="run folder: checkpoints and history go here"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    return parser


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    require_device(config)
    trainer = Trainer(config, args.out)
    if args.resume:
        trainer.resume(f"{args.out}/last.ckpt")
    result = trainer.run()
    print(f"\nfinal dev RD points ({len(trainer.dev_images)} images) beside JPEG at the same bpp:")
    print(format_rd_table(result.dev_curve, result.dev_jpeg))
    print(f"checkpoint: {result.checkpoint}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
