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

ELISA data as measured: per mass of wet tissue or per mass of protein. Write the unit with the
word `tissue` or `protein` after the mass it is per: `pg/mg tissue`, `ng/g tissue`,
`pg/mg protein` (also in a `unit` column). A bare mass ratio (`pg/mg`) is refused, as it does not
say which. Such values are read as concentrations (pg/mm^3):

    pg/mg tissue   x tissue_density                          (default 1.05 g/mL)
    pg/mg protein  x protein_per_tissue x tissue_density     (default 67 mg protein per g wet tissue)

With quantity `concentration` (or `amount`) the model value is the free factor's volume mean of
the region; with quantity `content` it is free + bound per tissue volume (content / region
volume): what the homogenate's ELISA measures when the scenario models ECM binding. Override the
two factors in the data file, on comment lines before or after the header,

    # tissue_density = 1.06 g/mL
    # protein_per_tissue = 80 mg/g        (mg protein per g wet tissue, of your lysis protocol)

in the scenario's `[data]` table (`tissue_density = "1.06 g/mL"`, `protein_per_tissue =
"80 mg/g"`; the data file's own lines take precedence over it), or by `read_csv(...,
tissue_density=..., protein_per_tissue=...)` (`paracrine fit --tissue-density`,
`--protein-per-tissue`), which take precedence over both. The values used,
with their sources, are kept in `Observations.conversions` (and fit.json).
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

#: wet myocardium, g/mL = mg/mm^3 (x 1e9 for pg/mm^3), with its source
TISSUE_DENSITY = (1.05, "Yipintsoi, Scanlon & Bassingthwaighte 1972, Proc Soc Exp Biol Med 141:1032 (dog LV "
                        "1.05-1.06 g/mL; cat LV 1.057 g/mL); Vinnakota & Bassingthwaighte 2004, Am J Physiol Heart "
                        "Circ Physiol 286:H1742 (rat myocardium 1.053 g/mL)")
#: soluble protein of a heart homogenate per wet tissue mass (mg/mg), with its source; weak: it
#: depends on the lysis buffer and on whether the pellet is counted (total protein is ~2-3 times more)
PROTEIN_PER_TISSUE = (0.067, "estimate: 'Normalization of the measurement of cardiac creatine phosphokinase "
                             "activity' (cat and dog LV: ~30 IU/mg homogenate soluble protein and ~200 IU per 100 mg "
                             "wet tissue, i.e. ~67 mg soluble protein per g wet tissue); give protein_per_tissue for "
                             "your own protocol")
SETTINGS = {"tissue_density": ("concentration", "a density, e.g. '1.05 g/mL'"),
            "protein_per_tissue": ("number", "mg protein per g wet tissue, e.g. '67 mg/g'")}
_PER_MASS = re.compile(r"^\s*(.+?)\s*/\s*\(?\s*([^/()]+?)\s+(tissue|protein)\s*\)?\s*$")


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
    #: per row: True where the value is per tissue volume of a `content` (pg/mg tissue or protein data)
    per_volume: np.ndarray | None = None
    #: per row: the value's unit as written in the file
    units: list = dataclasses.field(default_factory=list)
    #: {"tissue_density": {"value": g/mL, "source"}, "protein_per_tissue": {...}} when used
    conversions: dict = dataclasses.field(default_factory=dict)

    def __len__(self):
        return len(self.value)

    def subset(self, mask) -> "Observations":
        idx = np.flatnonzero(mask)
        return Observations(self.time[idx], [self.quantity[i] for i in idx], [self.factor[i] for i in idx],
                            [self.where[i] for i in idx], self.value[idx], self.sd[idx], self.source,
                            [self.lines[i] for i in idx] if self.lines else [], list(self.warnings),
                            None if self.per_volume is None else self.per_volume[idx],
                            [self.units[i] for i in idx] if self.units else [], dict(self.conversions))


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


def _setting(key: str, text: str, where: str) -> float:
    """A conversion setting (tissue_density in pg/mm^3, protein_per_tissue as a mass ratio)."""
    kind, allowed = SETTINGS[key]
    try:
        v = parse(text, kind, where)
    except ScenarioError as err:
        raise DataError(f"{where} = {text!r}: {err}; allowed: {allowed}") from None
    if not (math.isfinite(v) and v > 0) or (key == "protein_per_tissue" and v >= 1):
        raise DataError(f"{where} = {text!r}; allowed: {allowed}, > 0" + (" and below 1 g/g" if kind == "number" else ""))
    return v


def read_csv(path, scenario, *, probes: dict | None = None, tissue_density=None,
             protein_per_tissue=None) -> Observations:
    """Read and check observations for `scenario` (a paracrine Scenario). tissue_density,
    protein_per_tissue: text with units (or numbers: g/mL, and mg/g) overriding the file's settings and
    the defaults for pg/mg tissue and pg/mg protein data."""
    path = Path(path)
    text = read_text(path, what="data", limit=MAX_BYTES, error=DataError)
    settings = {}
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for row in reader:
            lineno, start = start, reader.line_num + 1  # the line the row starts on
            if row and row[0].lstrip().startswith("#"):
                m = re.fullmatch(r"#\s*(tissue_density|protein_per_tissue)\s*[=:]\s*(.+?)\s*", ",".join(row))
                if m:
                    key = m.group(1)
                    if key in settings:
                        raise DataError(f"{path}, line {lineno}: {key} is given twice; allowed: once")
                    settings[key] = (_setting(key, m.group(2), f"{path}, line {lineno}: {key}"), f"{path}, line {lineno}")
                continue
            if not row or not "".join(row).strip():
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
    for key, given, unit in (("tissue_density", tissue_density, "g/mL"), ("protein_per_tissue", protein_per_tissue,
                                                                          "mg/g")):
        if given is not None:
            given = f"{given} {unit}" if isinstance(given, (int, float)) else str(given)
            settings[key] = (_setting(key, given, f"--{key.replace('_', '-')}"), "given")
    return from_rows(rows[0][1], rows[1:], scenario, source=str(path), probes=probes, settings=settings)


def _per_mass(u: str | None, mw, settings: dict, used: dict, where: str):
    """(pg/mm^3 per unit, True) for 'AMOUNT/MASS tissue|protein', else None."""
    if not u:
        return None
    m = _PER_MASS.match(u)
    if not m:
        return None
    num, den, what = m.groups()
    try:
        ratio = parse(f"1 {num}", "amount", where, mw_kda=mw) / parse(f"1 {den}", "amount", where)
    except ScenarioError as err:
        raise DataError(f"{where}: {u!r}: {err}; allowed: an amount per mass of {what}, e.g. 'pg/mg {what}'") from None
    density, src = settings.get("tissue_density", (TISSUE_DENSITY[0] * 1e9, "default: " + TISSUE_DENSITY[1]))
    used["tissue_density"] = {"value": density / 1e9, "unit": "g/mL", "source": src}
    if what == "protein":
        protein, psrc = settings.get("protein_per_tissue", (PROTEIN_PER_TISSUE[0], "default: " + PROTEIN_PER_TISSUE[1]))
        used["protein_per_tissue"] = {"value": protein * 1e3, "unit": "mg/g", "source": psrc}
        return ratio * protein * density
    return ratio * density


def from_rows(header, rows, scenario, *, source="<data>", probes=None, settings=None) -> Observations:
    """Observations from a header and (line number, cells) rows (see read_csv); settings: {name: (value
    in internal units, source)} for tissue_density and protein_per_tissue."""
    settings = dict(settings or {})
    used: dict = {}
    per_volume, units = [], []
    d = scenario.data
    for key, value in d.get("data", {}).items():   # the scenario's [data] table: below the file's and arguments
        settings.setdefault(key, (value, f"{scenario.source}: data.{key}"))
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
            factor = _per_mass(u, mw, settings, used, f"{where_at}, column {name} unit")
            if factor is not None:
                if q not in ("concentration", "amount", "content") or w in probes:
                    raise DataError(f"{where_at}, column {name}: {u!r} (per mass of tissue or protein) with quantity "
                                    f"{q!r} at {w!r}; allowed: quantity concentration, amount or content of a region or "
                                    "'tissue'")
                return v * factor
            if kind in ("concentration", "amount") and u and "/" in u and _dimensionless(u):
                raise DataError(f"{where_at}, column {name}: {u!r} is a mass ratio, which does not say what the mass "
                                f"is of; allowed: '{u} tissue' (per wet tissue mass, converted with the tissue density) "
                                f"or '{u} protein' (per mass of protein), or an amount ({kind == 'amount' and 'pg' or 'pg/mL'})")
            try:
                if kind == "number":
                    return v * (parse(f"1 {u}", "number", f"{where_at}, column {name} unit") if u else 0.01)
                return v * parse(f"1 {u}" if u else "1", kind, f"{where_at}, column {name} unit", mw_kda=mw)
            except ScenarioError as err:
                raise DataError(str(err)) from None

        v = convert("value", vunit)
        per_mass = _per_mass(vunit, mw, settings, {}, where_at) is not None
        if "sd" in cols:
            sunit = unit or cols["sd"][1]
            if (_per_mass(sunit, mw, settings, {}, where_at) is not None) != per_mass:
                raise DataError(f"{where_at}: value in {vunit!r} but sd in {sunit!r}; allowed: both per mass of "
                                "tissue or protein, or neither")
            sd = convert("sd", sunit)
        else:
            cv = number("cv")
            if not cv > 0:
                raise DataError(f"{where_at}, column cv: {cell('cv')}; allowed: > 0")
            sd = cv * v
            if not sd > 0:
                raise DataError(f"{where_at}: cv with a zero value gives no uncertainty; give sd instead")
        t_all.append(t), q_all.append(q), f_all.append(f), w_all.append(w), v_all.append(v), s_all.append(sd)
        lines.append(lineno)
        per_volume.append(per_mass and q in ("amount", "content"))
        units.append(vunit)
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
                        notes, np.array(per_volume, bool), units, used)


def _dimensionless(u: str) -> bool:
    from .units import registry

    try:
        return bool(registry().Quantity(f"1 {u}").dimensionless)
    except Exception:  # not a unit pint reads: the normal refusal follows
        return False
