"""Units (pint) and their conversion to the solver's internal units: the one units module of the
project (scenario files, data files and the presets' molar values all go through it).

Internal units: mm, s, pg; concentrations pg/mm^3 (= ng/mL), cells counted.
Molar quantities (nM, molecule/cell/s) convert through the factor's molecular
weight. A value is a string with a unit ("33.7 min", "1.04e-6 cm^2/s", "4 ng/mL")
or a bare number where the quantity is dimensionless ("2e6" cells, 0.45).
"""

from __future__ import annotations

import difflib
import functools
import math
import re
import reprlib

import pint


class UnitError(ValueError):
    """A value that is not a quantity of the expected kind; the message names where it came from and what is allowed."""


def suggest(key, allowed) -> str:
    """'; did you mean X?' for the valid name nearest to key, or ''."""
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 3, 60, 60, 6, 6
_REPR.maxlong = 40


def show(value) -> str:
    """A short repr of a value for messages: long strings, deep or long lists and tables are cut."""
    try:
        return _REPR.repr(value)
    except (RecursionError, ValueError):  # pragma: no cover - reprlib limits the depth itself
        return f"<{type(value).__name__}>"


#: the longest text read as a quantity; longer text is refused before pint reads it
MAX_TEXT = 200
# an exponent that is not a plain number (10^10^10, 2**(99)) could make pint build an enormous integer
_BAD_POWER = re.compile(r"(\*\*|\^)\s*[-+]?\s*(\(|[0-9.]+(?:[eE][-+]?[0-9]+)?\s*(\*\*|\^))")
_POWER = re.compile(r"(?:\*\*|\^)\s*[-+]?\s*([0-9.]+(?:[eE][-+]?[0-9]+)?)")
MAX_POWER = 100


@functools.lru_cache(maxsize=1)
def registry() -> pint.UnitRegistry:
    ureg = pint.UnitRegistry()
    ureg.define("cell = [cell_count] = cells")
    return ureg


#: kind -> (internal unit, dimensionality strings accepted, example)
KINDS = {
    "length": ("mm", "a length, e.g. \"0.5 mm\""),
    "time": ("s", "a time, e.g. \"33.7 min\" or \"7 d\""),
    "diffusivity": ("mm^2/s", "a diffusivity, e.g. \"1.04e-6 cm^2/s\""),
    "rate": ("1/s", "a rate, e.g. \"1e-3 1/s\" or \"0.5 /h\""),
    "velocity": ("mm/s", "a permeability (length/time), e.g. \"4e-8 cm/s\""),
    "volume": ("mm^3", "a volume, e.g. \"50 uL\""),
    "concentration": ("pg/mm^3", "a concentration, e.g. \"4 ng/mL\" or \"0.1 nM\""),
    "amount": ("pg", "an amount, e.g. \"200 ng\" or \"1 pmol\""),
    "secretion": ("pg/cell/s", "a secretion rate per cell, e.g. \"1203 pg / (1e6 cell * 48 h)\" or "
                               "\"0.1 molecule/cell/s\""),
    "cells": ("cell", "a number of cells, e.g. \"1e6\" or \"2e6 cells\""),
    "volume_rate": ("mm^3/s", "a volume per time, e.g. \"10 uL/min\""),
    "concentration_rate": ("pg/mm^3/s", "a concentration per time, e.g. \"0.1 ng/mL/min\""),
    "kon": ("mm^3/pg/s", "a second-order rate constant, e.g. \"4.2e5 1/M/s\""),
    "number": ("", "a number"),
}

# molar forms: replacing [substance] by [mass] through the molecular weight
_MOLAR = {"concentration", "amount", "secretion", "concentration_rate", "kon"}


def parse(value, kind: str, where: str, *, mw_kda: float | None = None) -> float:
    """Convert a scenario value to the internal unit of `kind`; `where` names file and key in errors."""
    unit, allowed = KINDS[kind]
    ureg = registry()
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise UnitError(f"{where} = {show(value)}; allowed: {allowed}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnitError(f"{where} = {value!r} is not finite; allowed: {allowed}")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise UnitError(f"{where} = {show(value)} is {len(value)} characters long; allowed: {allowed} "
                            f"(at most {MAX_TEXT} characters)")
        if _BAD_POWER.search(value) or any(_big_power(x) for x in _POWER.findall(value)):
            raise UnitError(f"{where} = {show(value)}: exponents must be plain numbers of at most {MAX_POWER} in "
                            f"size (as in \"cm^2/s\" or \"1e-6\"); allowed: {allowed}")
        if not value.strip():
            raise UnitError(f"{where} = {value!r} is empty; allowed: {allowed}")
    try:
        q = ureg.Quantity(value) if isinstance(value, str) else ureg.Quantity(float(value))
    except Exception as err:  # pint raises several types for text it cannot read
        raise UnitError(f"{where} = {show(value)} is not a quantity pint can read ({type(err).__name__}: "
                        f"{show(str(err))}); allowed: {allowed}") from None
    if not isinstance(q, ureg.Quantity):  # pragma: no cover - pint returns a Quantity for any text it reads
        raise UnitError(f"{where} = {show(value)}; allowed: {allowed}")
    try:
        return _convert(q, value, kind, where, mw_kda)
    except (OverflowError, ZeroDivisionError, TypeError, ValueError) as err:
        if isinstance(err, UnitError):
            raise
        raise UnitError(f"{where} = {show(value)} cannot be converted ({type(err).__name__}: {show(str(err))}); "
                        f"allowed: {allowed} (a finite value)") from None


def _big_power(text: str) -> bool:
    try:
        return not abs(float(text)) <= MAX_POWER
    except ValueError:
        return False


def _convert(q, value, kind, where, mw_kda) -> float:
    unit, allowed = KINDS[kind]
    ureg = registry()
    mag = q.magnitude
    if isinstance(mag, complex) or not isinstance(mag, (int, float)):
        raise UnitError(f"{where} = {show(value)}; allowed: {allowed} (a real number)")
    if isinstance(mag, float) and not math.isfinite(mag):
        raise UnitError(f"{where} = {show(value)} is not finite; allowed: {allowed}")
    if q.dimensionless and mag == 0:
        return 0.0  # zero needs no unit
    if kind == "cells" and q.dimensionless:
        q = q * ureg.cell
    if kind == "number":
        if not q.dimensionless:
            raise UnitError(f"{where} = {show(value)} has units ({q.units}); allowed: {allowed} without units")
        out = float(q.to("dimensionless").magnitude)
    else:
        target = ureg.Quantity(1.0, unit)
        if kind in _MOLAR and q.dimensionality.get("[substance]", 0) != 0:
            if mw_kda is None:
                raise UnitError(f"{where} = {show(value)} is molar; give the factor's molecular weight (mw) to "
                                "convert it")
            n = q.dimensionality["[substance]"]
            q = q * (ureg.Quantity(mw_kda * 1e3, "g/mol") ** n)
        if q.dimensionality != target.dimensionality:
            got = "dimensionless" if q.dimensionless else str(q.dimensionality)
            raise UnitError(f"{where} = {show(value)} has dimension {got}; allowed: {allowed}")
        out = float(q.to(unit).magnitude)
    if not math.isfinite(out):
        raise UnitError(f"{where} = {show(value)} is not finite; allowed: {allowed}")
    return out


def format_internal(kind: str) -> str:
    return KINDS[kind][0] or "1"


def molar_to_pg_per_mm3(molar: float, mw_kda: float) -> float:
    """Concentration in mol/L to pg/mm^3 (= ng/mL) through the molecular weight."""
    return parse(f"{molar!r} mol/L", "concentration", "molar concentration", mw_kda=mw_kda)


def kon_per_molar_to_internal(kon: float, mw_kda: float) -> float:
    """A second-order rate constant in 1/(M s) to mm^3/(pg s)."""
    return parse(f"{kon!r} 1/M/s", "kon", "kon", mw_kda=mw_kda)
