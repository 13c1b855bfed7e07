"""Units of scenario and data files: `solver.units` (the project's one units module), with the
application's error type.
"""

from __future__ import annotations

import re

from paracrine.solver.units import KINDS, UnitError, format_internal, registry, show, suggest
from paracrine.solver.units import parse as _parse

__all__ = ["KINDS", "NAME_PATTERN", "ScenarioError", "format_internal", "parse", "registry", "show", "suggest"]

#: names that become file, column or dataset names (factors, regions, probes)
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.+-]{0,63}$"
NAME_RE = re.compile(NAME_PATTERN[1:-1])  # used with fullmatch (no newline before the end)


class ScenarioError(UnitError):
    """A scenario file (or one of its values) is not valid; the message names file, key and what is allowed."""


def parse(value, kind: str, where: str, *, mw_kda: float | None = None) -> float:
    """Convert a scenario value to the internal unit of `kind` (see solver.units.parse); raises ScenarioError."""
    try:
        return _parse(value, kind, where, mw_kda=mw_kda)
    except UnitError as err:
        raise ScenarioError(str(err)) from None
