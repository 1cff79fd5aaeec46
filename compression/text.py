"""Text from files, studies and headers shown to a person: one line, no control codes, bounded.

A curve name, a description, a trial attribute or a header field is data, never instructions to a terminal:
C0 and C1 control characters (ESC starts the sequences that clear or retitle a terminal, BEL ends a title),
line and paragraph separators, bidirectional overrides (which reorder what is shown) and lone surrogates
(which no terminal encoding can print) each become a space. Text longer than its limit keeps its start and
its end (where a name's distinguishing suffix often is) around an ellipsis.

The report escapes this same text for HTML and Plotly's label markup on top (``shrink.dashboards.html``).
"""

from __future__ import annotations

import re

NAME_LIMIT = 80  # a name: a curve, a study, a model, an attribute value
LINE_LIMIT = 300  # a sentence: a description, a prune reason, a command
ELLIPSIS = "…"
CONTROL_CODES = re.compile(
    "[\x00-\x1f\x7f-\x9f"  # C0, DEL, C1 (ESC, BEL, CSI, OSC, NEL, ...)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidirectional marks, embeddings, overrides, isolates
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff]"  # lone surrogates (JSON's "\ud800" decodes to one)
)


def plain_text(text: object, limit: int | None = NAME_LIMIT) -> str:
    """``text`` as one line without control codes, at most ``limit`` characters (None: any length)."""
    line = CONTROL_CODES.sub(" ", str(text))
    return line if limit is None else shorten(line, limit)


def shorten(text: str, limit: int) -> str:
    """``text``, or its first and last characters around an ellipsis when it is longer than ``limit``."""
    if len(text) <= limit:
        return text
    tail = (limit - len(ELLIPSIS)) // 2
    head = limit - len(ELLIPSIS) - tail
    return text[:head] + ELLIPSIS + (text[-tail:] if tail else "")
