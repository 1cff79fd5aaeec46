from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shrink.compression.config import TrainConfig, config_from_dict

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared data sets lie beside the checkout in CI)")
    return folder


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random photo-like image: low-frequency colour fields plus mild noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float64)
    noisy = smooth + rng.normal(0, 6, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, (height, width) in enumerate([(176, 208), (192, 176), (176, 176)]):
        Image.fromarray(textured_image(height, width, index)).save(folder / f"img{index}.png")
    return folder


def tiny_config_dict(folder: Path, **training) -> dict:
    return {
        "seed": 3,
        "model": {
            "ratio": 2,
            "comcnn": {"depth": 3, "width": 8},
            "reccnn": {"depth": 3, "width": 8, "norm": "batch", "dropout": 0.1},
        },
        "codec": {"quality_range": [20, 80], "threads": 2},
        "training": {
            "epochs": 3,
            "steps_per_epoch": 3,
            "rec_warmup_epochs": 1,
            "batch_size": 2,
            "crop": 48,
            **training,
        },
        "data": {"train": str(folder), "dev": str(folder), "dev_max_images": 2, "dev_qualities": [30, 70]},
        "device": {"device": "cpu"},
    }


@pytest.fixture
def tiny_config(image_folder: Path) -> TrainConfig:
    return config_from_dict(tiny_config_dict(image_folder))
