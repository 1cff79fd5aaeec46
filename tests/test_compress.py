from __future__ import annotations

import io
import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shrink.compression.api import (
    RateError,
    compact_bytes,
    compress_image,
    decompress_image,
    open_bundle,
)
from shrink.compression.bundle import bundle_sha256, load_bundle, save_bundle
from shrink.compression.choose import choose
from shrink.compression.codecs import build_codec
from shrink.compression.config import TrainConfig, config_from_dict
from shrink.compression.container import (
    MAGIC,
    ContainerError,
    Header,
    highest_quality_within,
    read_header,
    segment,
    wrap,
)
from shrink.compression.data import ImageLoadError, NamedImage, read_image
from shrink.compression.evaluate import evaluate_image, reconstruct_bytes
from shrink.compression.models import build_model
from shrink.compression.rd import measure
from shrink.compression.resample import pad_to_multiple
from shrink.compression.tiling import (
    Tiling,
    comcnn_margin,
    compact_image,
    reccnn_margin,
    reconstruct_image,
    tilings,
)
from shrink.search.cli import main

from .conftest import textured_image, tiny_config_dict

HEIGHT, WIDTH = 181, 203  # odd: exercises the padding to a multiple of the ratio


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight moved off its initial value, so both nets' correction layers are non-zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model.eval()


def config_with(folder: Path, *overrides: str) -> TrainConfig:
    return config_from_dict(tiny_config_dict(folder), list(overrides))


@pytest.fixture
def make_bundle(tmp_path: Path, image_folder: Path):
    def make(name: str = "bundle", *overrides: str, trained: bool = False) -> Path:
        config = config_with(image_folder, *overrides)
        model = build_model(config.model)
        if trained:
            perturbed(model)
        return save_bundle(tmp_path / name, model, config, {"name": name})

    return make


@pytest.fixture
def bundle(make_bundle) -> Path:
    return make_bundle()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(textured_image(HEIGHT, WIDTH, 7)).save(path)
    return path


def shrink(*args) -> int:
    return main([str(arg) for arg in args])


def compress(source: Path, bundle: Path, out: Path, *extra) -> int:
    return shrink("compress", source, "--model", bundle, "-o", out, *extra)


def decompress(source: Path, bundle: Path, out: Path, *extra) -> int:
    return shrink("decompress", source, "--model", bundle, "-o", out, *extra)


def strip_segment(data: bytes) -> bytes:
    header = read_header(data)
    piece = segment(header)
    assert data.count(piece) == 1
    return data.replace(piece, b"")


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    ("trained", "overrides"),
    [(False, ()), (True, ()), (True, ("model.reccnn.quality_input=true",))],
    ids=["untrained", "perturbed", "quality-conditioned"],
)
def test_round_trip_reproduces_evaluate_image(
    make_bundle, photo: Path, tmp_path: Path, capsys, trained, overrides
):
    """The decompressed PNG is evaluate_image's reconstruction; a quality-conditioned RecCNN reads the
    quality from the file's header (37), as evaluation passes it."""
    bundle = make_bundle("b", *overrides, trained=trained)
    jpg, png = tmp_path / "photo.jpg", tmp_path / "photo.out.png"
    assert compress(photo, bundle, jpg, "--quality", 37) == 0
    assert decompress(jpg, bundle, png, "--reference", photo) == 0
    out = capsys.readouterr().out

    model, config, _ = load_bundle(bundle)
    pixels = read_image(photo)  # as `shrink eval` reads it
    row = evaluate_image(model, NamedImage("photo", pixels), build_codec(config.codec), 37)
    data = jpg.read_bytes()
    header = read_header(data)
    expected_header = Header(width=WIDTH, height=HEIGHT, ratio=2, quality=37, bundle=bundle_sha256(bundle))
    assert header == expected_header.model_copy(update={"crc32": header.crc32}) and header.crc32
    assert len(data) == row["bytes"] + len(segment(header))
    x = pixels[None].float() / 255.0
    assert strip_segment(data) == compact_bytes(model, pixels, build_codec(config.codec), 37)  # the same JPEG

    decoded = np.asarray(Image.open(png))
    x_hat = torch.from_numpy(decoded.copy()).permute(2, 0, 1).contiguous()[None].float() / 255.0
    expected = reconstruct_bytes(model, data, build_codec(config.codec), (HEIGHT, WIDTH), 37)
    assert torch.equal(x_hat, expected)
    ours = measure("photo", 37, len(data), x_hat, x)
    assert ours["msssim"] == row["msssim"] and ours["psnr"] == row["psnr"]
    assert f"{len(data)} bytes, {ours['bpp']:.4f} bpp" in out and f"MS-SSIM {row['msssim']:.6f}" in out


@pytest.mark.parametrize("ratio", [2, 3])
def test_output_is_a_plain_jpeg_at_one_over_ratio(make_bundle, photo: Path, tmp_path: Path, ratio: int):
    bundle = make_bundle("b", f"model.ratio={ratio}")
    jpg = tmp_path / "photo.jpg"
    assert compress(photo, bundle, jpg) == 0
    with Image.open(jpg) as image:
        image.load()
        assert image.format == "JPEG" and image.mode == "RGB"
        assert image.size == (math.ceil(WIDTH / ratio), math.ceil(HEIGHT / ratio))
        app11 = [body for name, body in image.applist if name == "APP11"]
    assert len(app11) == 1 and app11[0].startswith(b"SHRINK\0")
    assert json.loads(app11[0][7:])["ratio"] == ratio
    assert read_header(jpg.read_bytes()).quality == 50  # default: middle of the bundle's range [20, 80]


# ---------------------------------------------------------------- refusals


def test_wrong_bundle_is_refused_naming_the_hash(make_bundle, photo: Path, tmp_path: Path, capsys):
    ours, other = make_bundle("ours"), make_bundle("other")
    assert bundle_sha256(ours) != bundle_sha256(other)
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    assert compress(photo, ours, jpg) == 0
    capsys.readouterr()
    assert decompress(jpg, other, png) == 2
    err = capsys.readouterr().err.strip()
    assert "hash mismatch" in err and bundle_sha256(ours)[:16] in err and err.count("\n") == 0
    assert not png.exists()


def test_files_that_are_not_ours_are_refused(bundle: Path, photo: Path, tmp_path: Path, capsys):
    plain = tmp_path / "plain.jpg"
    Image.open(photo).save(plain, quality=80)
    png = tmp_path / "out.png"
    assert decompress(plain, bundle, png) == 2
    assert "not a shrink file" in capsys.readouterr().err
    assert decompress(photo, bundle, png) == 2  # a PNG
    assert "not a JPEG" in capsys.readouterr().err
    assert decompress(tmp_path / "absent.jpg", bundle, png) == 2
    assert not png.exists()


@pytest.mark.parametrize("keep", [0.5, 0.999, 120], ids=["half", "last-byte", "inside-headers"])
def test_truncated_files_are_refused(bundle: Path, photo: Path, tmp_path: Path, capsys, keep):
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    assert compress(photo, bundle, jpg) == 0
    data = jpg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * keep) if keep < 1 else keep])
    capsys.readouterr()
    assert decompress(cut, bundle, png) == 2
    assert "truncated" in capsys.readouterr().err and not png.exists()


def test_corrupt_scan_with_intact_markers_is_refused(bundle: Path, photo: Path, tmp_path: Path, capsys):
    jpg = tmp_path / "photo.jpg"
    assert compress(photo, bundle, jpg) == 0
    data = jpg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")  # EOI glued on: Pillow must still refuse it
    capsys.readouterr()
    assert decompress(cut, bundle, tmp_path / "out.png") == 2
    assert "does not match the CRC-32" in capsys.readouterr().err
    flipped = bytearray(data)
    flipped[-100] ^= 0x01  # one bit of the scan
    cut.write_bytes(bytes(flipped))
    assert decompress(cut, bundle, tmp_path / "out.png") == 2
    assert "does not match the CRC-32" in capsys.readouterr().err


def test_existing_outputs_are_never_overwritten_without_force(bundle: Path, photo: Path, tmp_path: Path):
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    jpg.write_bytes(b"precious")
    png.write_bytes(b"precious too")
    assert compress(photo, bundle, jpg) == 2 and jpg.read_bytes() == b"precious"
    assert compress(photo, bundle, jpg, "--force") == 0 and read_header(jpg.read_bytes())
    assert decompress(jpg, bundle, png) == 2 and png.read_bytes() == b"precious too"
    assert decompress(jpg, bundle, png, "--force") == 0
    assert Image.open(png).size == (WIDTH, HEIGHT)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # atomic writes leave no temp


def test_several_inputs_go_to_a_directory(bundle: Path, photo: Path, tmp_path: Path, capsys):
    second = tmp_path / "second.png"
    Image.fromarray(textured_image(64, 80, 1)).save(second)
    out = tmp_path / "out"
    assert compress(photo, bundle, out, "--quality", 40) == 0  # one input: -o names the file
    assert out.is_file()
    folder = tmp_path / "folder"
    folder.mkdir()
    assert shrink("compress", photo, second, "--model", bundle, "-o", folder) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["photo.jpg", "second.jpg"]
    assert read_header((folder / "second.jpg").read_bytes()).width == 80
    assert shrink("compress", photo, second, "--model", bundle, "-o", out) == 2  # a file, not a directory
    assert "need a directory" in capsys.readouterr().err
    assert shrink("compress", photo, photo, "--model", bundle, "-o", tmp_path / "twice") == 2
    assert "share a name" in capsys.readouterr().err and not (tmp_path / "twice").exists()


def test_bad_arguments_exit_2(bundle: Path, photo: Path, tmp_path: Path, capsys):
    jpg = tmp_path / "x.jpg"
    assert compress(photo, bundle, jpg, "--quality", 101) == 2
    assert compress(photo, bundle, jpg, "--quality", 50, "--bpp", 1) == 2
    assert compress(photo, bundle, jpg, "--bpp", -1) == 2
    assert compress(photo, tmp_path / "no-bundle", jpg) == 2
    assert "bundle not found" in capsys.readouterr().err
    assert not jpg.exists()


# ---------------------------------------------------------------- the codec API


@pytest.mark.parametrize("rate", [("--quality", 37), ("--bpp", 0.6), ()], ids=["quality", "bpp", "default"])
def test_the_codec_api_writes_and_reads_what_the_cli_does(
    make_bundle, photo: Path, tmp_path: Path, capsys, rate
):
    """compress_image/decompress_image are what shrink compress/decompress run: the same bytes, pixels."""
    bundle = make_bundle("b", trained=True)
    jpg, png = tmp_path / "photo.jpg", tmp_path / "photo.out.png"
    assert compress(photo, bundle, jpg, *rate) == 0
    assert decompress(jpg, bundle, png) == 0
    options = {rate[0].lstrip("-"): rate[1]} if rate else {}
    with Image.open(photo) as image:
        data = compress_image(image, bundle, **options)  # a PIL image and a bundle path
    assert data == jpg.read_bytes()
    opened = open_bundle(bundle)
    assert compress_image(read_image(photo), opened, **options) == data  # a 3xHxW tensor, an open bundle
    assert compress_image(np.asarray(Image.open(photo)), opened, **options, tile=0) == data  # one tile here
    pixels = decompress_image(data, bundle)
    assert pixels.shape == (HEIGHT, WIDTH, 3) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, np.asarray(Image.open(png)))
    assert np.array_equal(decompress_image(data, opened), pixels)


def test_the_codec_api_refuses_bad_arguments_in_one_line(bundle: Path, photo: Path, image_folder: Path):
    image = read_image(photo)
    with pytest.raises(ValueError, match="quality or bpp, not both"):
        compress_image(image, bundle, quality=50, bpp=1.0)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        compress_image(np.zeros((8, 8), np.uint8), bundle)
    with pytest.raises(ValueError, match="3xHxW uint8"):
        compress_image(image.float(), bundle)
    with pytest.raises(RateError, match=r"^bpp 0.01 \(\d+ bytes at 203x181\) cannot be met: even quality 1"):
        compress_image(image, bundle, bpp=0.01)
    with pytest.raises(ContainerError, match="^photo.png: not a shrink file"):
        decompress_image(photo.read_bytes(), bundle, source="photo.png")
    other = save_bundle(
        bundle.parent / "other",
        perturbed(build_model(config_with(image_folder).model)),
        config_with(image_folder),
        {"name": "other"},
    )
    with pytest.raises(ValueError, match="bundle hash mismatch"):
        decompress_image(compress_image(image, bundle), other)


# ---------------------------------------------------------------- --bpp


def test_bpp_picks_the_highest_quality_within_the_budget(bundle: Path, photo: Path, tmp_path: Path, capsys):
    target = 0.6
    budget = target * WIDTH * HEIGHT / 8
    jpg = tmp_path / "photo.jpg"
    assert compress(photo, bundle, jpg, "--bpp", target) == 0
    quality = read_header(jpg.read_bytes()).quality
    assert 1 < quality < 100 and len(jpg.read_bytes()) <= budget
    above = tmp_path / "above.jpg"
    assert compress(photo, bundle, above, "--quality", quality + 1) == 0
    assert len(above.read_bytes()) > budget
    same = tmp_path / "same.jpg"
    assert compress(photo, bundle, same, "--quality", quality) == 0
    assert same.read_bytes() == jpg.read_bytes()
    capsys.readouterr()
    assert compress(photo, bundle, tmp_path / "tiny.jpg", "--bpp", 0.01) == 2
    assert "even quality 1 takes" in capsys.readouterr().err


def test_quality_search_is_right_where_size_is_not_monotone():
    sizes = {q: 10 * q for q in range(1, 101)}
    sizes[40] = 10_000  # a spike: the search must still end with q within and q + 1 over
    quality, data = highest_quality_within(700, lambda q: b"x" * sizes[q])
    assert len(data) <= 700 < sizes[quality + 1]
    assert highest_quality_within(10**6, lambda q: b"x" * sizes[q])[0] == 100
    with pytest.raises(ValueError, match="even quality 1 takes 10 bytes"):
        highest_quality_within(5, lambda q: b"x" * sizes[q])


# ---------------------------------------------------------------- inputs


def _rgba(tmp_path: Path, base: np.ndarray) -> tuple[Path, np.ndarray]:
    alpha = np.full(base.shape[:2], 255, np.uint8)
    alpha[:60, :90] = 0
    alpha[60:120] = 128
    path = tmp_path / "in.png"
    Image.fromarray(np.dstack([base, alpha]), "RGBA").save(path)
    weight = alpha[..., None] / 255.0
    expected = np.asarray(
        Image.alpha_composite(Image.new("RGBA", (WIDTH, HEIGHT), "white"), Image.open(path)).convert("RGB")
    )
    assert np.abs(expected - (base * weight + 255 * (1 - weight))).max() <= 1  # composited on white
    return path, expected


def _sixteen_bit(tmp_path: Path, grey: np.ndarray) -> tuple[Path, np.ndarray]:
    path = tmp_path / "in.png"
    Image.fromarray(grey).save(path)
    assert Image.open(path).mode == "I;16"
    scaled = np.round(grey / 65535.0 * 255.0).astype(np.uint8)
    return path, np.repeat(scaled[..., None], 3, axis=2)


def _grey16(tmp_path: Path, base: np.ndarray) -> tuple[Path, np.ndarray]:
    path, expected = _sixteen_bit(tmp_path, base[..., 0].astype(np.uint16) * 257)  # full range
    assert np.array_equal(expected[..., 0], base[..., 0])
    return path, expected


def _grey16_dark(tmp_path: Path, base: np.ndarray) -> tuple[Path, np.ndarray]:
    # every value <= 255: still 16-bit (near black), not to be mistaken for 8-bit values
    grey = base[..., 0].astype(np.uint16) // 2 + 100
    assert grey.max() <= 255
    path, expected = _sixteen_bit(tmp_path, grey)
    assert expected.max() <= 1
    return path, expected


def _grey(tmp_path: Path, base: np.ndarray) -> tuple[Path, np.ndarray]:
    path = tmp_path / "in.png"
    Image.fromarray(base[..., 1]).save(path)
    return path, np.repeat(base[..., 1:2], 3, axis=2)


def _cmyk(tmp_path: Path, base: np.ndarray) -> tuple[Path, np.ndarray]:
    path = tmp_path / "in.tif"
    Image.fromarray(base).convert("CMYK").save(path)
    return path, np.asarray(Image.open(path).convert("RGB"))


def _rotated(tmp_path: Path, base: np.ndarray) -> tuple[Path, np.ndarray]:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image must be turned 90 degrees clockwise to be upright
    path = tmp_path / "in.png"
    Image.fromarray(base).save(path, exif=exif)
    return path, np.asarray(Image.fromarray(base).transpose(Image.Transpose.ROTATE_270))


@pytest.mark.parametrize("kind", ["rgba", "grey16", "grey16_dark", "grey", "cmyk", "rotated"])
def test_any_pillow_image_compresses_as_its_upright_rgb(bundle: Path, tmp_path: Path, capsys, kind):
    base = textured_image(HEIGHT, WIDTH, 3)
    source, expected = globals()[f"_{kind}"](tmp_path, base)
    reference = tmp_path / "expected.png"
    Image.fromarray(expected).save(reference)
    jpg, expected_jpg = tmp_path / "in.jpg", tmp_path / "expected.jpg"
    assert compress(source, bundle, jpg) == 0
    err = capsys.readouterr().err
    assert compress(reference, bundle, expected_jpg) == 0
    assert jpg.read_bytes() == expected_jpg.read_bytes()  # the pipeline saw exactly the expected pixels
    header = read_header(jpg.read_bytes())
    assert (header.height, header.width) == expected.shape[:2]
    assert ("CMYK" in err) == (kind == "cmyk")
    assert ("transparency" in err) == (kind == "rgba") and ("16-bit" in err) == kind.startswith("grey16")
    assert decompress(jpg, bundle, tmp_path / "out.png", "--reference", source) == 0
    assert "MS-SSIM" in capsys.readouterr().out


def test_decompression_bombs_are_refused(bundle: Path, photo: Path, tmp_path: Path, capsys, monkeypatch):
    jpg = tmp_path / "photo.jpg"
    assert compress(photo, bundle, jpg) == 0
    capsys.readouterr()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", WIDTH * HEIGHT - 1)  # Pillow only warns up to 2x this
    assert compress(photo, bundle, tmp_path / "again.jpg") == 2
    err = capsys.readouterr().err.strip()
    assert "decompression-bomb limit" in err and err.count("\n") == 0
    assert decompress(jpg, bundle, tmp_path / "out.png") == 2  # the header's size is checked too
    assert "decompression-bomb limit" in capsys.readouterr().err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # over 2x: Pillow itself raises
    assert compress(photo, bundle, tmp_path / "again.jpg") == 2
    err = capsys.readouterr().err.strip()
    assert "decompression bomb" in err and err.count("\n") == 0
    assert not (tmp_path / "again.jpg").exists() and not (tmp_path / "out.png").exists()


def test_headers_of_other_versions_and_bad_fields_are_refused(bundle: Path, photo: Path, tmp_path: Path):
    jpg = tmp_path / "photo.jpg"
    assert compress(photo, bundle, jpg) == 0
    data = jpg.read_bytes()
    with pytest.raises(ContainerError, match="shrink-jpeg/3 is not supported"):
        read_header(data.replace(b'"shrink-jpeg/2"', b'"shrink-jpeg/3"'))
    with pytest.raises(ContainerError, match="corrupt shrink header: width"):
        read_header(data.replace(b'"width":203', b'"width":2.5'))


def with_header(data: bytes, header: Header | str, reseal: bool = False) -> bytes:
    """``data`` whose APP11 segment holds ``header`` (a Header, or raw JSON text); ``reseal`` recomputes the
    CRC as a forger would."""
    if reseal:
        return wrap(strip_segment(data), header)
    old = segment(read_header(data))
    text = header if isinstance(header, str) else header.model_dump_json()
    payload = MAGIC + text.encode()
    new = bytes([0xFF, 0xEB]) + (len(payload) + 2).to_bytes(2, "big") + payload
    return data.replace(old, new)


@pytest.mark.parametrize(
    ("field", "value"), [("width", WIDTH - 1), ("height", HEIGHT + 1), ("ratio", 4), ("quality", 12)]
)
def test_a_header_altered_without_its_crc_is_refused(
    bundle: Path, photo: Path, tmp_path: Path, capsys, field: str, value: int
):
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    assert compress(photo, bundle, jpg) == 0
    data = jpg.read_bytes()
    jpg.write_bytes(with_header(data, read_header(data).model_copy(update={field: value})))
    capsys.readouterr()
    assert decompress(jpg, bundle, png) == 2
    err = capsys.readouterr().err
    assert "does not match the CRC-32" in err and err.count("\n") == 1 and not png.exists()


def test_a_resealed_header_whose_ratio_is_not_the_models_is_refused(
    bundle: Path, photo: Path, tmp_path: Path, capsys
):
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    assert compress(photo, bundle, jpg) == 0  # ratio 2: a 102x91 JPEG; ratio 4 wants 51x46
    square = tmp_path / "square.png"
    Image.fromarray(textured_image(64, 64, 3)).save(square)
    assert compress(square, bundle, jpg, "--force") == 0  # 32x32: ratio 4 of 128x128 fits it
    data = jpg.read_bytes()
    forged = read_header(data).model_copy(update={"ratio": 4, "width": 128, "height": 128})
    jpg.write_bytes(with_header(data, forged, reseal=True))
    capsys.readouterr()
    assert decompress(jpg, bundle, png) == 2
    err = capsys.readouterr().err
    assert "ratio 4, its bundle's model has 2" in err and err.count("\n") == 1 and not png.exists()


def test_a_format_1_file_is_refused_in_one_line(bundle: Path, photo: Path, tmp_path: Path, capsys):
    jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
    assert compress(photo, bundle, jpg) == 0
    text = read_header(jpg.read_bytes()).model_dump_json().replace("shrink-jpeg/2", "shrink-jpeg/1")
    jpg.write_bytes(with_header(jpg.read_bytes(), text))
    capsys.readouterr()
    assert decompress(jpg, bundle, png) == 2
    err = capsys.readouterr().err
    assert "shrink-jpeg/1 is not supported" in err and err.count("\n") == 1 and not png.exists()


def test_a_batch_with_one_bad_input_writes_nothing(bundle: Path, photo: Path, tmp_path: Path, capsys):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(photo.read_bytes()[: len(photo.read_bytes()) // 2])
    out = tmp_path / "out"
    out.mkdir()
    assert shrink("compress", photo, truncated, "--model", bundle, "-o", out) == 2
    err = capsys.readouterr().err
    assert "truncated.png" in err and err.count("\n") == 1
    assert list(out.iterdir()) == []


def test_a_fifo_as_input_is_refused_without_blocking(bundle: Path, photo: Path, tmp_path: Path, capsys):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    assert decompress(fifo, bundle, tmp_path / "out.png") == 2
    assert "not a regular file" in capsys.readouterr().err
    assert compress(fifo, bundle, tmp_path / "x.jpg") == 2
    assert "not a regular file" in capsys.readouterr().err


def test_outputs_get_the_umasks_modes(bundle: Path, photo: Path, tmp_path: Path):
    previous = os.umask(0o027)
    try:
        jpg, png = tmp_path / "photo.jpg", tmp_path / "out.png"
        assert compress(photo, bundle, jpg) == 0 and decompress(jpg, bundle, png) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE(jpg.stat().st_mode) == 0o640 and stat.S_IMODE(png.stat().st_mode) == 0o640


# ---------------------------------------------------------------- tiling


@pytest.fixture
def tile_model(image_folder: Path):
    def make(ratio: int, norm: str = "none"):
        config = config_with(
            image_folder,
            f"model.ratio={ratio}",
            "model.comcnn.depth=4",
            f'model.comcnn.norm="{norm}"',
            "model.reccnn.depth=5",
        )
        return perturbed(build_model(config.model), seed=ratio)

    return make


@pytest.mark.parametrize("ratio", [1, 2, 3, 4])
def test_tiled_equals_untiled(tile_model, ratio: int):
    model = tile_model(ratio)
    pixels = torch.from_numpy(textured_image(75, 101, ratio)).permute(2, 0, 1).contiguous()
    x = pixels[None].float() / 255.0
    whole = model.compress(pad_to_multiple(x, ratio))["compact"]
    assert len(Tiling(16).spans(whole.shape[-2])) * len(Tiling(16).spans(whole.shape[-1])) >= 4
    tiled = compact_image(model, pixels, Tiling(16, comcnn_margin(model.config)))
    assert tiled.shape == whole.shape and (tiled - whole).abs().max() < 1e-5
    naive = compact_image(model, pixels, Tiling(16, 0))  # the control: no margin, visible seams
    assert (naive - whole).abs().max() > 1e-3

    decoded = torch.round(whole.clamp(0, 1) * 255) / 255
    padded = (decoded.shape[-2] * ratio, decoded.shape[-1] * ratio)
    expected = model.reconstruct(decoded, padded)["x_hat"][..., :75, :101]
    tiled = reconstruct_image(model, decoded, (75, 101), Tiling(16, reccnn_margin(model.config)))
    assert tiled.shape == expected.shape and (tiled - expected).abs().max() < 1e-5
    assert (reconstruct_image(model, decoded, (75, 101), Tiling(16, 0)) - expected).abs().max() > 1e-3


def test_group_norm_runs_untiled_and_tile_cores_are_macroblocks(tile_model):
    com, rec = tilings(tile_model(2, norm="group"), tile=64)
    assert com.core is None and rec.core == 32  # GroupNorm pools over the image: no tiles for the ComCNN
    com, rec = tilings(tile_model(3), tile=512)
    assert com.core == rec.core == 160 and tilings(tile_model(3), tile=0)[0].core is None


def test_cli_tiles_agree_with_the_whole_image(bundle: Path, make_bundle, photo: Path, tmp_path: Path):
    trained = make_bundle("trained", trained=True)
    paths = {}
    for tile in (32, 0):
        jpg, png = tmp_path / f"t{tile}.jpg", tmp_path / f"t{tile}.png"
        assert compress(photo, trained, jpg, "--tile", tile) == 0
        assert decompress(jpg, trained, png, "--tile", tile) == 0
        paths[tile] = (jpg, png)
    tiled, whole = (np.asarray(Image.open(paths[t][1]), dtype=np.int16) for t in (32, 0))
    assert np.abs(tiled - whole).max() <= 1 and (tiled == whole).mean() > 0.999
    with Image.open(io.BytesIO(paths[32][0].read_bytes())) as a, Image.open(paths[0][0]) as b:
        assert a.size == b.size


# ---------------------------------------------------------------- the Kodak set through the CLI


@pytest.mark.slow
def test_kodak_through_compress_and_decompress_equals_shrink_eval(make_bundle, tmp_path: Path):
    from .conftest import shared_folder

    kodak = shared_folder("kodak")
    bundle = make_bundle("kodak", "model.comcnn.width=4", "model.reccnn.width=4", trained=True)
    quality = 40
    assert (
        shrink("eval", bundle, "--data", kodak, "--qualities", quality, "--json", tmp_path / "eval.json") == 0
    )
    evaluated = json.loads((tmp_path / "eval.json").read_text())["curves"]["shrink"]["per_image"]
    sources = sorted(kodak.glob("*.png"))
    assert shrink("compress", *sources, "--model", bundle, "-o", tmp_path / "jpg", "--quality", quality) == 0
    for row, source in zip(sorted(evaluated, key=lambda r: r["image"]), sources, strict=True):
        packed = (tmp_path / "jpg" / f"{source.stem}.jpg").read_bytes()
        with Image.open(io.BytesIO(packed)) as opened:  # an ordinary JPEG any viewer opens
            assert opened.format == "JPEG"
        assert len(strip_segment(packed)) == row["bytes"]  # eval's file plus our segment, nothing else
        out = tmp_path / "png" / f"{source.stem}.png"
        out.parent.mkdir(exist_ok=True)
        assert decompress(tmp_path / "jpg" / f"{source.stem}.jpg", bundle, out) == 0
        x = (
            torch.from_numpy(np.asarray(Image.open(source).convert("RGB")).copy()).permute(2, 0, 1)[None]
            / 255
        )
        x_hat = torch.from_numpy(np.asarray(Image.open(out)).copy()).permute(2, 0, 1)[None] / 255
        measured = measure(source.name, quality, row["bytes"], x_hat.float(), x.float())
        assert measured["msssim"] == pytest.approx(row["msssim"], abs=1e-6)  # float32 sums, other threads
        assert measured["bpp"] == pytest.approx(row["bpp"], rel=1e-12)


# ---------------------------------------------------------------- hostile inputs, round 2 (issue 35)


def _grey_reference(tmp_path: Path, grey: np.ndarray) -> Path:
    path = tmp_path / "expected.png"
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(path)
    return path


@pytest.mark.parametrize(
    ("mode", "peak", "note"),
    [
        ("F", 1.0, "has floating-point pixels: scaled from 0..1 to 8 bits"),
        ("F", 255.0, "has floating-point pixels: scaled from 0..255 to 8 bits"),
        ("I", 65535.0, "has 32-bit integer pixels: scaled from 0..65535 to 8 bits"),
    ],
)
def test_float_and_32_bit_greyscale_are_scaled_from_their_range_with_a_note(
    bundle: Path, tmp_path: Path, capsys, mode, peak, note
):
    # issue 35: a float TIFF in 0..1 compressed to an almost black image, without a word
    grey = textured_image(48, 64, 5)[..., 0]
    source = tmp_path / "in.tif"
    Image.fromarray((grey / 255.0 * peak).astype(np.float32 if mode == "F" else np.int32), mode).save(source)
    assert Image.open(source).mode == mode
    jpg, expected_jpg = tmp_path / "in.jpg", tmp_path / "expected.jpg"
    assert compress(source, bundle, jpg) == 0
    assert capsys.readouterr().err == f"shrink compress: note: {source} {note}\n"
    assert compress(_grey_reference(tmp_path, grey), bundle, expected_jpg) == 0
    assert jpg.read_bytes() == expected_jpg.read_bytes()  # the pipeline saw exactly the scaled pixels
    assert torch.equal(read_image(source), read_image(tmp_path / "expected.png"))  # eval and training too


@pytest.mark.parametrize(
    ("mode", "values", "why"),
    [
        ("I", (0, 255_000), "its 32-bit integer pixels run from 0 to 255000, outside 0..65535"),
        ("I", (-5, 200), "its 32-bit integer pixels run from -5 to 200, outside 0..65535"),
        ("F", (-0.5, 0.5), "its floating-point pixels run from -0.5 to 0.5, outside 0..255"),
        ("F", (0.0, float("nan")), "its floating-point pixels are not all finite"),
    ],
)
def test_greyscale_beyond_any_known_range_is_refused(bundle: Path, tmp_path: Path, capsys, mode, values, why):
    # issue 35: a 32-bit TIFF in 0..255000 was clipped, with exit 0
    array = np.zeros((48, 64), np.float32 if mode == "F" else np.int32)
    array[0, :2] = values
    source, jpg = tmp_path / "in.tif", tmp_path / "in.jpg"
    Image.fromarray(array, mode).save(source)
    assert compress(source, bundle, jpg) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"shrink compress: error: cannot read image {source}: {why}") and err.count("\n") == 1
    )
    assert not jpg.exists()
    with pytest.raises(ImageLoadError, match=f"^cannot read image {source}: {re.escape(why)}"):
        read_image(source)


def test_an_animation_says_that_only_its_first_frame_is_compressed(bundle: Path, tmp_path: Path, capsys):
    frames = [Image.fromarray(textured_image(48, 64, seed)) for seed in range(3)]
    gif, still = tmp_path / "anim.gif", tmp_path / "still.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    frames[0].save(still)
    assert compress(gif, bundle, tmp_path / "anim.jpg") == 0
    assert capsys.readouterr().err == f"shrink compress: note: {gif} has 3 frames: only the first is read\n"
    assert compress(still, bundle, tmp_path / "still.jpg") == 0
    assert capsys.readouterr().err == ""
    assert (tmp_path / "anim.jpg").read_bytes() == (tmp_path / "still.jpg").read_bytes()


def test_a_jpeg_is_never_written_under_another_formats_extension(
    bundle: Path, photo: Path, tmp_path: Path, capsys
):
    # issue 35: compress wrote JPEG bytes to out.png without a word (decompress refuses what it cannot honour)
    for name, image_format in (("out.png", "PNG"), ("out.WEBP", "WEBP"), ("out.tif", "TIFF")):
        assert compress(photo, bundle, tmp_path / name) == 2
        why = f"-o {tmp_path / name}: compress writes a JPEG file, not {image_format} (use .jpg)"
        assert capsys.readouterr().err == f"shrink compress: error: {why}\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("out")]
    for name in ("out.jpeg", "out.JPG", "out.shrink", "out"):
        assert compress(photo, bundle, tmp_path / name) == 0


def test_a_fifo_in_the_output_folder_is_refused_even_with_force(
    bundle: Path, photo: Path, tmp_path: Path, capsys
):
    second, folder = tmp_path / "second.png", tmp_path / "out"
    Image.fromarray(textured_image(48, 64, 1)).save(second)
    folder.mkdir()
    os.mkfifo(folder / "second.jpg")
    assert shrink("compress", photo, second, "--model", bundle, "-o", folder, "--force") == 2
    assert capsys.readouterr().err == (
        f"shrink compress: error: cannot write {folder / 'second.jpg'}: it exists and is not a regular file "
        "(a FIFO, device, socket or folder: refused)\n"
    )
    assert [p.name for p in folder.iterdir()] == ["second.jpg"] and (folder / "second.jpg").is_fifo()


def test_the_codec_api_refuses_a_target_bpp_that_would_overflow(bundle: Path, photo: Path):
    # issue 35: bpp 1e308 passed every check and overflowed computing the byte budget
    image = read_image(photo)
    for bpp in (1e308, float("inf"), float("nan"), 0.0, -1.0, 65.0):
        with pytest.raises(ValueError, match=r"^a target bpp lies in \(0, 64\], got "):
            compress_image(image, bundle, bpp=bpp)
        with pytest.raises(ValueError, match=r"^a target bpp lies in \(0, 64\], got "):
            choose(image, bundle, bpp=bpp)
    assert read_header(compress_image(image, bundle, bpp=64)).quality == 100
