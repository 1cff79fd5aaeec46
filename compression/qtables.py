"""Named JPEG quantisation table sets, scaled by quality exactly as libjpeg scales them.

A JPEG file carries the tables it was written with (its DQT segments), so a decoder needs nothing to read a
file written with any of these sets. The sets are mozjpeg's nine built-in ones (``jcparam.c``,
``std_luminance_quant_tbl[9]`` / ``std_chrominance_quant_tbl[9]``, chosen there by
``JINT_BASE_QUANT_TBL_IDX``), in the same order, base tables in natural (row-major) order. Set 0 is ITU-T T.81
Annex K (tables K.1 and K.2), the one libjpeg and Pillow use; set 3 is mozjpeg's default. The values were read
back from files that mozjpeg 4.0.3 wrote at quality 50 (scale 100 %, no baseline clamp), and
``tests/test_mozjpeg.py`` checks every set at every quality against files that mozjpeg and Pillow write.

Wherever a set is named, explicit base tables may stand instead (:data:`BaseTables`: two rows of 64 entries,
luma then chroma, natural order, the base that quality 50 writes as it is): what ``codec.learn_tables``
learns and ``codec.base_tables`` holds.
"""

from __future__ import annotations

import numpy as np

Table = tuple[tuple[int, ...], ...]
# Explicit base tables: (luma, chroma), 64 entries each in natural order.
BaseTables = tuple[tuple[int, ...], tuple[int, ...]]

# name -> (luma, chroma), mozjpeg's index order.
TABLE_SETS: dict[str, tuple[Table, Table]] = {
    "annex-k": (
        (
            (16, 11, 10, 16, 24, 40, 51, 61),
            (12, 12, 14, 19, 26, 58, 60, 55),
            (14, 13, 16, 24, 40, 57, 69, 56),
            (14, 17, 22, 29, 51, 87, 80, 62),
            (18, 22, 37, 56, 68, 109, 103, 77),
            (24, 35, 55, 64, 81, 104, 113, 92),
            (49, 64, 78, 87, 103, 121, 120, 101),
            (72, 92, 95, 98, 112, 100, 103, 99),
        ),
        (
            (17, 18, 24, 47, 99, 99, 99, 99),
            (18, 21, 26, 66, 99, 99, 99, 99),
            (24, 26, 56, 99, 99, 99, 99, 99),
            (47, 66, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
        ),
    ),
    "flat": (
        (
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
        ),
        (
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
            (16, 16, 16, 16, 16, 16, 16, 16),
        ),
    ),
    "msssim-kodak": (
        (
            (12, 17, 20, 21, 30, 34, 56, 63),
            (18, 20, 20, 26, 28, 51, 61, 55),
            (19, 20, 21, 26, 33, 58, 69, 55),
            (26, 26, 26, 30, 46, 87, 86, 66),
            (31, 33, 36, 40, 46, 96, 100, 73),
            (40, 35, 46, 62, 81, 100, 111, 91),
            (46, 66, 76, 86, 102, 121, 120, 101),
            (68, 90, 90, 96, 113, 102, 105, 103),
        ),
        (
            (8, 12, 15, 15, 86, 96, 96, 98),
            (13, 13, 15, 26, 90, 96, 99, 98),
            (12, 15, 18, 96, 99, 99, 99, 99),
            (17, 16, 90, 96, 99, 99, 99, 99),
            (96, 96, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
        ),
    ),
    "imagemagick": (
        (
            (16, 16, 16, 18, 25, 37, 56, 85),
            (16, 17, 20, 27, 34, 40, 53, 75),
            (16, 20, 24, 31, 43, 62, 91, 135),
            (18, 27, 31, 40, 53, 74, 106, 156),
            (25, 34, 43, 53, 69, 94, 131, 189),
            (37, 40, 62, 74, 94, 124, 169, 238),
            (56, 53, 91, 106, 131, 169, 226, 311),
            (85, 75, 135, 156, 189, 238, 311, 418),
        ),
        (
            (16, 16, 16, 18, 25, 37, 56, 85),
            (16, 17, 20, 27, 34, 40, 53, 75),
            (16, 20, 24, 31, 43, 62, 91, 135),
            (18, 27, 31, 40, 53, 74, 106, 156),
            (25, 34, 43, 53, 69, 94, 131, 189),
            (37, 40, 62, 74, 94, 124, 169, 238),
            (56, 53, 91, 106, 131, 169, 226, 311),
            (85, 75, 135, 156, 189, 238, 311, 418),
        ),
    ),
    "psnr-hvs-m": (
        (
            (9, 10, 12, 14, 27, 32, 51, 62),
            (11, 12, 14, 19, 27, 44, 59, 73),
            (12, 14, 18, 25, 42, 59, 79, 78),
            (17, 18, 25, 42, 61, 92, 87, 92),
            (23, 28, 42, 75, 79, 112, 112, 99),
            (40, 42, 59, 84, 88, 124, 132, 111),
            (42, 64, 78, 95, 105, 126, 125, 99),
            (70, 75, 100, 102, 116, 100, 107, 98),
        ),
        (
            (9, 10, 17, 19, 62, 89, 91, 97),
            (12, 13, 18, 29, 84, 91, 88, 98),
            (14, 19, 29, 93, 95, 95, 98, 97),
            (20, 26, 84, 88, 95, 95, 98, 94),
            (26, 86, 91, 93, 97, 99, 98, 99),
            (99, 100, 98, 99, 99, 99, 99, 99),
            (99, 99, 99, 99, 99, 99, 99, 99),
            (97, 97, 99, 99, 99, 99, 97, 99),
        ),
    ),
    "klein": (
        (
            (10, 12, 14, 19, 26, 38, 57, 86),
            (12, 18, 21, 28, 35, 41, 54, 76),
            (14, 21, 25, 32, 44, 63, 92, 136),
            (19, 28, 32, 41, 54, 75, 107, 157),
            (26, 35, 44, 54, 70, 95, 132, 190),
            (38, 41, 63, 75, 95, 125, 170, 239),
            (57, 54, 92, 107, 132, 170, 227, 312),
            (86, 76, 136, 157, 190, 239, 312, 419),
        ),
        (
            (10, 12, 14, 19, 26, 38, 57, 86),
            (12, 18, 21, 28, 35, 41, 54, 76),
            (14, 21, 25, 32, 44, 63, 92, 136),
            (19, 28, 32, 41, 54, 75, 107, 157),
            (26, 35, 44, 54, 70, 95, 132, 190),
            (38, 41, 63, 75, 95, 125, 170, 239),
            (57, 54, 92, 107, 132, 170, 227, 312),
            (86, 76, 136, 157, 190, 239, 312, 419),
        ),
    ),
    "watson": (
        (
            (7, 8, 10, 14, 23, 44, 95, 241),
            (8, 8, 11, 15, 25, 47, 102, 255),
            (10, 11, 13, 19, 31, 58, 127, 255),
            (14, 15, 19, 27, 44, 83, 181, 255),
            (23, 25, 31, 44, 72, 136, 255, 255),
            (44, 47, 58, 83, 136, 255, 255, 255),
            (95, 102, 127, 181, 255, 255, 255, 255),
            (241, 255, 255, 255, 255, 255, 255, 255),
        ),
        (
            (7, 8, 10, 14, 23, 44, 95, 241),
            (8, 8, 11, 15, 25, 47, 102, 255),
            (10, 11, 13, 19, 31, 58, 127, 255),
            (14, 15, 19, 27, 44, 83, 181, 255),
            (23, 25, 31, 44, 72, 136, 255, 255),
            (44, 47, 58, 83, 136, 255, 255, 255),
            (95, 102, 127, 181, 255, 255, 255, 255),
            (241, 255, 255, 255, 255, 255, 255, 255),
        ),
    ),
    "ahumada": (
        (
            (15, 11, 11, 12, 15, 19, 25, 32),
            (11, 13, 10, 10, 12, 15, 19, 24),
            (11, 10, 14, 14, 16, 18, 22, 27),
            (12, 10, 14, 18, 21, 24, 28, 33),
            (15, 12, 16, 21, 26, 31, 36, 42),
            (19, 15, 18, 24, 31, 38, 45, 53),
            (25, 19, 22, 28, 36, 45, 55, 65),
            (32, 24, 27, 33, 42, 53, 65, 77),
        ),
        (
            (15, 11, 11, 12, 15, 19, 25, 32),
            (11, 13, 10, 10, 12, 15, 19, 24),
            (11, 10, 14, 14, 16, 18, 22, 27),
            (12, 10, 14, 18, 21, 24, 28, 33),
            (15, 12, 16, 21, 26, 31, 36, 42),
            (19, 15, 18, 24, 31, 38, 45, 53),
            (25, 19, 22, 28, 36, 45, 55, 65),
            (32, 24, 27, 33, 42, 53, 65, 77),
        ),
    ),
    "peterson": (
        (
            (14, 10, 11, 14, 19, 25, 34, 45),
            (10, 11, 11, 12, 15, 20, 26, 33),
            (11, 11, 15, 18, 21, 25, 31, 38),
            (14, 12, 18, 24, 28, 33, 39, 47),
            (19, 15, 21, 28, 36, 43, 51, 59),
            (25, 20, 25, 33, 43, 54, 64, 74),
            (34, 26, 31, 39, 51, 64, 77, 91),
            (45, 33, 38, 47, 59, 74, 91, 108),
        ),
        (
            (14, 10, 11, 14, 19, 25, 34, 45),
            (10, 11, 11, 12, 15, 20, 26, 33),
            (11, 11, 15, 18, 21, 25, 31, 38),
            (14, 12, 18, 24, 28, 33, 39, 47),
            (19, 15, 21, 28, 36, 43, 51, 59),
            (25, 20, 25, 33, 43, 54, 64, 74),
            (34, 26, 31, 39, 51, 64, 77, 91),
            (45, 33, 38, 47, 59, 74, 91, 108),
        ),
    ),
}

# Largest quantiser a table entry may hold: 8-bit tables keep a file baseline (Pillow and jpegli always
# clamp so); libjpeg's ``force_baseline = FALSE`` (mozjpeg's and cjpeg's default) allows 16-bit entries.
BASELINE_MAX = 255
EXTENDED_MAX = 32767
# Bound of an explicit base table's entries: above the largest named base entry (418), and low enough that no
# quality scales an entry past EXTENDED_MAX's reach unclamped (1000 x 5000 % = 50 000 is clamped).
BASE_MAX = 1000


def mozjpeg_index(name: str) -> int:
    """The ``JINT_BASE_QUANT_TBL_IDX`` of a named set."""
    return list(TABLE_SETS).index(name)


def quality_scale(quality: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: quality 1..100 -> a percentage scale of the base tables."""
    quality = min(max(int(quality), 1), 100)
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def base_arrays(tables: str | BaseTables) -> tuple[np.ndarray, np.ndarray]:
    """The (luma, chroma) 8x8 int64 base tables of a named set or of explicit :data:`BaseTables`."""
    if isinstance(tables, str):
        if tables not in TABLE_SETS:
            raise ValueError(
                f"unknown quantisation table set {tables!r}; choose one of {', '.join(TABLE_SETS)}"
            )
        return tuple(np.asarray(base, dtype=np.int64) for base in TABLE_SETS[tables])  # type: ignore[return-value]
    check_base_tables(tables)
    return tuple(np.asarray(row, dtype=np.int64).reshape(8, 8) for row in tables)  # type: ignore[return-value]


def check_base_tables(tables: BaseTables) -> None:
    """Two rows of 64 integers in 1..BASE_MAX, or a one-line ValueError."""
    if len(tables) != 2 or any(len(row) != 64 for row in tables):
        raise ValueError("base tables must be two rows (luma, chroma) of 64 entries each")
    if not all(isinstance(v, (int, np.integer)) and 1 <= v <= BASE_MAX for row in tables for v in row):
        raise ValueError(f"base table entries must be integers in 1..{BASE_MAX}")


def scaled_tables(
    tables: str | BaseTables, quality: int, max_value: int = BASELINE_MAX
) -> tuple[np.ndarray, np.ndarray]:
    """The (luma, chroma) 8x8 tables of a named set or explicit base tables at ``quality``, as
    ``jpeg_set_quality`` makes them: ``(base * scale + 50) // 100`` clamped to ``1..max_value`` (int64,
    natural order)."""
    scale = quality_scale(quality)
    return tuple(  # type: ignore[return-value]
        np.clip((base * scale + 50) // 100, 1, max_value) for base in base_arrays(tables)
    )
