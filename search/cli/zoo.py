"""shrink zoo list | show NAME | add NAME ...: the trained codecs shipped in the package (zoo:NAME)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from shrink.compression import zoo
from shrink.compression.config import format_validation_error
from shrink.compression.names import check_name
from shrink.compression.rd import load_curves
from shrink.compression.text import LINE_LIMIT, plain_text

from ._common import ArgumentParser, run_command

# The anchors `shrink zoo list` shows; `shrink zoo show` prints every anchor of the card.
LIST_ANCHORS = ("jpeg", "mozjpeg", "webp", "avif")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shrink zoo", description="Trained codecs shipped in the package.")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=ArgumentParser)
    listing = actions.add_parser("list", help="each model: preset, training command, commit, Kodak BD-rates")
    show = actions.add_parser("show", help="one model's card, verified against its bundle")
    show.add_argument("name", help="a zoo model, e.g. cpu (or zoo:cpu)")
    for action in (listing, show):
        action.add_argument("--root", type=Path, default=zoo.ZOO_ROOT, help=argparse.SUPPRESS)
    add = actions.add_parser("add", help="a trained checkpoint joins the zoo, with its measured card")
    add.add_argument("name", help="letters, digits, '.', '_', '-' (up to 64): the model becomes zoo:NAME")
    add.add_argument("--checkpoint", required=True, help="RUN/best.ckpt of `shrink train`")
    add.add_argument("--curve", required=True, help="`shrink eval` JSON of the checkpoint's bundle on Kodak")
    add.add_argument("--anchors", required=True, help="`shrink baselines --json` of the same images")
    add.add_argument("--preset", required=True, help="the training config, relative to the checkout")
    add.add_argument("--commit", required=True, help="the commit the training ran on")
    add.add_argument("--train-command", required=True, help="the command that trained it")
    add.add_argument("--trained", required=True, help="how the run went (steps, wall time, best epoch)")
    add.add_argument("--description", required=True)
    add.add_argument(
        "--root", type=Path, default=zoo.ZOO_ROOT, help="the zoo folder (default: the package's)"
    )
    add.add_argument("--force", action="store_true", help="replace a zoo model of that name")
    return parser


def bd_text(card: zoo.ZooCard, anchor: str) -> str:
    rates = card.kodak_bd_rate.get(anchor)
    if rates is None:
        return f"{anchor} n/a"
    psnr = "n/a" if rates.psnr is None else f"{rates.psnr:+.2f} %"
    return f"{anchor} {rates.msssim_db:+.2f} % (PSNR {psnr})"


def printable(card: zoo.ZooCard) -> zoo.ZooCard:
    """The card with each text as one bounded line without control codes: a card is a file anyone may edit."""
    texts = {key: plain_text(value, LINE_LIMIT) for key, value in card if isinstance(value, str)}
    rates = {plain_text(anchor): rates for anchor, rates in card.kodak_bd_rate.items()}
    return card.model_copy(update=texts | {"kodak_bd_rate": rates})


def list_text(card: zoo.ZooCard) -> str:
    card = printable(card)
    anchors = ", ".join(bd_text(card, anchor) for anchor in LIST_ANCHORS)
    return "\n".join(
        (
            f"{zoo.PREFIX}{card.name}: {card.description}",
            f"  preset   {card.preset} (commit {card.commit[:12]})",
            f"  trained  {card.train_command}",
            f"  Kodak    BD-rate, MS-SSIM dB: {anchors}",
        )
    )


def show_text(card: zoo.ZooCard) -> str:
    card = printable(card)
    lines = [
        f"{zoo.PREFIX}{card.name}: {card.description}",
        f"bundle sha256  {card.bundle_sha256} (verified)",
        f"preset         {card.preset}",
        f"commit         {card.commit}",
        f"trained        {card.train_command}",
        f"               {card.trained}",
        f"evaluated      {card.eval_command}",
        f"BD-rates       {card.bdrate_command}",
        f"curves         {card.curve} against {card.anchors}",
        "Kodak BD-rate (q5-95 grid; MS-SSIM dB, PSNR in brackets; negative = fewer bytes than the anchor):",
    ]
    lines += [f"  {bd_text(card, anchor)}" for anchor in card.kodak_bd_rate]
    return "\n".join(lines)


def draft_card(args: argparse.Namespace) -> zoo.ZooCard:
    """The card of ``shrink zoo add``: BD-rates computed now from the curve files, as shrink bdrate does."""
    curves, anchors = load_curves(args.curve), load_curves(args.anchors)
    if len(curves) != 1:
        raise ValueError(f"--curve {args.curve}: one curve expected (shrink eval's), it holds {len(curves)}")
    [curve] = curves.values()
    meta = zoo.evaluation_meta(args.curve)
    try:
        return card_of(args, meta, zoo.bd_rates(curve, anchors), list(anchors))
    except ValidationError as error:
        raise ValueError(f"the card would not validate: {format_validation_error(error)}") from None


def card_of(args: argparse.Namespace, meta: dict, rates: dict, anchors: list[str]) -> zoo.ZooCard:
    return zoo.ZooCard(
        name=args.name,
        description=args.description,
        preset=args.preset,
        train_command=args.train_command,
        commit=args.commit,
        trained=args.trained,
        bundle_sha256=meta["bundle_sha256"],
        eval_command=f"shrink eval {zoo.PREFIX}{args.name} --data {meta['data']} --json {args.curve}",
        bdrate_command=f"shrink bdrate {args.anchors} {args.curve} --anchor-curve {' '.join(anchors)}",
        curve=args.curve,
        anchors=args.anchors,
        kodak_bd_rate=rates,
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "add":
        check_name(args.name, "zoo model")  # before the curve files are read
        folder = zoo.add_model(draft_card(args), args.checkpoint, args.root, overwrite=args.force)
        print(f"added {zoo.PREFIX}{args.name}: {folder}")
        return 0
    if args.action == "list":
        names = zoo.names(args.root)
        print("\n\n".join(list_text(zoo.card(name, args.root)) for name in names) or "the zoo is empty")
        return 0
    print(show_text(zoo.verify(args.name.removeprefix(zoo.PREFIX), args.root)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(build_parser(), run, argv)
