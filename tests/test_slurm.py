"""The Slurm job script (deploy/slurm/shrink-study.sbatch): what each node runs, and the script on a real,
one-node Slurm cluster.

`make slurm` (.ci/slurm.sh) starts the cluster as root and writes its SLURM_CONF to <its folder>/env; without
it these tests skip and say why. Two "nodes" are the two tasks of a job array, each running the script's
one `shrink launch` on the same machine. Each case prints the study's final counts for CI's log.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from shrink.search.trial_runner import original_number

from .conftest import REPO
from .helpers import BIN, Trials, wait_for, write_spec

JOB_SCRIPT = REPO / "deploy" / "slurm" / "shrink-study.sbatch"
COMPLETE, FAIL, PRUNED, RUNNING, WAITING = (
    TrialState[name] for name in ("COMPLETE", "FAIL", "PRUNED", "RUNNING", "WAITING")
)


def slurm_env_file() -> Path:
    """Where .ci/slurm.sh (``make slurm``) writes what a client needs (SLURM_CONF=...)."""
    default = Path(tempfile.gettempdir()) / f"shrink-ci-slurm-{os.getuid()}"
    return Path(os.environ.get("SHRINK_SLURM_DIR") or default) / "env"


def _no_slurm(reason: str) -> None:
    message = f"no Slurm cluster: {reason}; `make slurm` starts one as root (Debian's slurm-wlm and munge)"
    if os.environ.get("SHRINK_REQUIRE_SLURM"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment for sbatch/squeue/scancel on the test cluster (never a system one); skips if none."""
    if shutil.which("sbatch") is None:
        _no_slurm("sbatch is not installed")
    env_file = slurm_env_file()
    if not env_file.is_file():
        _no_slurm(f"{env_file} is absent")
    extra = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    env = dict(os.environ, **extra)
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30, env=env)
    if probe.returncode != 0 or not re.fullmatch(r"(idle|mix|alloc|comp)\n", probe.stdout):
        _no_slurm(f"its node does not answer (sinfo: {(probe.stdout + probe.stderr).strip()[:200]!r})")
    return env


def counts(trials: list[FrozenTrial]) -> str:
    tally = Counter(t.state.name for t in trials)
    return ", ".join(f"{tally[name]} {name}" for name in sorted(tally))


def assert_exact_budget(trials: list[FrozenTrial], n_trials: int) -> None:
    """Every ticket trained once: COMPLETE + PRUNED == n_trials, one per original trial, none left over."""
    assert not [t.number for t in trials if t.state in (RUNNING, WAITING)], counts(trials)
    finished = [original_number(t) for t in trials if t.state in (COMPLETE, PRUNED)]
    assert len(finished) == n_trials and len(set(finished)) == n_trials, (counts(trials), finished)
    assert all(original_number(t) in finished for t in trials if t.state == FAIL)


class Job:
    """One `sbatch --array=0-<tasks-1>` of the job script against the study in ``url``."""

    def __init__(self, env: dict[str, str], folder: Path, url: str, tasks: int = 2):
        self.folder = folder
        self.env = dict(
            env,
            PATH=f"{BIN}{os.pathsep}{env['PATH']}",
            SHRINK_STORAGE=url,
            SHRINK_RUN_ROOT=str(folder / "runs"),
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
        )
        command = ["sbatch", "--parsable", f"--array=0-{tasks - 1}", "--cpus-per-task=1"]
        command += ["--chdir", str(folder), "--output", str(folder / "job-%A_%a.out"), str(JOB_SCRIPT), "toy"]
        submitted = subprocess.run(command, capture_output=True, text=True, timeout=60, env=self.env)
        assert submitted.returncode == 0, submitted.stderr
        self.id = submitted.stdout.strip().split(";")[0]

    def slurm(self, *command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=self.env)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def running(self) -> bool:
        return bool(self.slurm("squeue", "-h", "-j", self.id, "-o", "%i").strip())

    def wait(self, timeout: float) -> dict[str, tuple[str, str]]:
        """Waits for every task to end; (state, exit code) by task, e.g. {'7_0': ('COMPLETED', '0:0')}."""
        wait_for(lambda: not self.running(), timeout=timeout)
        records = self.slurm("scontrol", "-o", "show", "job", self.id).splitlines()
        fields = [dict(re.findall(r"(\w+)=(\S*)", record)) for record in records]
        return {f"{f['ArrayJobId']}_{f['ArrayTaskId']}": (f["JobState"], f["ExitCode"]) for f in fields}

    def log(self) -> str:
        return "".join(path.read_text() for path in sorted(self.folder.glob("job-*.out")))

    def cancel(self) -> None:
        subprocess.run(["scancel", self.id], capture_output=True, timeout=60, env=self.env)


def make_study(folder: Path, images: Path, **budget) -> str:
    url = f"sqlite:///{folder / 'study.db'}"
    spec = write_spec(folder / "toy.toml", images, **budget)
    created = subprocess.run(
        [str(BIN / "shrink"), "study", "create", str(spec), "--storage", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert created.returncode == 0, created.stderr
    return url


@pytest.mark.slow
def test_two_nodes_finish_the_exact_budget_and_the_job_completes(slurm_env, tmp_path, image_folder):
    n_trials = 4
    url = make_study(tmp_path, image_folder, n_trials=n_trials)
    job = Job(slurm_env, tmp_path, url)
    try:
        tasks = job.wait(timeout=300)  # minutes only on a machine starved of CPU
    finally:
        job.cancel()
    log = job.log()
    trials = Trials(url)()
    print(f"\nslurm job {job.id} (2 array tasks): {tasks}; study: {counts(trials)} of a budget of {n_trials}")
    assert tasks == {f"{job.id}_{i}": ("COMPLETED", "0:0") for i in (0, 1)}, log[-3000:]
    assert_exact_budget(trials, n_trials)
    assert len(trials) == n_trials  # no retry: nothing failed
    assert log.count("shrink-node: ") == 2 and log.count("launch: 1 workers exited with codes [0]") == 2, log


@pytest.mark.slow
def test_scancel_mid_trial_requeues_each_running_trial_and_a_worker_finishes_the_rest(
    slurm_env, tmp_path, image_folder
):
    n_trials, epochs, steps = 2, 4, 50  # ~10 s a trial on a free core: scancel lands mid-trial
    url = make_study(tmp_path, image_folder, n_trials=n_trials, epochs=epochs, steps=steps)
    trials = Trials(url)
    job = Job(slurm_env, tmp_path, url)

    def both_training() -> bool:  # each node's worker has started the training loop of its trial
        running = [t for t in trials() if t.state == RUNNING]
        return len(running) == 2 and len(re.findall(r"\] training on cpu", job.log())) == 2

    try:
        wait_for(both_training, timeout=240)
        job.cancel()
        tasks = job.wait(timeout=120)  # KillWait (30 s) after SIGTERM, then SIGKILL
    finally:
        job.cancel()
    log = job.log()
    after = trials()
    print(f"\nslurm job {job.id} cancelled mid-trial: {tasks}; study: {counts(after)}")
    assert {state for state, _ in tasks.values()} == {"CANCELLED"}, tasks
    assert not [t.number for t in after if t.state == RUNNING], log[-3000:]
    assert sorted(t.state for t in after) == sorted([FAIL, FAIL, WAITING, WAITING])
    reasons = [t.user_attrs["fail_reason"] for t in after if t.state == FAIL]
    assert all(reason.startswith("interrupted: ") for reason in reasons), reasons
    # Slurm signals every process of the step and `shrink launch` forwards the signal too: a repeated SIGTERM
    # is the same request, so both trials checkpoint at the signal (docs/cluster.md).
    checkpointed = re.compile(r"interrupted: stopped at step (\d+)")
    stopped_at = [int(m.group(1)) for m in map(checkpointed.match, reasons) if m]
    print(f"{len(stopped_at)} of 2 trials checkpointed at the signal (steps {stopped_at})")
    assert len(stopped_at) == 2, reasons
    assert log.count("SIGTERM received; checkpointing the running trial") == 2, log[-3000:]
    exits = re.findall(r"^launch: 1 workers exited with codes \[(-?\d+)\]$", log, re.M)
    assert len(exits) == 2 and "0" not in exits, log[-3000:]

    env = dict(os.environ, SHRINK_STORAGE=url, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    resume = [str(BIN / "shrink"), "worker", "--study-name", "toy", "--run-root", str(tmp_path / "runs")]
    started = time.monotonic()
    done = subprocess.run(resume, capture_output=True, text=True, timeout=180, env=env)
    final = trials()
    print(f"resumed by `shrink worker` in {time.monotonic() - started:.0f} s: study: {counts(final)}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = [int(step) for step in re.findall(r"resumed from .+/last\.ckpt at step (\d+)", done.stdout)]
    assert set(stopped_at) <= set(resumed), (stopped_at, done.stdout[-3000:])
    assert_exact_budget(final, n_trials)
    assert len(final) == 2 * n_trials  # each original and its one retry: nothing ran twice


# ---- what one node runs, from Slurm's environment (no cluster needed) -----------------------------------


def node_command(tmp_path: Path, **environ: str) -> tuple[str, str]:
    """(the `shrink` command line the node task runs, its CUDA_VISIBLE_DEVICES), with a stub `shrink`."""
    stub = tmp_path / "bin" / "shrink"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\necho "shrink $*"\necho "visible=${CUDA_VISIBLE_DEVICES-unset}"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SHRINK_", "CUDA_"))}
    env.update(environ, PATH=f"{stub.parent}{os.pathsep}{env['PATH']}")
    node = f'source <(sed -n "/^shrink_node() {{/,/^}}/p" "{JOB_SCRIPT}"); shrink_node toy --n-trials 3'
    done = subprocess.run(["bash", "-c", node], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith("shrink-node: ")]
    return lines[0], lines[1].split("=", 1)[1]


@pytest.mark.parametrize(
    "environ, where, visible",
    [
        # cgroups renumber the node's GPUs 3 and 5 to 0,1 in CUDA_VISIBLE_DEVICES: --gpus indexes that list
        ({"SLURM_STEP_GPUS": "3,5", "CUDA_VISIBLE_DEVICES": "0,1"}, "--gpus 0,1 --workers-per-gpu 1", "0,1"),
        ({"SLURM_STEP_GPUS": "3,5", "CUDA_VISIBLE_DEVICES": "3,5"}, "--gpus 0,1 --workers-per-gpu 1", "3,5"),
        ({"SLURM_JOB_GPUS": "2"}, "--gpus 0 --workers-per-gpu 1", "2"),  # no CUDA_VISIBLE_DEVICES
        ({"SLURM_STEP_GPUS": "0", "SHRINK_WORKERS_PER_GPU": "2"}, "--gpus 0 --workers-per-gpu 2", "0"),
        ({"SHRINK_GPUS": "0,0,1", "SLURM_STEP_GPUS": "4,5"}, "--gpus 0,0,1", "unset"),
        ({}, "--workers 1", "unset"),
        ({"SHRINK_WORKERS": "3"}, "--workers 3", "unset"),
        ({"SLURM_PROCID": "2"}, "--workers 1", "unset"),  # the third node's workers start at index 512
    ],
)
def test_each_node_launches_on_the_gpus_slurm_allotted_it(tmp_path, environ, where, visible):
    command, cuda_visible = node_command(tmp_path, SHRINK_RUN_ROOT="/shared/runs", **environ)
    first = 256 * int(environ.get("SLURM_PROCID", 0))
    options = f"--study-name toy --first-worker-index {first} --run-root /shared/runs --n-trials 3"
    assert command == f"shrink launch {where} {options}"
    assert cuda_visible == visible


@pytest.mark.parametrize(
    "environ, argv, message",
    [
        ({}, ["toy"], "SHRINK_STORAGE is unset"),
        ({"SHRINK_STORAGE": "sqlite:///x.db"}, [], "no study name"),
        ({"SHRINK_STORAGE": "sqlite:///x", "SLURM_JOB_NUM_NODES": "2"}, ["toy"], "SHRINK_RUN_ROOT is unset"),
    ],
)
def test_the_job_script_refuses_what_would_fail_on_the_nodes_in_one_line(environ, argv, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SHRINK_"))}
    done = subprocess.run(
        ["bash", str(JOB_SCRIPT), *argv], capture_output=True, text=True, timeout=30, env=dict(env, **environ)
    )
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
