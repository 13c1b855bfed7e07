"""Units of scenario and data files: `solver.units` (the project's one units module), with the
application's error type.
"""

from __future__ import annotations

from solver.units import KINDS, UnitError, format_internal, registry, suggest
from solver.units import parse as _parse

__all__ = ["KINDS", "ScenarioError", "format_internal", "parse", "registry", "suggest"]


class ScenarioError(UnitError):
    """A scenario file (or one of its values) is not valid; the message names file, key and what is allowed."""


def parse(value, kind: str, where: str, *, mw_kda: float | None = None) -> float:
    """Convert a scenario value to the internal unit of `kind` (see solver.units.parse); raises ScenarioError."""
    try:
        return _parse(value, kind, where, mw_kda=mw_kda)
    except UnitError as err:
        raise ScenarioError(str(err)) from None
