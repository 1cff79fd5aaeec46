"""Names a user gives (a zoo model, a family member, a study): one short plain set of characters.

A name becomes a folder, a line of ``shrink zoo list``, part of an error message and of ``zoo:NAME``; so it is
1 to 64 letters, digits, ``.``, ``_`` or ``-``, not starting with ``.`` or ``-`` (no hidden file, no option),
and never holds ``:`` (``zoo:zoo:x``), ``/``, a space or a control character.
"""

from __future__ import annotations

import re

MAX_NAME = 64
NAME_PATTERN = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{MAX_NAME - 1}}}")
NAME_RULE = f"1 to {MAX_NAME} letters, digits, '.', '_' or '-', not starting with '.' or '-'"
ZOO_PREFIX = "zoo:"


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def shown_name(name: object, limit: int = 80) -> str:
    """``name`` for a one-line message: quoted and escaped (``repr``), cut at ``limit`` characters."""
    text = name[:limit] if isinstance(name, str) else name
    return repr(text) + ("..." if isinstance(name, str) and len(name) > limit else "")


def shown_names(names: list, limit: int = 10) -> str:
    """A list of names for a one-line message: each :func:`shown_name`, the first ``limit`` of them."""
    more = ", ..." if len(names) > limit else ""
    return "[" + ", ".join(shown_name(name) for name in names[:limit]) + more + "]"


def check_name(name: object, what: str) -> str:
    """``name`` when :func:`valid_name`; else a one-line :class:`ValueError` saying why."""
    if valid_name(name):
        return name
    if isinstance(name, str) and name.startswith(ZOO_PREFIX):
        raise ValueError(f"{what} {shown_name(name)}: give the name without the '{ZOO_PREFIX}' prefix")
    raise ValueError(f"{what} {shown_name(name)} is not a valid name ({NAME_RULE})")
