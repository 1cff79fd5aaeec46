"""Helpers shared by test files: the toy study spec, storage URLs, the session's toy study, waiting."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState, create_trial
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
from PIL import Image

from shrink.compression.bundle import save_bundle
from shrink.compression.config import TrainConfig, config_from_dict
from shrink.compression.family import save_family
from shrink.compression.models import ShrinkModel, build_model
from shrink.compression.rd import RDCurve, RDPoint
from shrink.search.cli import main
from shrink.search.storage import open_storage

from .conftest import textured_image, tiny_config_dict

BIN = Path(sys.executable).parent


class Trials:
    """The study's trials through one storage connection of the test's own (no cache, no heartbeat)."""

    def __init__(self, url: str, name: str = "toy"):
        self.storage = open_storage(url, heartbeat_interval=None)
        self.study_id = self.storage.get_study_id_from_name(name)

    def __call__(self) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False)

    def epochs(self, number: int) -> list[dict]:
        trials = self()
        return trials[number].user_attrs.get("epochs", []) if len(trials) > number else []


def postgres_bin() -> Path | None:
    """Debian's server binaries, newest version (as .ci/postgres.sh picks them)."""
    found = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "psql"))
    ]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, default=None)


def write_spec(
    path: Path, images: Path, *, n_trials=3, epochs=3, steps=2, mode="multi", pruner="none", extra=""
) -> Path:
    path.write_text(
        f"""
name = "toy"
seed = 1

[base]
seed = 1
device = {{ device = "cpu", threads = 1 }}
model = {{ ratio = 2, comcnn = {{ depth = 3, width = 8 }}, reccnn = {{ depth = 3, width = 8 }} }}
codec = {{ threads = 1 }}

[base.training]
rec_warmup_epochs = 1

[data]
train = "{images}"
dev = "{images}"
dev_max_images = 2

[budget]
n_trials = {n_trials}
epochs = {epochs}
steps_per_epoch = {steps}
crop = 48
batch_size = 2

[objective]
mode = "{mode}"

[pruner]
name = "{pruner}"
min_peers = 2

[sampler]
name = "random"

[space."codec.quality"]
type = "int"
low = 20
high = 80
step = 20

[space."model.reccnn.width"]
type = "categorical"
choices = [8, 12]
{extra}
"""
    )
    return path


def storage_url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'study.log'}"


def load(url: str, name: str = "toy") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url, heartbeat_interval=None))


def stored_graphs(study: optuna.Study) -> dict[str, dict]:
    """The plots optuna-dashboard shows for ``study`` (``save_plotly_graph_object``), by id, as JSON; it keeps
    them in the study's system attributes, which Optuna 5 reads only through the storage."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {key: json.loads(raw) for key, raw in get_plotly_graph_objects(attrs).items()}


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def write_toml(path: Path, data: dict) -> Path:
    def value(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for section, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{section}]")
            lines += [
                f"{k} = {{ {', '.join(f'{a} = {value(b)}' for a, b in v.items())} }}"
                if isinstance(v, dict)
                else f"{k} = {value(v)}"
                for k, v in table.items()
            ]
    path.write_text("\n".join(lines) + "\n")
    return path


def trained_like(config: TrainConfig, seed: int = 0) -> ShrinkModel:
    """The tiny model with every parameter and BatchNorm buffer moved off its initial value."""
    torch.manual_seed(seed)
    model = build_model(config.model)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(torch.randn_like(buffer) * 0.01)
            elif name.endswith("running_var"):
                buffer.copy_(1 + torch.rand_like(buffer))
            elif name.endswith("num_batches_tracked"):
                buffer.fill_(17)
    return model


def eval_args(source: Path, images: Path, out: Path) -> list[str]:
    return ["eval", str(source), "--data", str(images), "--qualities", "30", "70", "--json", str(out)]


EPOCHS = 3


SYNTHETIC_REASON = "pruned at rung 0 (epoch 1): synthetic trial added by the test"


QUALITIES = ["--qualities", "20", "50", "80"]  # a short grid keeps baselines and bundle evaluations light


def make_image_folder(folder: Path) -> Path:
    """Three small photo-like PNGs (the sizes of conftest's ``image_folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (height, width) in enumerate([(176, 208), (192, 176), (176, 176)]):
        Image.fromarray(textured_image(height, width, index)).save(folder / f"img{index}.png")
    return folder


def add_pruned_trial(url: str) -> None:
    """A pruned trial in the stored format (one epoch, a prune reason), whatever the real pruner did."""
    study = load(url)
    first = study.trials[0].user_attrs["epochs"][0]
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED, user_attrs={"epochs": [first], "prune_reason": SYNTHETIC_REASON}
        )
    )


def build_toy_study(root: Path, images: Path) -> str:
    spec = write_spec(root / "toy.toml", images, n_trials=4, epochs=EPOCHS, steps=2, pruner="pareto-halving")
    url = f"sqlite:///{root / 'study.db'}"
    assert main(["study", "create", str(spec), "--storage", url]) == 0
    assert main(["worker", "--storage", url, "--study-name", "toy"]) == 0
    add_pruned_trial(url)
    return url


def export_front(url: str, out: Path) -> Path:
    if not out.is_dir():
        assert main(["export", "--storage", url, "--study-name", "toy", "--pareto", "--out", str(out)]) == 0
    return out


def shared_toy_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(storage URL, image folder) of the session's toy study, built by whichever test asks first."""
    root = tmp_path_factory.getbasetemp() / "toy-report-study"
    images = root / "images"
    if not (root / "built").is_file():
        root.mkdir(exist_ok=True)
        make_image_folder(images)
        build_toy_study(root, images)
        (root / "built").write_text("ok")
    return f"sqlite:///{root / 'study.db'}", images


def curve(name: str, points: list[tuple[float, float]]) -> RDCurve:
    """A hand-made test curve of (bpp, MS-SSIM dB) points; PSNR rises with MS-SSIM dB (20 dB above)."""
    points = [RDPoint(q, r, 1 - 10 ** (-db / 10), db, 20 + db) for q, (r, db) in enumerate(points)]
    return RDCurve(name, points)


def perturbed_bundle(path: Path, image_folder: Path, ratio: int, seed: int) -> Path:
    """A bundle of the tiny config at ``ratio``, its weights moved off their initial values by ``seed``."""
    data = tiny_config_dict(image_folder)
    data["model"]["ratio"] = ratio
    config = config_from_dict(data)
    model = build_model(config.model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    return save_bundle(path, model, config, {"seed": seed})


# Two hand-made curves that cross: "low" (ratio 2) leads up to ~1.5 bpp, "high" (ratio 1) beyond.
LOW = [(0.3, 10.0), (0.6, 12.0), (1.2, 13.0)]
HIGH = [(0.8, 11.0), (2.0, 14.0), (4.0, 17.0)]


def crossing_family(tmp_path: Path, image_folder: Path, test: str = "hand-made") -> Path:
    """A codec family of two tiny bundles whose test curves are LOW (ratio 2) and HIGH (ratio 1), said to be
    measured on ``test``."""
    low = perturbed_bundle(tmp_path / "b-low", image_folder, ratio=2, seed=1)
    high = perturbed_bundle(tmp_path / "b-high", image_folder, ratio=1, seed=2)
    members = [("low", low, curve("low", LOW)), ("high", high, curve("high", HIGH))]
    return save_family(tmp_path / "family", members, test=test)


def compress_with_codec_bundle(tmp_path: Path, image, overrides: list[str], codec) -> bytes:
    """``shrink compress`` then ``decompress`` an HxWx3 image with an untrained bundle of ``overrides``'s
    codec: checks that the file is ``codec``'s own JPEG of the compact image with the SHRINK segment added,
    that it opens at the compact size and decompresses at the full one; returns the file's bytes."""
    from shrink.compression.api import compact_bytes
    from shrink.compression.container import read_header, segment

    config = config_from_dict(tiny_config_dict(tmp_path), overrides)
    model = build_model(config.model).eval()
    bundle = save_bundle(tmp_path / "bundle", model, config, {"name": "codec"})
    photo, jpg, png = tmp_path / "photo.png", tmp_path / "photo.jpg", tmp_path / "photo.out.png"
    Image.fromarray(image).save(photo)
    assert main(["compress", str(photo), "--model", str(bundle), "-o", str(jpg), "--quality", "40"]) == 0
    data = jpg.read_bytes()
    bare = compact_bytes(model, torch.from_numpy(image.copy()).permute(2, 0, 1), codec, 40)
    assert data.replace(segment(read_header(data)), b"") == bare  # the codec's file + the SHRINK segment
    height, width = image.shape[:2]
    with Image.open(jpg) as opened:
        assert opened.format == "JPEG" and opened.size == (width // 2, height // 2)
    assert main(["decompress", str(jpg), "--model", str(bundle), "-o", str(png)]) == 0
    with Image.open(png) as restored:
        assert restored.size == (width, height)
    return data
