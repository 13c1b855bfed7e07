"""Scenario files: TOML with units, validated before anything runs, resolved to internal units.

    scenario = load("examples/default.toml")      # -> Scenario (resolved, JSON-able, internal units)
    built = build(scenario)                        # -> geometry, discretisation, Model, Params, sources

Every error is a `ScenarioError` naming the file, the key (`factors.VEGF.uptake.border`)
and what is allowed; unknown keys come with the nearest valid key. The file format is
documented key by key in `SCHEMA` below and in examples/README.md.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import tomllib
from pathlib import Path

import numpy as np

from .units import ScenarioError, parse

ROUTES = ("intramyocardial", "transendocardial", "intracoronary", "intravenous")
POINT_ROUTES = ("intramyocardial", "transendocardial")
METHODS = ("rkl2", "cn", "euler")
LV_REGIONS = ("remote", "border", "core")
LV_BOUNDARIES = ("endo", "epi", "base")

#: Acute retention (fraction of the dose in the heart at ~1 h) by route and species, with its source.
RETENTION = {
    "intramyocardial": {
        "rat": (0.136, "Bonios et al. 2011, J Nucl Cardiol 18:443 (rat, normal heart; acute I/R 0.120, chronic MI 0.099)"),
        "pig": (0.11, "Hou et al. 2005, Circulation 112:I150 (pig)"),
    },
    "transendocardial": {
        "pig": (0.11, "estimate: Hou et al. 2005 intramyocardial value (pig); no catheter-route measurement"),
    },
    "intracoronary": {
        "rat": (0.154, "Bonios et al. 2011, J Nucl Cardiol 18:443 (rat)"),
        "pig": (0.026, "Hou et al. 2005, Circulation 112:I150 (pig)"),
    },
    "intravenous": {
        "rat": (0.008, "Bonios et al. 2011, J Nucl Cardiol 18:443 (rat; 20-55 % in the lungs)"),
    },
}
# where a species has no measurement, the nearest one is used and marked as an estimate
_NEAREST = {"mouse": ("rat", "pig"), "rat": ("rat", "pig"), "reference": ("pig", "rat"), "pig": ("pig", "rat"),
            "human": ("pig", "rat")}


def retention_preset(route: str, species: str | None) -> tuple[float, str]:
    table = RETENTION[route]
    for sp in _NEAREST.get(species or "rat", ("rat", "pig")):
        if sp in table:
            value, source = table[sp]
            if sp != species:
                source = f"estimate: {sp} value for {species or 'this geometry'} ({source})"
            return value, source
    raise AssertionError(route)  # pragma: no cover - every route has a rat or pig value


def _suggest(key: str, allowed) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclasses.dataclass
class Scenario:
    """A validated scenario: `data` in internal units (mm, s, pg, cells), JSON-able; `source` the file."""

    data: dict
    source: str = "<scenario>"
    text: str = ""

    @property
    def regions(self) -> tuple:
        return tuple(self.data["regions"])

    @property
    def factors(self) -> tuple:
        return tuple(self.data["factors"])


class _Reader:
    """Walks the TOML tables, converting values and collecting the key path for messages."""

    def __init__(self, source: str):
        self.source = source

    def where(self, path: str) -> str:
        return f"{self.source}: {path}"

    def error(self, path: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {path}{msg}")

    def table(self, value, path: str, allowed: dict | tuple, *, required=()) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f" = {value!r}; allowed: a table with keys {sorted(allowed)}")
        for key in value:
            if key not in allowed:
                raise self.error(f"{path}.{key}" if path else key,
                                 f": unknown key{_suggest(key, allowed)} allowed: {sorted(allowed)}")
        for key in required:
            if key not in value:
                raise self.error(f"{path}.{key}" if path else key, ": missing (required)")
        return value

    def quantity(self, value, path, kind, *, mw=None, low=0.0, strict=False, high=None):
        v = parse(value, kind, self.where(path), mw_kda=mw)
        if (strict and not v > low) or v < low or (high is not None and v > high):
            rel = ">" if strict else ">="
            rng = f"{rel} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise self.error(path, f" = {value!r}; allowed: {rng} ({kind})")
        return v

    def number(self, value, path, *, low=0.0, high=None, strict=False):
        return self.quantity(value, path, "number", low=low, high=high, strict=strict)

    def choice(self, value, path, allowed):
        if value not in allowed:
            raise self.error(path, f" = {value!r}{_suggest(str(value), allowed)} allowed: {list(allowed)}")
        return value

    def integer(self, value, path, *, low=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(path, f" = {value!r}; allowed: an integer >= {low}")
        return value

    def per_region(self, value, path, kind, regions, *, default=0.0, mw=None, strict=False):
        """A scalar for all regions or a table {region: value}; regions not named get `default`."""
        if isinstance(value, dict):
            for r in value:
                if r not in regions:
                    raise self.error(f"{path}.{r}", f": unknown region{_suggest(r, regions)} allowed: {list(regions)}")
            out = {r: default for r in regions}
            out.update({r: self.quantity(v, f"{path}.{r}", kind, mw=mw, strict=strict) for r, v in value.items()})
            return out
        v = self.quantity(value, path, kind, mw=mw, strict=strict)
        return {r: v for r in regions}


# ---------------------------------------------------------------------------------------------------------
# the schema, section by section

GEOMETRY_KEYS = {
    "species": "mouse, rat, pig, human or reference: the truncated-ellipsoid LV scaled to that species",
    "radii": "explicit LV radii {a_endo, c_endo, a_epi, c_epi, base} (lengths) instead of species",
    "territory": "infarct territory: LAD, LAD+, RCA, LCx, a list of AHA segments, or \"none\"",
    "transmural": "infarct extent from the endocardium, fraction of the wall (0, 1]",
    "border_width": "width of the border-zone band around the core (length; default a third of the wall)",
    "mesh_size": "tetrahedral edge length (length)",
    "grid_spacing": "voxel spacing instead of a mesh (length)",
    "refine": "mesh size at point injection sites (length; default none)",
    "refine_radius": "radius of the refined ball around each site (length; default 4 x refine)",
    "file": "a mesh file (.msh, .vtu, .xdmf) instead of the generated LV (path relative to the scenario)",
    "labels": "an EMIDEC label image (.npy, .npz, .nii) instead (path relative to the scenario)",
    "spacing": "voxel spacing of the label image (length)",
}
TIME_KEYS = {"end": "simulated time", "dt": "time step (default 60 s)", "method": "rkl2 (default), cn or euler",
             "chunk": "simulated time per compiled chunk, the checkpoint granularity (default 1 d)"}
OUTPUT_KEYS = {"interval": "time-course interval (default 1 h)", "fields": "field snapshot interval (default 12 h)",
               "maps": "times of the short-axis maps", "exposure": "time above threshold that counts as exposed (default 24 h)"}
FACTOR_KEYS = {
    "preset": "VEGF165, HGF, IGF-1, SDF-1a, FGF2 or TSG-6: literature values for the keys not given",
    "mw": "molecular weight in kDa (number), for molar units",
    "D": "diffusivity, a value or {region: value}",
    "half_life": "loss half-life (time); or decay",
    "decay": "first-order loss rate (1/time); or half_life",
    "uptake": "uptake rate by region (1/time), a value or {region: value}",
    "clearance": "capillary clearance rate by region (1/time)",
    "robin": "flux through boundaries {endo|epi|base: permeability (length/time)}",
    "saturable": "Michaelis-Menten uptake {Vmax (concentration/time, by region), Km (concentration)}",
    "binding": "ECM binding: true (preset values) or {kon, koff, capacity (by region), kdeg}",
    "threshold": "concentration for exposure metrics, e.g. \"31 pg/mL\"",
}
CELL_KEYS = {"name": "cell type (text)", "secretion": "{factor: secretion per cell}",
             "fast_fraction": "fraction of retained cells lost in the fast phase (0-1, default 0.45)",
             "fast_half_life": "half-life of the fast phase (default 15 min)",
             "slow_half_life": "half-life of the slow phase (default 3.6 d)",
             "hypoxia": "secretion multiplier by region {region: number} (default 1)"}
DELIVERY_KEYS = {"time": "injection time (default 0)", "route": f"one of {list(ROUTES)}",
                 "sites": "number of sites spread over `region`, or a list of [x, y, z] (mm)",
                 "region": "region the sites are spread over (default border)", "seed": "site sampling seed",
                 "retention": "acute retention fraction (default from route and species)",
                 "territory": "intracoronary: the perfused territory (default the infarct's)",
                 "repeat": "{count, every}: repeated dosing"}
INJECTION_KEYS = {**DELIVERY_KEYS, "dose": "number of cells"}
MEDIUM_KEYS = {**DELIVERY_KEYS, "volume": "volume injected (or infused over duration)",
               "concentration": "{factor: concentration}", "amount": "{factor: amount} instead of volume x concentration",
               "duration": "infusion time (default 0: a bolus)", "rate": "infusion rate (volume/time) instead of volume"}
TOP_KEYS = {"title": "text", "geometry": GEOMETRY_KEYS, "time": TIME_KEYS, "output": OUTPUT_KEYS,
            "factors": "one table per factor", "cells": CELL_KEYS, "probes": "named points {name = [x, y, z]} (mm)", "injection": INJECTION_KEYS, "medium": MEDIUM_KEYS}
SCHEMA = TOP_KEYS

HOUR, DAY = 3600.0, 86400.0


def loads(text: str, *, source: str = "<scenario>", base: Path | None = None) -> Scenario:
    """Parse and validate scenario text; `base` resolves relative geometry paths."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{source}: not valid TOML: {err}") from None
    return Scenario(_resolve(raw, _Reader(source), base or Path.cwd()), source=source, text=text)


def load(path) -> Scenario:
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(f"{path}: no such scenario file")
    return loads(path.read_text(), source=str(path), base=path.parent)


def default_text() -> str:
    from importlib.resources import files

    return files("paracrine").joinpath("default.toml").read_text()


def default() -> Scenario:
    return loads(default_text(), source="<default scenario>")


def _resolve(raw: dict, rd: _Reader, base: Path) -> dict:
    rd.table(raw, "", TOP_KEYS, required=("time", "factors"))
    out: dict = {"title": str(raw.get("title", ""))}
    geo, regions, boundaries = _geometry(rd, raw.get("geometry", {}), base)
    out["geometry"], out["regions"], out["boundaries"] = geo, list(regions), list(boundaries)

    t = rd.table(raw["time"], "time", TIME_KEYS, required=("end",))
    end = rd.quantity(t["end"], "time.end", "time", strict=True)
    dt = rd.quantity(t.get("dt", "60 s"), "time.dt", "time", strict=True)
    if dt > end:
        raise rd.error("time.dt", f" = {t.get('dt')!r} is longer than time.end; allowed: 0 < dt <= end")
    out["time"] = {"end": end, "dt": dt, "method": rd.choice(t.get("method", "rkl2"), "time.method", METHODS),
                   "chunk": rd.quantity(t.get("chunk", "1 d"), "time.chunk", "time", strict=True)}

    o = rd.table(raw.get("output", {}), "output", OUTPUT_KEYS)
    interval = rd.quantity(o.get("interval", "1 h"), "output.interval", "time", strict=True)
    interval = min(interval, end)
    fields = rd.quantity(o.get("fields", "12 h"), "output.fields", "time", strict=True)
    every = max(1, int(round(fields / interval)))
    if abs(every * interval - fields) > 1e-6 * fields and fields < end:
        raise rd.error("output.fields", f" = {o.get('fields')!r}; allowed: a multiple of output.interval "
                                        f"({interval:g} s)")
    maps = o.get("maps", [])
    if not isinstance(maps, list):
        raise rd.error("output.maps", f" = {maps!r}; allowed: a list of times")
    map_t = [rd.quantity(m, f"output.maps[{k}]", "time", strict=True) for k, m in enumerate(maps)]
    for k, m in enumerate(map_t):
        if m > end * (1 + 1e-9):
            raise rd.error(f"output.maps[{k}]", f" = {maps[k]!r} is past time.end; allowed: times in (0, end]")
    out["output"] = {"interval": interval, "fields_every": every, "maps": map_t,
                     "exposure": rd.quantity(o.get("exposure", "24 h"), "output.exposure", "time")}

    factors = raw["factors"]
    if not isinstance(factors, dict) or not factors:
        raise rd.error("factors", " must hold at least one table [factors.NAME]")
    out["factors"] = {name: _factor(rd, name, spec, regions, boundaries) for name, spec in factors.items()}
    names = list(out["factors"])

    cells = raw.get("cells")
    injections = raw.get("injection", [])
    media = raw.get("medium", [])
    for key, val in (("injection", injections), ("medium", media)):
        if not isinstance(val, list) or not all(isinstance(v, dict) for v in val):
            raise rd.error(key, f" must be an array of tables [[{key}]]")
    if injections and cells is None:
        raise rd.error("cells", ": missing; [[injection]] needs a [cells] table (secretion and survival)")
    out["cells"] = None if cells is None else _cells(rd, cells, names, regions)
    species = geo.get("species")
    out["injections"] = [_delivery(rd, f"injection[{k}]", d, INJECTION_KEYS, regions, species, geo, end, names)
                         for k, d in enumerate(injections)]
    out["media"] = [_delivery(rd, f"medium[{k}]", d, MEDIUM_KEYS, regions, species, geo, end, names,
                              mw={n: f["mw_kda"] for n, f in out["factors"].items()})
                    for k, d in enumerate(media)]
    out["probes"] = {}
    probes = raw.get("probes", {})
    if not isinstance(probes, dict):
        raise rd.error("probes", f" = {probes!r}; allowed: a table {{name = [x, y, z]}} in mm")
    for name, xyz in probes.items():
        if not (isinstance(xyz, list) and len(xyz) == 3):
            raise rd.error(f"probes.{name}", f" = {xyz!r}; allowed: [x, y, z] in mm (numbers or lengths)")
        out["probes"][name] = [v if isinstance(v, (int, float)) and not isinstance(v, bool) else
                               rd.quantity(v, f"probes.{name}[{i}]", "length", low=-math.inf) for i, v in enumerate(xyz)]
    if not out["injections"] and not out["media"]:
        raise rd.error("injection", ": the scenario has no source; add [[injection]] (cells) or [[medium]]")
    return out


def _geometry(rd: _Reader, g, base: Path):
    g = rd.table(g, "geometry", GEOMETRY_KEYS)
    kinds = [k for k in ("file", "labels") if k in g]
    if len(kinds) > 1:
        raise rd.error("geometry", ": give at most one of file or labels")
    if kinds:
        kind = kinds[0]
        only = {"file": {"file"}, "labels": {"labels", "spacing", "border_width"}}[kind]
        extra = sorted(set(g) - only)
        if extra:
            raise rd.error(f"geometry.{extra[0]}", f": not used with geometry.{kind}; allowed with it: {sorted(only)}")
        path = Path(g[kind])
        path = path if path.is_absolute() else (base / path)
        if not path.is_file():
            raise rd.error(f"geometry.{kind}", f" = {g[kind]!r}: no such file ({path})")
        import geometry

        try:
            if kind == "file":
                geom = geometry.read(path)
                out = {"kind": "file", "path": str(path.resolve())}
            else:
                spacing = None if "spacing" not in g else rd.quantity(g["spacing"], "geometry.spacing", "length", strict=True)
                bw = rd.quantity(g.get("border_width", "1 mm"), "geometry.border_width", "length")
                geom = geometry.read_labels(path, spacing=spacing, border_width=bw)
                out = {"kind": "labels", "path": str(path.resolve()), "spacing": spacing, "border_width": bw}
        except geometry.GeometryError as err:
            raise rd.error(f"geometry.{kind}", f" = {g[kind]!r}: {err}") from None
        boundaries = tuple(getattr(geom, "boundary_names", {}) or {})
        return out, tuple(geom.region_names), boundaries
    import geometry

    if "radii" in g and "species" in g:
        raise rd.error("geometry.radii", ": give species or radii, not both")
    species = None
    if "radii" in g:
        r = rd.table(g["radii"], "geometry.radii", ("a_endo", "c_endo", "a_epi", "c_epi", "base"),
                     required=("a_endo", "c_endo", "a_epi", "c_epi", "base"))
        radii = {k: rd.quantity(v, f"geometry.radii.{k}", "length", low=-math.inf) for k, v in r.items()}
        try:
            shape = geometry.LVShape(**radii)
        except geometry.GeometryError as err:
            raise rd.error("geometry.radii", f": {err}") from None
    else:
        species = rd.choice(g.get("species", "rat"), "geometry.species", tuple(geometry.SPECIES))
        shape = geometry.lv_shape(species)
    territory = g.get("territory", "LAD")
    if territory == "none":
        territory = None
    elif isinstance(territory, list):
        if not territory or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 17 for s in territory):
            raise rd.error("geometry.territory", f" = {territory!r}; allowed: a non-empty list of AHA segments 1-17")
    else:
        rd.choice(territory, "geometry.territory", tuple(geometry.TERRITORIES) + ("none",))
    transmural = rd.number(g.get("transmural", 1.0), "geometry.transmural", low=0.0, high=1.0, strict=True)
    wall = shape.a_epi - shape.a_endo
    bw = wall / 3 if "border_width" not in g else rd.quantity(g["border_width"], "geometry.border_width", "length")
    if ("mesh_size" in g) == ("grid_spacing" in g):
        if "mesh_size" in g:
            raise rd.error("geometry.grid_spacing", ": give mesh_size or grid_spacing, not both")
        g = dict(g, mesh_size=f"{wall / 4:g} mm")
    out = {"kind": "lv", "species": species, "shape": dataclasses.asdict(shape), "territory": territory,
           "transmural": transmural, "border_width": bw}
    for key in ("mesh_size", "grid_spacing"):
        out[key] = None if key not in g else rd.quantity(g[key], f"geometry.{key}", "length", strict=True)
    h = out["mesh_size"] or out["grid_spacing"]
    if h > wall:
        raise rd.error("geometry.mesh_size" if out["mesh_size"] else "geometry.grid_spacing",
                       f" = {h:g} mm is thicker than the wall ({wall:g} mm); allowed: <= the wall thickness")
    out["refine"] = None if "refine" not in g else rd.quantity(g["refine"], "geometry.refine", "length", strict=True)
    if out["refine"] is not None and (out["mesh_size"] is None or out["refine"] > out["mesh_size"]):
        raise rd.error("geometry.refine", f" = {g['refine']!r}; allowed: with mesh_size, and <= mesh_size")
    out["refine_radius"] = (None if "refine_radius" not in g else
                            rd.quantity(g["refine_radius"], "geometry.refine_radius", "length", strict=True))
    regions = ("remote",) if territory is None else LV_REGIONS
    boundaries = LV_BOUNDARIES if out["mesh_size"] else ()
    return out, regions, boundaries


def _factor(rd: _Reader, name, spec, regions, boundaries) -> dict:
    from solver.presets import FACTORS

    p = f"factors.{name}"
    spec = rd.table(spec, p, FACTOR_KEYS)
    preset = None
    if "preset" in spec:
        preset = FACTORS[rd.choice(spec["preset"], f"{p}.preset", tuple(FACTORS))]
    mw = rd.number(spec["mw"], f"{p}.mw", strict=True) if "mw" in spec else (preset.mw_kda if preset else None)
    out = {"preset": None if preset is None else preset.name, "mw_kda": mw}
    if "D" in spec:
        out["D"] = rd.per_region(spec["D"], f"{p}.D", "diffusivity", regions)
    elif preset is not None:
        out["D"] = {r: preset.D for r in regions}
    else:
        raise rd.error(f"{p}.D", ": missing; give D or a preset")
    if "half_life" in spec and "decay" in spec:
        raise rd.error(f"{p}.decay", ": give half_life or decay, not both")
    if "half_life" in spec:
        out["decay"] = math.log(2) / rd.quantity(spec["half_life"], f"{p}.half_life", "time", strict=True)
    elif "decay" in spec:
        out["decay"] = rd.quantity(spec["decay"], f"{p}.decay", "rate")
    elif preset is not None and preset.decay is not None:
        out["decay"] = preset.decay
    else:
        raise rd.error(f"{p}.half_life", ": missing; " + (f"the {preset.name} preset has no half-life (no data); "
                                                         if preset else "") + "give half_life or decay")
    out["uptake"] = rd.per_region(spec.get("uptake", 0.0), f"{p}.uptake", "rate", regions)
    out["clearance"] = rd.per_region(spec.get("clearance", 0.0), f"{p}.clearance", "rate", regions)
    out["robin"] = None
    if "robin" in spec:
        r = spec["robin"]
        if not isinstance(r, dict):
            raise rd.error(f"{p}.robin", f" = {r!r}; allowed: a table {{boundary: permeability}} with boundaries "
                                         f"{list(boundaries)}")
        for b in r:
            if b not in boundaries:
                raise rd.error(f"{p}.robin.{b}", f": unknown boundary{_suggest(b, boundaries)} allowed: {list(boundaries)}")
        out["robin"] = {b: rd.quantity(v, f"{p}.robin.{b}", "velocity") for b, v in r.items()}
    out["saturable"] = None
    if "saturable" in spec:
        s = rd.table(spec["saturable"], f"{p}.saturable", ("Vmax", "Km"), required=("Vmax", "Km"))
        out["saturable"] = {"Vmax": rd.per_region(s["Vmax"], f"{p}.saturable.Vmax", "concentration_rate", regions, mw=mw),
                            "Km": rd.quantity(s["Km"], f"{p}.saturable.Km", "concentration", mw=mw, strict=True)}
    out["binding"] = None
    b = spec.get("binding", False)
    if b is True:
        if preset is None or preset.kon is None:
            raise rd.error(f"{p}.binding", " = true, but " + (f"the {preset.name} preset has no binding data"
                                                               if preset else "there is no preset")
                           + "; give {kon, koff, capacity}")
        out["binding"] = {"kon": preset.kon, "koff": preset.koff, "capacity": {r: preset.capacity for r in regions},
                          "kdeg": 0.0}
    elif isinstance(b, dict):
        b = rd.table(b, f"{p}.binding", ("kon", "koff", "capacity", "kdeg"), required=("kon", "koff", "capacity"))
        out["binding"] = {"kon": rd.quantity(b["kon"], f"{p}.binding.kon", "kon", mw=mw),
                          "koff": rd.quantity(b["koff"], f"{p}.binding.koff", "rate"),
                          "capacity": rd.per_region(b["capacity"], f"{p}.binding.capacity", "concentration", regions, mw=mw),
                          "kdeg": rd.quantity(b.get("kdeg", 0.0), f"{p}.binding.kdeg", "rate")}
    elif b is not False:
        raise rd.error(f"{p}.binding", f" = {b!r}; allowed: true, false or a table {{kon, koff, capacity, kdeg}}")
    out["threshold"] = (None if "threshold" not in spec else
                        rd.quantity(spec["threshold"], f"{p}.threshold", "concentration", mw=mw, strict=True))
    return out


def _cells(rd: _Reader, c, factors, regions) -> dict:
    c = rd.table(c, "cells", CELL_KEYS, required=("secretion",))
    sec = c["secretion"]
    if not isinstance(sec, dict) or not sec:
        raise rd.error("cells.secretion", f" = {sec!r}; allowed: a table {{factor: secretion per cell}} for "
                                          f"the factors {factors}")
    for f in sec:
        if f not in factors:
            raise rd.error(f"cells.secretion.{f}", f": unknown factor{_suggest(f, factors)} allowed: {factors}")
    hyp = c.get("hypoxia", {})
    if not isinstance(hyp, dict):
        raise rd.error("cells.hypoxia", f" = {hyp!r}; allowed: a table {{region: multiplier}}")
    for r in hyp:
        if r not in regions:
            raise rd.error(f"cells.hypoxia.{r}", f": unknown region{_suggest(r, regions)} allowed: {list(regions)}")
    return {"name": str(c.get("name", "cells")),
            "secretion": {f: 0.0 for f in factors} | {f: rd.quantity(v, f"cells.secretion.{f}", "secretion")
                                                       for f, v in sec.items()},
            "fast_fraction": rd.number(c.get("fast_fraction", 0.45), "cells.fast_fraction", high=1.0),
            "fast_half_life": rd.quantity(c.get("fast_half_life", "15 min"), "cells.fast_half_life", "time", strict=True),
            "slow_half_life": rd.quantity(c.get("slow_half_life", "3.6 d"), "cells.slow_half_life", "time", strict=True),
            "hypoxia": {r: 1.0 for r in regions} | {r: rd.number(v, f"cells.hypoxia.{r}") for r, v in hyp.items()}}


def _delivery(rd: _Reader, p, d, keys, regions, species, geo, end, factors, mw=None) -> dict:
    d = rd.table(d, p, keys)
    route = rd.choice(d.get("route", "intramyocardial"), f"{p}.route", ROUTES)
    t0 = rd.quantity(d.get("time", 0.0) if d.get("time", 0.0) != 0 else "0 s", f"{p}.time", "time")
    times = [t0]
    if "repeat" in d:
        r = rd.table(d["repeat"], f"{p}.repeat", ("count", "every"), required=("count", "every"))
        count = rd.integer(r["count"], f"{p}.repeat.count")
        every = rd.quantity(r["every"], f"{p}.repeat.every", "time", strict=True)
        times = [t0 + k * every for k in range(count)]
    for k, t in enumerate(times):
        if t >= end:
            what = f"{p}.time" if k == 0 else f"{p}.repeat"
            raise rd.error(what, f": dose {k + 1} at {t / DAY:g} d is not before time.end ({end / DAY:g} d); "
                                 "allowed: times in [0, end)")
    out = {"route": route, "times": times}
    if route in POINT_ROUTES:
        sites = d.get("sites", 3)
        if isinstance(sites, int) and not isinstance(sites, bool):
            out["sites"] = {"n": rd.integer(sites, f"{p}.sites"), "seed": rd.integer(d.get("seed", 0), f"{p}.seed", low=0),
                            "region": rd.choice(d.get("region", "border" if "border" in regions else regions[0]),
                                                f"{p}.region", regions)}
        elif isinstance(sites, list) and sites:
            pts = []
            for k, s in enumerate(sites):
                if not (isinstance(s, list) and len(s) == 3):
                    raise rd.error(f"{p}.sites[{k}]", f" = {s!r}; allowed: [x, y, z] in mm (numbers or lengths)")
                pts.append([v if isinstance(v, (int, float)) and not isinstance(v, bool) else
                            rd.quantity(v, f"{p}.sites[{k}][{i}]", "length", low=-math.inf) for i, v in enumerate(s)])
            out["sites"] = {"points": pts}
            for key in ("region", "seed"):
                if key in d:
                    raise rd.error(f"{p}.{key}", ": only with sites = a number of sites")
        else:
            raise rd.error(f"{p}.sites", f" = {sites!r}; allowed: a number of sites or a list of [x, y, z] (mm)")
        if "territory" in d:
            raise rd.error(f"{p}.territory", f": only for the intracoronary route, not {route}")
    else:
        for key in ("sites", "region", "seed"):
            if key in d:
                raise rd.error(f"{p}.{key}", f": not used by the {route} route (it spreads over the perfused tissue)")
        terr = d.get("territory", geo.get("territory") if route == "intracoronary" else None)
        if terr is not None and geo["kind"] != "lv":
            raise rd.error(f"{p}.territory", ": needs the generated LV geometry (AHA segments)")
        if isinstance(terr, str) and terr != "all":
            import geometry

            rd.choice(terr, f"{p}.territory", tuple(geometry.TERRITORIES) + ("all",))
        out["territory"] = None if terr == "all" else terr
    if "retention" in d:
        out["retention"] = rd.number(d["retention"], f"{p}.retention", high=1.0)
        out["retention_source"] = "scenario"
    else:
        out["retention"], out["retention_source"] = retention_preset(route, species)
    if keys is INJECTION_KEYS:
        if "dose" not in d:
            raise rd.error(f"{p}.dose", ": missing (required), e.g. \"1e6 cells\"")
        out["dose"] = rd.quantity(d["dose"], f"{p}.dose", "cells")
        return out
    # conditioned medium
    duration = rd.quantity(d.get("duration", "0 s") if d.get("duration", 0) != 0 else "0 s", f"{p}.duration", "time")
    for t in times:
        if t + duration > end * (1 + 1e-9):
            raise rd.error(f"{p}.duration", f": the infusion from {t / HOUR:g} h runs past time.end")
    if "amount" in d:
        for key in ("volume", "concentration", "rate"):
            if key in d:
                raise rd.error(f"{p}.{key}", ": give amount, or volume (or rate) with concentration, not both")
        amount = _factor_table(rd, d["amount"], f"{p}.amount", "amount", factors, mw)
    else:
        if "concentration" not in d or ("volume" in d) == ("rate" in d):
            raise rd.error(f"{p}.volume", ": give amount, or volume (or rate and duration) with concentration")
        if "rate" in d:
            if duration <= 0:
                raise rd.error(f"{p}.duration", ": an infusion rate needs a duration > 0")
            volume = rd.quantity(d["rate"], f"{p}.rate", "volume_rate") * duration
        else:
            volume = rd.quantity(d["volume"], f"{p}.volume", "volume")
        conc = _factor_table(rd, d["concentration"], f"{p}.concentration", "concentration", factors, mw)
        amount = {f: volume * c for f, c in conc.items()}
        out["volume"] = volume
    out["amount"], out["duration"] = amount, duration
    return out


def _factor_table(rd, value, path, kind, factors, mw) -> dict:
    if not isinstance(value, dict) or not value:
        raise rd.error(path, f" = {value!r}; allowed: a table {{factor: {kind}}} for the factors {factors}")
    out = {f: 0.0 for f in factors}
    for f, v in value.items():
        if f not in factors:
            raise rd.error(f"{path}.{f}", f": unknown factor{_suggest(f, factors)} allowed: {factors}")
        out[f] = rd.quantity(v, f"{path}.{f}", kind, mw=mw.get(f))
    return out


def with_values(scenario: Scenario, **changes) -> Scenario:
    """A copy with resolved values replaced by path, e.g. with_values(s, **{"time.end": 3600.0})."""
    data = copy.deepcopy(scenario.data)
    for path, value in changes.items():
        node = data
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[int(k)] if isinstance(node, list) else node[k]
        node[keys[-1]] = value
    return Scenario(data, source=scenario.source, text=scenario.text)


def save_times(scenario: Scenario) -> np.ndarray:
    """The time-course times: every output.interval up to time.end (end included)."""
    end, step = scenario.data["time"]["end"], scenario.data["output"]["interval"]
    n = int(math.ceil(end / step * (1 - 1e-12)))
    ts = step * np.arange(1, n + 1, dtype=float)
    ts[-1] = end
    return ts
