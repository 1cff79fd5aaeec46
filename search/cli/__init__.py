"""The ``shrink`` command: a thin dispatcher; each subcommand is a module with ``main(argv) -> int``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("shrink.search.cli.train", "train one config (TOML preset + --set overrides)"),
    "eval": ("shrink.search.cli.evaluate", "evaluate a checkpoint on an image folder"),
    "baselines": ("shrink.search.cli.baselines", "JPEG, downscale+bicubic, WebP and AVIF curves"),
    "bdrate": ("shrink.search.cli.bdrate", "BD-rate of one RD curve against another"),
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
