"""Storage cost of a trial: seconds per ask + user attributes + tell, per backend, up to N trials.

Each trial writes what a shrink trial writes, at demo scale, through ``study.optimize(n_trials=1)`` as the
worker calls it (so the heartbeat record and stale-trial check of RDB storages are counted; gc is not): the
sampler asks six params of the demo space's kinds (int, log float, categorical), the trial runner's start
attributes (original_trial, run_dir, device), the growing "epochs" list once per epoch, the end attributes
(checkpoint, wall_s, worker_wall_s, rd_point, dev_points), then the two objective values (minimise bpp,
maximise MS-SSIM). Storages are opened with :func:`shrink.search.storage.open_storage`, so SQLite runs in WAL
mode with our busy timeout and heartbeat. The sampler is a seeded RandomSampler, so the figures are the
storage's; ``--sampler tpe`` gives the workers' default TPE sampler (its cost grows with the study).

Per storage it prints the total, the mean per trial, the mean over the first and the last 100 trials (half the
trials below 200; growth with study size) and those costs as a share of a demo trial. ``--demo-trial-s``
defaults to 10.6 s: the median wall time of the 9 complete trials of one ``shrink demo`` run on this 2-core
machine (runs/demo/study.db, 2 threads; 9.7 s counting its pruned trial). It also times one full-study read at
N trials, which the loop above does not include: a worker with the demo's pareto-halving pruner makes about
E + 3 per trial (budget check x2, trial summary, one per epoch for the pruner) on its warm storage (Optuna
caches finished RDB trials in the process; the journal replays only new lines), and a cold one (fresh storage:
a new worker attaching, the dashboard) once.

    .venv/bin/python benchmarks/storage_overhead.py [--trials 1000] [--epochs 4] [--sampler random|tpe]
        [--postgres postgresql+psycopg://user:pass@host/db] [--keep DIR] [--demo-trial-s 10.6]

PostgreSQL runs when ``--postgres`` or the environment variable SHRINK_TEST_POSTGRES_URL gives a URL; the
study it makes there is deleted afterwards unless ``--keep`` is given. ``--keep DIR`` writes the SQLite and
journal files to DIR (``bench.db``, ``bench.log``, study name "storage-overhead") instead of a temporary
folder that is removed.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna

from shrink.search.storage import StorageError, open_storage, redact

STUDY_NAME = "storage-overhead"
DIRECTIONS = ["minimize", "maximize"]
POSTGRES_ENV = "SHRINK_TEST_POSTGRES_URL"
DEMO_TRIAL_S = 10.6
WINDOW = 100


def suggest(trial: optuna.Trial) -> dict:
    """Six params of the kinds the demo space holds, under its names."""
    return {
        "codec.quality": trial.suggest_int("codec.quality", 10, 90, step=10),
        "model.reccnn.depth": trial.suggest_int("model.reccnn.depth", 4, 8),
        "model.reccnn.width": trial.suggest_categorical("model.reccnn.width", [16, 24, 32]),
        "training.gradient_mode": trial.suggest_categorical(
            "training.gradient_mode", ["straight-through", "identity"]
        ),
        "optim_rec.lr": trial.suggest_float("optim_rec.lr", 5e-4, 4e-3, log=True),
        "loss.fidelity_weight": trial.suggest_float("loss.fidelity_weight", 1.0, 30.0, log=True),
    }


def epoch_record(rng: random.Random, epoch: int) -> dict:
    """The keys of records.EpochSummary, with full-precision floats like the real ones."""
    msssim = rng.uniform(0.85, 0.99)
    return {
        "epoch": epoch,
        "step": 30 * epoch,
        "seconds": round(rng.uniform(2.0, 5.0), 3),
        "dev_bpp": rng.uniform(0.2, 1.2),
        "dev_msssim": msssim,
        "dev_msssim_db": -10 * math.log10(1 - msssim),
        "dev_psnr": rng.uniform(24.0, 34.0),
        "dev_gain_db": rng.gauss(0.2, 0.7),
        "rolled_back": rng.random() < 0.3,
        "partial": False,
    }


def objective(epochs: int, seed: int) -> Callable[[optuna.Trial], tuple[float, float]]:
    def run(trial: optuna.Trial) -> tuple[float, float]:
        rng = random.Random(seed * 1_000_003 + trial.number)
        suggest(trial)
        run_dir = f"runs/bench/{STUDY_NAME}/trial-{trial.number:05d}"
        trial.set_user_attr("original_trial", trial.number)
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("device", "cpu (2 threads)")
        history: list[dict] = []
        for epoch in range(1, epochs + 1):
            history.append(epoch_record(rng, epoch))
            trial.set_user_attr("epochs", history)
        best = max(history, key=lambda record: record["dev_gain_db"])
        trial.set_user_attr("checkpoint", f"{run_dir}/best.ckpt")
        trial.set_user_attr("wall_s", round(sum(r["seconds"] for r in history), 1))
        trial.set_user_attr("worker_wall_s", round(sum(r["seconds"] for r in history) + 1.0, 1))
        trial.set_user_attr("rd_point", best)
        trial.set_user_attr(
            "dev_points",
            [
                {
                    "quality": trial.params["codec.quality"],
                    "bpp": best["dev_bpp"],
                    "msssim": best["dev_msssim"],
                    "msssim_db": best["dev_msssim_db"],
                    "psnr": best["dev_psnr"],
                }
            ],
        )
        return best["dev_bpp"], best["dev_msssim"]

    return run


def build_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":  # as shrink.search.study.build_sampler builds it, with the demo's n_startup_trials
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=4, multivariate=True, constant_liar=True
        )
    return optuna.samplers.RandomSampler(seed=seed)


def run_storage(url: str, study_name: str, args: argparse.Namespace) -> dict:
    """Time N trials on a fresh study at ``url``; the storage's engine is disposed of before returning."""
    storage = open_storage(url)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            directions=DIRECTIONS,
            sampler=build_sampler(args.sampler, args.seed),
        )
        study.set_metric_names(["dev_bpp", "dev_msssim"])
        body = objective(args.epochs, args.seed)
        seconds = []
        for _ in range(args.trials):
            start = time.perf_counter()
            study.optimize(body, n_trials=1, gc_after_trial=False)
            seconds.append(time.perf_counter() - start)
        reads = []
        for _ in range(3):
            start = time.perf_counter()
            study.get_trials(deepcopy=False)
            reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        fresh = open_storage(url)
        try:
            optuna.load_study(study_name=study_name, storage=fresh).get_trials(deepcopy=False)
        finally:
            dispose(fresh)
        cold = time.perf_counter() - start
        return {"seconds": seconds, "read_s": statistics.median(reads), "cold_read_s": cold}
    finally:
        dispose(storage)


def dispose(storage: optuna.storages.BaseStorage) -> None:
    engine = getattr(storage, "engine", None)
    if engine is not None:
        engine.dispose()


def row(name: str, result: dict, window: int, demo_trial_s: float) -> str:
    seconds = result["seconds"]
    total = sum(seconds)
    per_trial = total / len(seconds)
    first = statistics.fmean(seconds[:window])
    last = statistics.fmean(seconds[-window:])
    return (
        f"{name:<10}{total:>10.2f}{per_trial:>12.4g}{first:>12.4g}{last:>12.4g}{last / first:>9.2f}x"
        f"{100 * per_trial / demo_trial_s:>11.3g} %{100 * last / demo_trial_s:>11.3g} %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (studies/demo.toml: 4)")
    parser.add_argument("--sampler", choices=["random", "tpe"], default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", metavar="URL", default=os.environ.get(POSTGRES_ENV))
    parser.add_argument("--keep", metavar="DIR", help="write bench.db and bench.log to DIR and keep them")
    parser.add_argument(
        "--demo-trial-s",
        type=float,
        default=DEMO_TRIAL_S,
        help="a demo trial's wall time (default: median of one `shrink demo` on this 2-core machine)",
    )
    args = parser.parse_args()
    if args.trials < 1 or args.epochs < 1 or args.demo_trial_s <= 0:
        parser.error("--trials and --epochs must be >= 1 and --demo-trial-s > 0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    window = max(1, min(WINDOW, args.trials // 2))
    print(
        f"{args.trials} trials x {args.epochs} epochs, {args.sampler} sampler (seed {args.seed}), 6 params, "
        f"directions {DIRECTIONS}; demo trial {args.demo_trial_s:g} s"
    )
    print(
        f"{'storage':<10}{'total s':>10}{'s/trial':>12}{f'first {window}':>12}{f'last {window}':>12}"
        f"{'growth':>10}{'of demo':>13}{'last/demo':>13}"
    )
    reads: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="shrink-storage-bench-") as tmp:
        folder = Path(args.keep or tmp).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        files = {"sqlite": folder / "bench.db", "journal": folder / "bench.log"}
        existing = [str(path) for path in files.values() if path.exists()]
        if existing:
            parser.error(f"{', '.join(existing)} already exist; give --keep an empty folder")
        urls = {"sqlite": f"sqlite:///{files['sqlite']}", "journal": f"journal:{files['journal']}"}
        for name, url in urls.items():
            result = run_storage(url, STUDY_NAME, args)
            reads[name] = result
            print(row(name, result, window, args.demo_trial_s), flush=True)
        if not args.postgres:
            print(f"{'postgres':<10}skipped (no server)")
        else:
            study_name = f"{STUDY_NAME}-{uuid.uuid4().hex[:8]}"
            try:
                result = run_storage(args.postgres, study_name, args)
            except StorageError as error:
                print(f"{'postgres':<10}skipped ({error})")
            else:
                reads["postgres"] = result
                print(row("postgres", result, window, args.demo_trial_s))
                if args.keep:
                    print(f"postgres study {study_name!r} kept in {redact(args.postgres)}")
                else:
                    optuna.delete_study(study_name=study_name, storage=args.postgres)
    n_reads = args.epochs + 3
    print(
        f"one full-study read at {args.trials} trials (not counted above; a pareto-halving worker makes "
        f"~{n_reads} warm ones per trial):"
    )
    for name, result in reads.items():
        warm = result["read_s"]
        print(
            f"  {name:<10}warm {warm:.4g} s (x{n_reads} = {100 * n_reads * warm / args.demo_trial_s:.3g} % "
            f"of demo), cold (fresh storage + load_study) {result['cold_read_s']:.4g} s"
        )
    if args.keep:
        print(f"kept {files['sqlite']} and {files['journal']} (study {STUDY_NAME!r})")


if __name__ == "__main__":
    main()
