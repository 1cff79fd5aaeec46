"""Every JPEG encoder shrink writes with opens in Chromium as it opens in Pillow (issue 37).

The files (libjpeg with Annex K and with another named table set, mozjpeg's progressive files with 16-bit
tables at a low quality, 4:4:4, with explicit base tables, and a ``shrink compress`` file of a mozjpeg bundle
with its SHRINK segment) are embedded in one page as data URIs (same origin, so a canvas may read them back);
after load, a probe draws each onto a canvas and writes onto <html> its natural size and mean sample value,
which must match Pillow's decode. A file cut before its frame header is the negative control: Chromium must
report it undecoded (a progressive file cut after its first scans still draws, as browsers show a partial
download).
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shrink.compression.codecs import JpegCodec, MozjpegCodec

from .conftest import textured_image
from .helpers import compress_with_codec_bundle
from .test_report_browser import chromium_or_skip, run_chromium

PROBE = """<script>
window.addEventListener("load", function () {
  var found = {};
  document.querySelectorAll("img").forEach(function (img) {
    var width = img.naturalWidth, height = img.naturalHeight, mean = null;
    if (width > 0 && height > 0) {
      var canvas = document.createElement("canvas");
      canvas.width = width; canvas.height = height;
      var context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      var data = context.getImageData(0, 0, width, height).data, sum = 0;
      for (var i = 0; i < data.length; i += 4) { sum += data[i] + data[i + 1] + data[i + 2]; }
      mean = sum / (3 * width * height);
    }
    found[img.id] = [width, height, mean];
  });
  document.documentElement.setAttribute("data-probe-images", JSON.stringify(found));
});
</script>"""


def chromium_images(browser: str, files: dict[str, bytes], tmp_path: Path) -> dict[str, list]:
    tags = "".join(
        f'<img id="{name}" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'
        for name, data in files.items()
    )
    page = tmp_path / "jpegs.html"
    page.write_text(f"<!DOCTYPE html><html><head>{PROBE}</head><body>{tags}</body></html>")
    done = run_chromium(
        browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'data-probe-images="([^"]*)"', done.stdout)
    assert match, "the probe did not report (page never finished loading?)"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def test_every_jpeg_encoder_s_files_open_in_chromium_as_in_pillow(tmp_path: Path) -> None:
    browser = chromium_or_skip()
    image = textured_image(120, 152, 3)
    files = {
        "libjpeg": JpegCodec().encode(image, 60),
        "libjpeg-watson": JpegCodec(tables="watson").encode(image, 60),
        "mozjpeg-q5": MozjpegCodec().encode(image, 5),  # 16-bit table entries
        "mozjpeg-q90": MozjpegCodec().encode(image, 90),
        "mozjpeg-444-flat": MozjpegCodec(subsampling="4:4:4", tables="flat").encode(image, 50),
        # explicit (learned) base tables: the library numbers the components 0..2, not 1..3
        "mozjpeg-explicit": MozjpegCodec(tables=(tuple(range(8, 72)), tuple(range(20, 84)))).encode(image, 3),
        "shrink-mozjpeg": compress_with_codec_bundle(
            tmp_path, image, ["codec.name=mozjpeg", "codec.tables=ahumada"], MozjpegCodec(tables="ahumada")
        ),
    }
    files["truncated"] = files["mozjpeg-q90"][:40]  # cut before the frame header: nothing to decode
    found = chromium_images(browser, files, tmp_path)
    assert found["truncated"][0] == 0  # the control: an undecodable file is seen as one
    assert set(found) == set(files)
    for name, data in files.items():
        if name == "truncated":
            continue
        with Image.open(io.BytesIO(data)) as opened:
            pillow = np.asarray(opened.convert("RGB"), dtype=np.float64)
        width, height, mean = found[name]
        assert (width, height) == (pillow.shape[1], pillow.shape[0]), name
        assert mean == pytest.approx(pillow.mean(), abs=1.0), name
