"""Observations from a long-format CSV, checked against the scenario they are fitted with.

    time [h],quantity,factor,where,value [pg/mL],sd [pg/mL]
    24,concentration,VEGF,border,12.5,3.1
    # lines starting with '#' are comments (sources, notes)

Columns: `time`, `quantity`, `factor`, `where`, `value`, and `sd` or `cv` (coefficient of
variation). Units go in the header (`time [h]`, `value [pg/mL]`) or, for value and sd, in a
`unit` column per row; pint reads them, molar units through the factor's molecular weight.

The file is UTF-8 text (a byte-order mark is skipped) of at most 10 MB, separated by commas with
'.' as the decimal mark: semicolon- or tab-separated files are refused, and so is every row whose
number of fields differs from the header's (decimal commas are named as the likely cause).
Identical data rows are counted as separate observations, with a DataWarning naming them.

quantity       where                         model value
concentration  region, probe or "tissue"     volume mean (pg/mm^3), or P1-interpolated at a probe
amount         region or "tissue"            free factor (pg)
content        region or "tissue"            free + bound (pg): what an ELISA of a homogenate measures
percent_dose   region or "tissue"            content as % of the injected conditioned-medium dose
cells          "tissue" (factor empty)       retained living cells (survival model)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import re
import warnings
from pathlib import Path

import numpy as np

from .reader import read_text
from .units import ScenarioError, parse, show, suggest

QUANTITIES = {"concentration": "concentration", "amount": "amount", "content": "amount",
              "percent_dose": "number", "cells": "cells"}
COLUMNS = ("time", "quantity", "factor", "where", "value", "sd", "cv", "unit")
MAX_BYTES = 10_000_000  # a data file


class DataError(ValueError):
    """Bad observation data; the message names the file, line, column, value and what is allowed."""


class DataWarning(UserWarning):
    """Data that are read, but probably not as meant (identical rows); the message names the lines."""


@dataclasses.dataclass
class Observations:
    """Data in internal units: time (s), value and sd in the quantity's internal unit
    (percent_dose as a fraction)."""

    time: np.ndarray
    quantity: list
    factor: list
    where: list
    value: np.ndarray
    sd: np.ndarray
    source: str = "<data>"
    lines: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.value)

    def subset(self, mask) -> "Observations":
        idx = np.flatnonzero(mask)
        return Observations(self.time[idx], [self.quantity[i] for i in idx], [self.factor[i] for i in idx],
                            [self.where[i] for i in idx], self.value[idx], self.sd[idx], self.source,
                            [self.lines[i] for i in idx] if self.lines else [], list(self.warnings))


def _header(cells: list[str], source: str) -> dict:
    out = {}
    if not cells or not "".join(cells).strip():
        raise DataError(f"{source}: the header is empty; allowed: time [unit],quantity,factor,where,value,sd (or cv)")
    for k, h in enumerate(cells):
        m = re.fullmatch(r"\s*([A-Za-z_]+)\s*(?:\[(.*)\])?\s*", h)
        if not m:
            raise DataError(f"{source}: header column {k + 1} {show(h)}; allowed: a name with an optional [unit]")
        name, unit = m.group(1).lower(), (m.group(2) or "").strip() or None
        if name not in COLUMNS:
            raise DataError(f"{source}: header column {h!r}: unknown column{suggest(name, COLUMNS)} allowed: {list(COLUMNS)}")
        if name in out:
            raise DataError(f"{source}: header columns {out[name][0] + 1} and {k + 1} are both {name!r}; allowed: "
                            "each column once")
        out[name] = (k, unit)
    for need in ("time", "quantity", "where", "value"):
        if need not in out:
            raise DataError(f"{source}: the header has no {need!r} column; needed: time, quantity, factor, where, "
                            "value and sd or cv")
    if ("sd" in out) == ("cv" in out):
        raise DataError(f"{source}: give exactly one of the columns sd or cv (the measurement's uncertainty)")
    if out["time"][1] is None:
        raise DataError(f"{source}: the time column needs a unit in the header, e.g. 'time [h]'")
    return out


def read_csv(path, scenario, *, probes: dict | None = None) -> Observations:
    """Read and check observations for `scenario` (a paracrine Scenario)."""
    path = Path(path)
    text = read_text(path, what="data", limit=MAX_BYTES, error=DataError)
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for row in reader:
            lineno, start = start, reader.line_num + 1  # the line the row starts on
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            rows.append((lineno, [c.strip() for c in row]))
    except csv.Error as err:
        raise DataError(f"{path}, line {start}: not CSV that can be read ({err}); allowed: comma-separated "
                        "UTF-8 text") from None
    if not rows:
        raise DataError(f"{path}: no header and no data (the file is empty or holds only comments); allowed: a "
                        "header line time [unit],quantity,factor,where,value,sd (or cv) and data rows")
    head_no, head = rows[0][0], ",".join(rows[0][1])
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
        if head.count(sep) >= 2 and head.count(sep) > head.count(","):
            raise DataError(f"{path}, line {head_no}: the header is separated by {name} ({sep!r}); allowed: commas "
                            "(',') between fields and '.' as the decimal mark (export the table as comma-separated "
                            "CSV)")
    return from_rows(rows[0][1], rows[1:], scenario, source=str(path), probes=probes)


def from_rows(header, rows, scenario, *, source="<data>", probes=None) -> Observations:
    """Observations from a header and (line number, cells) rows (see read_csv)."""
    d = scenario.data
    cols = _header(header, source)
    factors, regions = list(d["factors"]), list(d["regions"])
    probes = dict(d.get("probes", {}) if probes is None else probes)
    end = d["time"]["end"]
    t_all, q_all, f_all, w_all, v_all, s_all, lines = [], [], [], [], [], [], []
    media_factors = {f for m in d["media"] for f, a in m["amount"].items() if a > 0}
    width = len(header)
    seen: dict = {}
    for lineno, cells in rows:
        where_at = f"{source}, line {lineno}"
        if len(cells) != width:
            hint = ""
            if len(cells) > width and any(re.fullmatch(r"[-+]?\d+", a) and re.fullmatch(r"\d+", b)
                                          for a, b in zip(cells, cells[1:])):
                hint = (" (it looks like decimal commas, e.g. '12,5': write '12.5', or quote the field, and keep "
                        "commas as separators)")
            raise DataError(f"{where_at}: {len(cells)} fields, the header has {width}{hint}; allowed: exactly "
                            f"{width} comma-separated fields per row")
        seen.setdefault(tuple(cells), []).append(lineno)

        def cell(name, default=None):
            if name not in cols:
                return default
            k = cols[name][0]
            return cells[k] if k < len(cells) else ""

        def number(name):
            text = cell(name)
            try:
                v = float(text)
            except (TypeError, ValueError):
                hint = " (a decimal comma? write '.')" if isinstance(text, str) and re.fullmatch(r"[-+]?\d*,\d+", text) else ""
                raise DataError(f"{where_at}, column {name}: {show(text)} is not a number{hint}") from None
            if not math.isfinite(v):
                raise DataError(f"{where_at}, column {name}: {text!r}; allowed: a finite number")
            return v

        q = cell("quantity")
        if q not in QUANTITIES:
            raise DataError(f"{where_at}, column quantity: {q!r}{suggest(q, QUANTITIES)} allowed: {list(QUANTITIES)}")
        f = cell("factor", "") or ""
        if q == "cells":
            if f not in ("", "-"):
                raise DataError(f"{where_at}, column factor: {f!r}; cells rows have no factor (leave it empty)")
            if not d["injections"]:
                raise DataError(f"{where_at}: cells data, but the scenario injects no cells")
            f = None
        elif f not in factors:
            raise DataError(f"{where_at}, column factor: {f!r}{suggest(f, factors)} allowed: {factors}")
        w = cell("where")
        allowed_where = (["tissue"] if q == "cells" else regions + ["tissue"] + (list(probes) if q == "concentration" else []))
        if w not in allowed_where:
            raise DataError(f"{where_at}, column where: {w!r}{suggest(w, allowed_where)} allowed for {q}: {allowed_where}")
        if q == "percent_dose" and f not in media_factors:
            raise DataError(f"{where_at}: percent_dose of {f}: the scenario injects no conditioned medium with {f} "
                            "(the dose it is a percentage of)")
        kind = QUANTITIES[q]
        mw = None if f is None else d["factors"][f]["mw_kda"]
        unit = cell("unit") or None
        vunit = unit or cols["value"][1]
        t_unit = cols["time"][1]
        try:
            t = parse(f"{number('time')} {t_unit}", "time", f"{where_at}, column time")
        except ScenarioError as err:
            raise DataError(str(err)) from None
        if not 0 < t <= end * (1 + 1e-9):
            raise DataError(f"{where_at}, column time: {cell('time')} {t_unit} is outside the scenario's run "
                            f"(0, {end / 3600:g} h]; allowed: times in it")

        def convert(name, u):
            v = number(name)
            if v < 0 or (name == "sd" and v <= 0):
                raise DataError(f"{where_at}, column {name}: {cell(name)}; allowed: "
                                f"{'> 0' if name == 'sd' else '>= 0'}")
            if u is None and kind not in ("number", "cells"):
                raise DataError(f"{where_at}, column {name}: no unit (give '{name} [unit]' in the header or a unit column)")
            try:
                if kind == "number":
                    return v * (parse(f"1 {u}", "number", f"{where_at}, column {name} unit") if u else 0.01)
                return v * parse(f"1 {u}" if u else "1", kind, f"{where_at}, column {name} unit", mw_kda=mw)
            except ScenarioError as err:
                raise DataError(str(err)) from None

        v = convert("value", vunit)
        if "sd" in cols:
            sd = convert("sd", unit or cols["sd"][1])
        else:
            cv = number("cv")
            if not cv > 0:
                raise DataError(f"{where_at}, column cv: {cell('cv')}; allowed: > 0")
            sd = cv * v
            if not sd > 0:
                raise DataError(f"{where_at}: cv with a zero value gives no uncertainty; give sd instead")
        t_all.append(t), q_all.append(q), f_all.append(f), w_all.append(w), v_all.append(v), s_all.append(sd)
        lines.append(lineno)
    if not t_all:
        raise DataError(f"{source}: a header but no data rows; allowed: at least one data row after the header")
    notes = []
    dups = [ls for ls in seen.values() if len(ls) > 1]
    if dups:
        listed = "; ".join("lines " + ", ".join(map(str, ls)) for ls in dups[:10]) + ("; ..." if len(dups) > 10 else "")
        notes.append(f"{source}: identical data rows ({listed}); each counts as a separate observation (remove the "
                     "copies if they are not repeated measurements)")
    for note in notes:
        warnings.warn(note, DataWarning, stacklevel=3)
    return Observations(np.array(t_all), q_all, f_all, w_all, np.array(v_all), np.array(s_all), source, lines,
                        notes)
