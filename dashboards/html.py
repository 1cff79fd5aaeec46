"""HTML pieces of the report: one self-contained page (plotly.js inlined once, images as data URIs)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.offline

from shrink.compression.text import NAME_LIMIT, plain_text

from .gallery import GalleryInfo
from .study_info import BD_METRICS, BDRateRow

STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin: 24px 0 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
nav a { margin-right: 14px; } .meta { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th { background: #f4f4f4; } td.name, th.name { text-align: left; }
.note { color: #7a5b00; background: #fff8e1; border-left: 3px solid #f0c000; padding: 6px 10px;
        margin: 8px 0; }
.why { color: #888; font-size: 0.85em; } .neg { color: #1a7f37; } .pos { color: #b42318; }
.plot { margin: 6px 0 14px; }
.gallery-row { display: flex; gap: 18px; flex-wrap: wrap; margin: 12px 0 24px; }
figure { margin: 0; } figure img { width: 256px; height: 256px; image-rendering: pixelated;
       border: 1px solid #ccc; object-fit: contain; background: #fafafa; }
figcaption { font-size: 0.86em; color: #333; max-width: 256px; }
"""

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def esc_name(text: object, limit: int | None = NAME_LIMIT) -> str:
    """Untrusted text (a curve name, a study or trial attribute) for the page: one bounded line, escaped."""
    return esc(plain_text(text, limit))


def plotly_label(text: object, limit: int | None = NAME_LIMIT) -> str:
    """Untrusted text for a Plotly label (legend, hover, title, axis or tick), one bounded line.

    Plotly draws a subset of HTML in labels (``<a href>`` as a live link, ``<b style>``, ``<br>``) and turns
    ``&lt;`` ``&gt;`` ``&amp;`` back into text, so the text is escaped as for HTML, quotes aside: Plotly
    shows ``&quot;`` as written.
    """
    return html.escape(plain_text(text, limit), quote=False)


def page(title: str, header: str, nav: Sequence[tuple[str, str]], sections: Sequence[str]) -> str:
    """The whole document: plotly.js inlined in the head (no network), then header, nav and sections."""
    links = " ".join(f'<a href="#{esc(key)}">{esc(label)}</a>' for key, label in nav)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"{header}\n<nav>{links}</nav>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def section(key: str, title: str, body: str) -> str:
    return f'<section>\n<h2 id="{esc(key)}">{esc(title)}</h2>\n{body}\n</section>'


def figure(fig: go.Figure, div_id: str) -> str:
    inner = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    return f'<div class="plot">{inner}</div>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def paragraph(text: str) -> str:
    return f"<p>{esc(text)}</p>"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], name_columns: int = 1) -> str:
    """A table of already-escaped cells; the first ``name_columns`` columns are left-aligned."""

    def cells(values: Sequence[str], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=name' if i < name_columns else ''}>{v}</{tag}>" for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    head = cells([esc(h) for h in headers], "th")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def bd_cell(value: float | None, why: str | None) -> str:
    if value is None:
        return f'n/a <span class="why">({esc(why or "not computable")})</span>'
    kind = "neg" if value < 0 else "pos"
    return f'<span class="{kind}">{value:+.1f} %</span>'


def bd_table(rows: Sequence[BDRateRow]) -> str:
    """BD-rate (%) of each test curve vs each anchor; negative = fewer bits than the anchor."""
    body = [
        [esc_name(row.test), esc_name(row.anchor)]
        + [bd_cell(row.values[m], row.notes.get(m)) for m in BD_METRICS]
        for row in rows
    ]
    return table(["curve", "vs anchor", "BD-rate MS-SSIM dB", "BD-rate PSNR"], body, name_columns=2)


def gallery(info: GalleryInfo) -> str:
    parts = [note(text) for text in info.notes]
    if info.trial is not None and info.rows:
        parts.append(
            paragraph(
                f"Best Pareto trial {info.trial} (highest dev gain over JPEG) at quality {info.quality}, on "
                f"{_gallery_images(info)}; centre crops of {info.crop} px shown at 2x. Bytes, bpp and "
                "MS-SSIM are of the full image; JPEG is at the quality whose file size is nearest the shrink "
                "file."
            )
        )
    for row in info.rows:
        tiles = "".join(_tile(tile) for tile in row.tiles)
        height, width = row.size
        parts.append(f"<h3>{esc(row.image)} <span class=why>({width}x{height})</span></h3>")
        parts.append(f'<div class="gallery-row">{tiles}</div>')
    return "\n".join(parts)


def _gallery_images(info: GalleryInfo) -> str:
    if info.images_from == "dev":
        return "dev images"
    return f"held-out test images ({esc(info.images_from)}), never used for selection"


def _tile(tile) -> str:
    if tile.nbytes is None:
        caption = f"<b>{esc(tile.label)}</b>"
    else:
        caption = (
            f"<b>{esc(tile.label)}</b><br>{tile.nbytes} bytes ({tile.bpp:.3f} bpp)<br>"
            f"MS-SSIM {tile.msssim:.4f}"
        )
    return (
        f'<figure><img src="{tile.data_uri()}" alt="{esc(tile.label)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )
