"""The ``shrink`` command: a thin dispatcher; each subcommand is a module with ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import os
import sys

# gRPC's core logs a line of its own (INFO) when a storage proxy goes away; our retries already say it in one
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

COMMANDS = {
    "train": ("shrink.search.cli.train", "train one config (TOML preset + --set overrides)"),
    "eval": ("shrink.search.cli.evaluate", "evaluate a checkpoint or bundle on an image folder"),
    "baselines": ("shrink.search.cli.baselines", "JPEG, downscale+bicubic, WebP and AVIF curves"),
    "bdrate": ("shrink.search.cli.bdrate", "BD-rate of one RD curve against another"),
    "demo": ("shrink.search.cli.demo", "the demo study end to end (the README's main job)"),
    "study": (
        "shrink.search.cli.study",
        "create a study from a spec: shrink study create SPEC --storage URL",
    ),
    "storage": (
        "shrink.search.cli.storage",
        "shrink storage serve --storage URL: a gRPC proxy in front of a database (grpc://HOST:PORT)",
    ),
    "worker": ("shrink.search.cli.worker", "run trials of a study until its budget is reached"),
    "launch": ("shrink.search.cli.launch", "worker processes on a node's GPUs or CPU cores, on one study"),
    "trial": ("shrink.search.cli.trial", "run one trial asked with `optuna ask`"),
    "space": ("shrink.search.cli.space", "print a spec's search space as `optuna ask --search-space` JSON"),
    "refine": ("shrink.search.cli.refine", "retrain chosen trials at full fidelity as a child study"),
    "export": ("shrink.search.cli.export", "export trials as bundles, or as one codec family"),
    "dashboard": ("shrink.search.cli.dashboard", "optuna-dashboard on a study, with trial artifacts"),
    "compress": ("shrink.search.cli.compress", "compress images into standard JPEGs with a bundle"),
    "decompress": ("shrink.search.cli.decompress", "decompress a shrink JPEG into a full-size image"),
    "zoo": ("shrink.search.cli.zoo", "list the trained codecs shipped in the package (--model zoo:NAME)"),
    "report": ("shrink.search.cli.report", "one self-contained HTML report of a study"),
}


def usage() -> str:
    lines = ["usage: shrink COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    lines += ["", "Run 'shrink COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"shrink: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
