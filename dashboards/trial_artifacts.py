"""What optuna-dashboard shows for a shrink study: a note and reconstruction crops per trial, the study's
RD plot against the dev JPEG curve and, for a study with three objectives, its 3-D Pareto front (the
dashboard's own Pareto view is 2-D). Workers call these through hooks the CLI wires in.

Artifacts go to a file-system artifact store beside the storage (``<run root>/artifacts``); ``shrink
dashboard`` opens optuna-dashboard with the same store.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import optuna
import plotly.graph_objects as go
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna_dashboard import save_note, save_plotly_graph_object

from shrink.compression.checkpoint import model_from_checkpoint
from shrink.compression.gallery import compare_at_same_bytes
from shrink.compression.rd import RDCurve
from shrink.compression.trainer import EpochRecord, Trainer
from shrink.search.records import RD_POINT_ATTR
from shrink.search.results import format_rate

from . import plots
from .study_info import get_front_3d_info, get_rd_points_info

RD_GRAPH_ID = "rd-vs-jpeg"
FRONT_3D_GRAPH_ID = "pareto-front-3d"


def artifact_dir(run_root: str | Path) -> Path:
    return Path(run_root) / "artifacts"


def artifact_store(run_root: str | Path) -> FileSystemArtifactStore:
    directory = artifact_dir(run_root)
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(directory))


def trial_note(trial: optuna.Trial, best: EpochRecord, wall_s: float) -> str:
    rows = [
        ("best epoch", best.epoch),
        ("dev bpp", f"{best.dev_bpp:.4f}"),
        ("dev MS-SSIM", f"{best.dev_msssim:.4f} ({best.dev_msssim_db:.2f} dB)"),
        ("dev PSNR", f"{best.dev_psnr:.2f} dB"),
        ("gain over JPEG at matched bpp", f"{best.dev_gain_db:+.3f} dB"),
        ("rate against JPEG at matched MS-SSIM", format_rate(best.dev_rate_change)),
        ("training time", f"{wall_s:.0f} s"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"## Trial {trial.number}\n\n| metric | value |\n| --- | --- |\n{table}\n"


def record_trial(
    store: FileSystemArtifactStore, trial: optuna.Trial, trainer: Trainer, best: EpochRecord
) -> None:
    """Note + artifacts for a trial that is finishing (called while it is still RUNNING)."""
    save_note(trial, trial_note(trial, best, trainer.elapsed_before))
    model, config = model_from_checkpoint(trainer.out_dir / "best.ckpt")
    qualities = config.data.dev_qualities
    quality = config.codec.quality or qualities[len(qualities) // 2]
    comparison = compare_at_same_bytes(model, trainer.dev_images[0], trainer.codec, quality)
    with tempfile.TemporaryDirectory() as tmp:
        crops = Path(tmp) / f"trial-{trial.number}-crops.png"
        comparison.save_strip(crops)
        upload_artifact(artifact_store=store, file_path=str(crops), study_or_trial=trial)
        point = Path(tmp) / f"trial-{trial.number}-rd.json"
        summary = {
            RD_POINT_ATTR: trial.user_attrs.get(RD_POINT_ATTR),
            "crops": {"image": comparison.image, "bytes": comparison.bytes, "msssim": comparison.msssim},
        }
        point.write_text(json.dumps(summary, indent=1))
        upload_artifact(artifact_store=store, file_path=str(point), study_or_trial=trial)


def rd_figure(study: optuna.Study, dev_jpeg: RDCurve) -> go.Figure:
    """The report's RD plot (trials, Pareto front) against the study's dev JPEG curve."""
    jpeg = RDCurve("JPEG (dev)", dev_jpeg.points)
    return plots.rd_figure(get_rd_points_info(study), {jpeg.name: jpeg}, "msssim", "dev RD: trials vs JPEG")


def update_study_plot(study: optuna.Study, dev_jpeg: RDCurve) -> None:
    save_plotly_graph_object(study, rd_figure(study, dev_jpeg), graph_object_id=RD_GRAPH_ID)


def front_3d_figure(study: optuna.Study) -> go.Figure | None:
    """The report's 3-D Pareto front of a study with three objectives; None for any other study."""
    info = get_front_3d_info(study)
    return None if info is None else plots.front_3d_figure(info)


def update_front_3d_plot(study: optuna.Study) -> bool:
    """Store the 3-D front for optuna-dashboard; False (nothing stored) unless the study has three
    objectives."""
    figure = front_3d_figure(study)
    if figure is None:
        return False
    save_plotly_graph_object(study, figure, graph_object_id=FRONT_3D_GRAPH_ID)
    return True


def update_study_plots(study: optuna.Study, dev_jpeg: RDCurve, log: Callable[[str], None] = print) -> None:
    """After each trial: the RD plot, and the 3-D front when the study has three objectives. A failure is
    logged, never raised: the trial is told already, and the worker goes on to the next."""
    pushes = {
        "RD plot": lambda: update_study_plot(study, dev_jpeg),
        "3-D Pareto front": lambda: update_front_3d_plot(study),
    }
    for name, push in pushes.items():
        try:
            push()
        except Exception as error:  # dashboard plots are extras, like the trial artifacts
            log(f"dashboard {name} not stored ({type(error).__name__}: {error})")
