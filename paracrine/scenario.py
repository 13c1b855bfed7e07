"""Scenario files: TOML with units, validated before anything runs, resolved to internal units.

    scenario = load("examples/default.toml")      # -> Scenario (resolved, JSON-able, internal units)
    built = build(scenario)                        # -> geometry, discretisation, Model, Params, sources

Every error is a `ScenarioError` naming the file, the key (`factors.VEGF.uptake.border`)
and what is allowed; unknown keys come with the nearest valid key. The file format is
documented key by key in the *_KEYS tables here and in paracrine/delivery.py, and in the README.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import warnings
from pathlib import Path

import numpy as np

from .delivery import (CELL_KEYS, INJECTION_KEYS, MEDIUM_KEYS, POINT_ROUTES, ROUTES, cells_section,
                       delivery_section)
from .reader import Reader, read_text
from .units import NAME_PATTERN, NAME_RE, ScenarioError, show, suggest

__all__ = ["POINT_ROUTES", "ROUTES", "Scenario", "ScenarioError", "default", "default_text", "load", "loads",
           "save_times"]

METHODS = ("trbdf2", "rkl2", "cn", "euler")
DEFAULT_RTOL = 1e-3
LV_REGIONS = ("remote", "border", "core")
LV_BOUNDARIES = ("endo", "epi", "base")
LENGTH_UNITS = ("mm", "cm", "m", "um")

# sane bounds, checked before anything is built from the values
MAX_BYTES = 1_000_000        # a scenario file
MAX_FACTORS = 32
MAX_PROBES = 1000
MAX_MAPS = 100               # output.maps
MAX_OUTPUT_TIMES = 1_000_000  # time.end / output.interval
MAX_SNAPSHOTS = 5000         # time.end / output.fields (each snapshot holds every node)
MAX_DELIVERIES = 1000        # [[injection]] and [[medium]] tables together

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
    "file": "a mesh file instead of the generated LV (path relative to the scenario): any volume mesh meshio reads "
            "(.msh, .vtu, .vtk, .xdmf, .med, .inp, ...), or a voxel grid (.vti, or the grid.npz of paracrine mesh)",
    "length_unit": "with file: the unit of the mesh file's coordinates, mm (default), cm, m or um",
    "tags": "with file: the name of the integer cell-data array holding the region tags (default: gmsh physical "
            "groups, or the file's only integer cell array)",
    "regions": "with file: region map {name = tag or [tags]} from the tag array's values, e.g. {remote = 1, border "
               "= 2, core = 3} (default: gmsh physical names); cells whose tag is in no region are left out, with a "
               "warning",
    "labels": "an EMIDEC label image (.npy, .npz, .nii) instead (path relative to the scenario)",
    "spacing": "voxel spacing of the label image (length)",
    "operator": "diffusion operator on tetrahedra: \"p1\" (default) or \"m-matrix\" (negative couplings of "
                "obtuse cells removed: no undershoots from the operator, but a few % error that refinement does not "
                "remove)",
}
TIME_KEYS = {"end": "simulated time",
             "rtol": "relative tolerance of the error-controlled steps (default 1e-3; the achieved error of "
                     "the region means is about this or less)",
             "dt": "a fixed time step instead of error control (e.g. \"60 s\")",
             "method": "trbdf2 (default with rtol), rkl2 (default with dt), cn or euler",
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
    "hill": "Hill-type receptor uptake {Vmax (concentration/time, by region), K (concentration), n (Hill "
            "coefficient >= 1, default 1)}",
    "binding": "ECM binding: true (preset values) or {kon, koff, capacity (by region), kdeg}",
    "threshold": "concentration for exposure metrics, e.g. \"31 pg/mL\"",
}
TOP_KEYS = {"title": "text (one line, at most 200 characters)", "geometry": GEOMETRY_KEYS, "time": TIME_KEYS,
            "output": OUTPUT_KEYS,
            "factors": f"one table per factor (at most {MAX_FACTORS}), named as {NAME_PATTERN} (the names become file and "
                       "dataset names; names differing only in case are refused)",
            "cells": CELL_KEYS,
            "probes": f"named points {{name = [x, y, z]}} (mm; at most {MAX_PROBES}, names as factors, not a region's)",
            "injection": INJECTION_KEYS, "medium": MEDIUM_KEYS,
            "data": {"tissue_density": "wet tissue density for data in pg/mg tissue or protein (default 1.05 g/mL)",
                     "protein_per_tissue": "protein per wet tissue mass for data in pg/mg protein (default 67 mg/g)"}}



def loads(text: str, *, source: str = "<scenario>", base: Path | None = None) -> Scenario:
    """Parse and validate scenario text; `base` resolves relative geometry paths. A UTF-8 byte-order
    mark at the start is skipped."""
    if not isinstance(text, str):
        raise ScenarioError(f"{source}: a scenario is text, not {type(text).__name__}")
    text = text.removeprefix("\ufeff")
    if len(text) > MAX_BYTES:
        raise ScenarioError(f"{source}: {len(text)} characters; allowed: a scenario of at most {MAX_BYTES} bytes")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{source}: not valid TOML: {err}") from None
    except RecursionError:
        raise ScenarioError(f"{source}: not valid TOML here: tables or arrays nested too deeply; allowed: the "
                            "few levels of the scenario format") from None
    try:
        data = _resolve(raw, Reader(source), base or Path.cwd())
    except RecursionError:
        raise ScenarioError(f"{source}: a value nested too deeply; allowed: the few levels of the scenario "
                            "format") from None
    return Scenario(data, source=source, text=text)


def load(path) -> Scenario:
    path = Path(path)
    return loads(read_text(path, what="scenario", limit=MAX_BYTES), source=str(path), base=path.parent)


def default_text() -> str:
    from importlib.resources import files

    return files("paracrine").joinpath("default.toml").read_text()


def default() -> Scenario:
    return loads(default_text(), source="<default scenario>")


def _resolve(raw: dict, rd: Reader, base: Path) -> dict:
    rd.table(raw, "", TOP_KEYS, required=("time", "factors"))
    out: dict = {"title": rd.text(raw.get("title", ""), "title")}
    geo, regions, boundaries = _geometry(rd, raw.get("geometry", {}), base)
    out["geometry"], out["regions"], out["boundaries"] = geo, list(regions), list(boundaries)

    t = rd.table(raw["time"], "time", TIME_KEYS, required=("end",))
    end = rd.quantity(t["end"], "time.end", "time", strict=True)
    if "dt" in t and "rtol" in t:
        raise rd.error("time", " gives both dt and rtol; allowed: dt (fixed steps) or rtol (error-controlled "
                               "steps, the default), not both")
    dt = rtol = None
    if "dt" in t:
        dt = rd.quantity(t["dt"], "time.dt", "time", strict=True)
        if dt > end:
            raise rd.error("time.dt", f" = {show(t.get('dt'))} is longer than time.end; allowed: 0 < dt <= end")
    else:
        rtol = t.get("rtol", DEFAULT_RTOL)
        if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not (0 < rtol < 1):
            raise rd.error("time.rtol", f" = {show(rtol)}; allowed: a number in (0, 1), e.g. 1e-3")
        rtol = float(rtol)
    method = rd.choice(t.get("method", "rkl2" if dt is not None else "trbdf2"), "time.method", METHODS)
    out["time"] = {"end": end, "dt": dt, "rtol": rtol, "method": method,
                   "chunk": rd.quantity(t.get("chunk", "1 d"), "time.chunk", "time", strict=True)}

    o = rd.table(raw.get("output", {}), "output", OUTPUT_KEYS)
    interval = rd.quantity(o.get("interval", "1 h"), "output.interval", "time", strict=True)
    interval = min(interval, end)
    if end / interval > MAX_OUTPUT_TIMES:
        raise rd.error("output.interval", f" = {show(o.get('interval', '1 h'))} gives {end / interval:.3g} output times "
                                          f"over time.end; allowed: at most {MAX_OUTPUT_TIMES} (a longer interval)")
    fields = rd.quantity(o.get("fields", "12 h"), "output.fields", "time", strict=True)
    if end / max(fields, interval) > MAX_SNAPSHOTS:
        raise rd.error("output.fields", f" = {show(o.get('fields', '12 h'))} gives {end / max(fields, interval):.3g} "
                                        f"field snapshots over time.end; allowed: at most {MAX_SNAPSHOTS} (a longer "
                                        "interval)")
    every = max(1, int(round(fields / interval)))
    if abs(every * interval - fields) > 1e-6 * fields and fields < end:
        raise rd.error("output.fields", f" = {show(o.get('fields'))}; allowed: a multiple of output.interval "
                                        f"({interval:g} s)")
    maps = rd.items(o.get("maps", []), "output.maps", most=MAX_MAPS, what="times", example=', e.g. ["1 d", "7 d"]')
    map_t = [rd.quantity(m, f"output.maps[{k}]", "time", strict=True) for k, m in enumerate(maps)]
    for k, m in enumerate(map_t):
        if m > end * (1 + 1e-9):
            raise rd.error(f"output.maps[{k}]", f" = {show(maps[k])} is past time.end; allowed: times in (0, end]")
    out["output"] = {"interval": interval, "fields_every": every, "maps": map_t,
                     "exposure": rd.quantity(o.get("exposure", "24 h"), "output.exposure", "time")}

    factors = raw["factors"]
    if not isinstance(factors, dict) or not factors:
        raise rd.error("factors", " must hold at least one table [factors.NAME]")
    if len(factors) > MAX_FACTORS:
        raise rd.error("factors", f": {len(factors)} factors; allowed: at most {MAX_FACTORS}")
    seen = {}
    for name in factors:
        rd.name(name, f"factors.{name}", "factor name")
        if name.lower() in seen:
            raise rd.error(f"factors.{name}", f": the factor names {seen[name.lower()]!r} and {name!r} differ only in "
                                              "case (their output files would collide); allowed: distinct names")
        seen[name.lower()] = name
    out["factors"] = {name: _factor(rd, name, spec, regions, boundaries) for name, spec in factors.items()}
    names = list(out["factors"])

    cells = raw.get("cells")
    injections = raw.get("injection", [])
    media = raw.get("medium", [])
    for key, val in (("injection", injections), ("medium", media)):
        if not isinstance(val, list) or not all(isinstance(v, dict) for v in val):
            raise rd.error(key, f" must be an array of tables [[{key}]]")
    if len(injections) + len(media) > MAX_DELIVERIES:
        raise rd.error("injection", f": {len(injections)} [[injection]] and {len(media)} [[medium]] tables; allowed: "
                                    f"at most {MAX_DELIVERIES} together (use repeat = {{count, every}} for repeated doses)")
    if injections and cells is None:
        raise rd.error("cells", ": missing; [[injection]] needs a [cells] table (secretion and survival)")
    out["cells"] = None if cells is None else cells_section(rd, cells, names, regions)
    species = geo.get("species")
    out["injections"] = [delivery_section(rd, f"injection[{k}]", d, INJECTION_KEYS, regions, species, geo, end, names)
                         for k, d in enumerate(injections)]
    out["media"] = [delivery_section(rd, f"medium[{k}]", d, MEDIUM_KEYS, regions, species, geo, end, names,
                              mw={n: f["mw_kda"] for n, f in out["factors"].items()})
                    for k, d in enumerate(media)]
    out["probes"] = {}
    probes = raw.get("probes", {})
    if not isinstance(probes, dict):
        raise rd.error("probes", f" = {show(probes)}; allowed: a table {{name = [x, y, z]}} in mm")
    if len(probes) > MAX_PROBES:
        raise rd.error("probes", f": {len(probes)} probes; allowed: at most {MAX_PROBES}")
    for name, xyz in probes.items():
        rd.name(name, f"probes.{name}", "probe name")
        if name in regions or name == "tissue":
            raise rd.error(f"probes.{name}", f": the probe name {name!r} is a region name (data rows could not tell "
                                             f"them apart); allowed: a name other than {list(regions) + ['tissue']}")
        out["probes"][name] = rd.point(xyz, f"probes.{name}")
    if not out["injections"] and not out["media"]:
        raise rd.error("injection", ": the scenario has no source; add [[injection]] (cells) or [[medium]]")
    if "data" in raw:   # conversions of fit data (paracrine.data): only when given
        dd = rd.table(raw["data"], "data", TOP_KEYS["data"])
        out["data"] = {}
        if "tissue_density" in dd:
            out["data"]["tissue_density"] = rd.quantity(dd["tissue_density"], "data.tissue_density", "concentration",
                                                        strict=True)
        if "protein_per_tissue" in dd:
            out["data"]["protein_per_tissue"] = rd.number(dd["protein_per_tissue"], "data.protein_per_tissue",
                                                          strict=True, high=1.0)
    return out


def _geometry(rd: Reader, g, base: Path):
    from paracrine import geometry

    g = rd.table(g, "geometry", GEOMETRY_KEYS)
    operator = rd.choice(g.get("operator", "p1"), "geometry.operator", geometry.OPERATORS)
    kinds = [k for k in ("file", "labels") if k in g]
    if len(kinds) > 1:
        raise rd.error("geometry", ": give at most one of file or labels")
    if kinds:
        kind = kinds[0]
        only = {"file": {"file", "operator", "length_unit", "tags", "regions"},
                "labels": {"labels", "spacing", "border_width", "operator"}}[kind]
        extra = sorted(set(g) - only)
        if extra:
            raise rd.error(f"geometry.{extra[0]}", f": not used with geometry.{kind}; allowed with it: {sorted(only)}")
        if not isinstance(g[kind], str) or not g[kind].strip() or "\0" in g[kind] or len(g[kind]) > 4096:
            raise rd.error(f"geometry.{kind}", f" = {show(g[kind])}; allowed: a file path (text)")
        path = Path(g[kind])
        path = path if path.is_absolute() else (base / path)
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such file"
            raise rd.error(f"geometry.{kind}", f" = {g[kind]!r}: {what} ({path})")
        unit = region_map = tags = None
        if kind == "file":
            unit = rd.choice(g.get("length_unit", "mm"), "geometry.length_unit", LENGTH_UNITS)
            region_map, tags = _region_map(rd, g)
        try:
            if kind == "file":
                with warnings.catch_warnings():   # tags in no region: warned once, when the run builds it
                    warnings.simplefilter("ignore", UserWarning)
                    geom = geometry.read(path, length_unit=unit, dim=3, regions=region_map, tags=tags)
                out = {"kind": "file", "path": str(path.resolve()), "length_unit": unit}
                if region_map is not None:
                    out["regions"] = region_map
                if tags is not None:
                    out["tags"] = tags
            else:
                spacing = None if "spacing" not in g else rd.quantity(g["spacing"], "geometry.spacing", "length", strict=True)
                bw = rd.quantity(g.get("border_width", "1 mm"), "geometry.border_width", "length")
                geom = geometry.read_labels(path, spacing=spacing, border_width=bw)
                out = {"kind": "labels", "path": str(path.resolve()), "spacing": spacing, "border_width": bw}
        except geometry.GeometryError as err:
            raise rd.error(f"geometry.{kind}", f" = {g[kind]!r}: {err}") from None
        boundaries = tuple(getattr(geom, "boundary_names", {}) or {})
        for what, names in (("region", geom.region_names), ("boundary", boundaries)):
            for n in names:
                if not isinstance(n, str) or not NAME_RE.fullmatch(n):
                    raise rd.error(f"geometry.{kind}", f" = {g[kind]!r}: the {what} name {show(n)} is not allowed "
                                                       f"(it names output columns and scenario keys); allowed: names "
                                                       f"matching {NAME_PATTERN}: rename it in the file")
        out["operator"] = operator
        return out, tuple(geom.region_names), boundaries
    for key in ("tags", "regions"):
        if key in g:
            raise rd.error(f"geometry.{key}", f" = {show(g[key])}: only with geometry.file (the region tags of a mesh "
                                              "file); the generated LV names its regions remote, border and core")
    if "length_unit" in g:
        raise rd.error("geometry.length_unit", f" = {show(g['length_unit'])}: only with geometry.file (the unit of a "
                                               "mesh file's coordinates); the generated LV and label images use "
                                               "lengths with units")
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
        if not territory or len(territory) > 17 or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 17 for s in territory):
            raise rd.error("geometry.territory", f" = {show(territory)}; allowed: a non-empty list of AHA segments 1-17")
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
           "transmural": transmural, "border_width": bw,
           "operator": operator}
    for key in ("mesh_size", "grid_spacing"):
        out[key] = None if key not in g else rd.quantity(g[key], f"geometry.{key}", "length", strict=True)
    h = out["mesh_size"] or out["grid_spacing"]
    if h > wall:
        raise rd.error("geometry.mesh_size" if out["mesh_size"] else "geometry.grid_spacing",
                       f" = {h:g} mm is thicker than the wall ({wall:g} mm); allowed: <= the wall thickness")
    if out["grid_spacing"] and territory is not None:
        try:
            geometry.validate.border_band(out["grid_spacing"], bw, spacing_key="geometry.grid_spacing",
                                          width_key="geometry.border_width", default="border_width" not in g)
        except geometry.GeometryError as err:
            raise rd.error("geometry.border_width", str(err).removeprefix("geometry.border_width")) from None
    out["refine"] = None if "refine" not in g else rd.quantity(g["refine"], "geometry.refine", "length", strict=True)
    if out["refine"] is not None and (out["mesh_size"] is None or out["refine"] > out["mesh_size"]):
        raise rd.error("geometry.refine", f" = {show(g['refine'])}; allowed: with mesh_size, and <= mesh_size")
    out["refine_radius"] = (None if "refine_radius" not in g else
                            rd.quantity(g["refine_radius"], "geometry.refine_radius", "length", strict=True))
    regions = ("remote",) if territory is None else LV_REGIONS
    boundaries = LV_BOUNDARIES if out["mesh_size"] else ()
    return out, regions, boundaries


def _region_map(rd: Reader, g: dict):
    """geometry.regions {name = tag or [tags]} and geometry.tags (an array name), checked."""
    tags = g.get("tags")
    if tags is not None and (not isinstance(tags, str) or not tags.strip() or len(tags) > 200):
        raise rd.error("geometry.tags", f" = {show(tags)}; allowed: the name of the mesh file's integer cell-data "
                                        "array (text), e.g. \"region\"")
    if "regions" not in g:
        return None, tags
    r = g["regions"]
    if not isinstance(r, dict) or not r:
        raise rd.error("geometry.regions", f" = {show(r)}; allowed: a table {{name = tag or [tags]}} of integer cell "
                                           "tags, e.g. {remote = 1, border = 2, core = 3}")
    out: dict = {}
    seen: dict = {}
    for name, val in r.items():
        rd.name(name, f"geometry.regions.{name}", "region name")
        vals = val if isinstance(val, list) else [val]
        if not vals or len(vals) > 1000 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                   for v in vals):
            raise rd.error(f"geometry.regions.{name}", f" = {show(val)}; allowed: an integer tag >= 0 of the mesh "
                                                       "file's tag array, or a non-empty list of them, e.g. 2 or [2, 4]")
        for v in vals:
            if v in seen:
                raise rd.error(f"geometry.regions.{name}", f" = {show(val)}: tag {v} is also in region {seen[v]!r}; "
                                                           "allowed: each tag in one region")
            seen[v] = name
        out[name] = val
    return out, tags


def _factor(rd: Reader, name, spec, regions, boundaries) -> dict:
    from paracrine.solver.presets import FACTORS

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
            raise rd.error(f"{p}.robin", f" = {show(r)}; allowed: a table {{boundary: permeability}} with boundaries "
                                         f"{list(boundaries)}")
        for b in r:
            if b not in boundaries:
                raise rd.error(f"{p}.robin.{b}", f": unknown boundary{suggest(b, boundaries)} allowed: {list(boundaries)}")
        out["robin"] = {b: rd.quantity(v, f"{p}.robin.{b}", "velocity") for b, v in r.items()}
    out["saturable"] = None
    if "saturable" in spec:
        s = rd.table(spec["saturable"], f"{p}.saturable", ("Vmax", "Km"), required=("Vmax", "Km"))
        out["saturable"] = {"Vmax": rd.per_region(s["Vmax"], f"{p}.saturable.Vmax", "concentration_rate", regions, mw=mw),
                            "Km": rd.quantity(s["Km"], f"{p}.saturable.Km", "concentration", mw=mw, strict=True)}
    out["hill"] = None
    if "hill" in spec:
        s = rd.table(spec["hill"], f"{p}.hill", ("Vmax", "K", "n"), required=("Vmax", "K"))
        n = s.get("n", 1.0)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not (math.isfinite(n) and n >= 1):
            raise rd.error(f"{p}.hill.n", f" = {show(n)}; allowed: a Hill coefficient, a number >= 1")
        out["hill"] = {"Vmax": rd.per_region(s["Vmax"], f"{p}.hill.Vmax", "concentration_rate", regions, mw=mw),
                       "K": rd.quantity(s["K"], f"{p}.hill.K", "concentration", mw=mw, strict=True), "n": float(n)}
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
        raise rd.error(f"{p}.binding", f" = {show(b)}; allowed: true, false or a table {{kon, koff, capacity, kdeg}}")
    out["threshold"] = (None if "threshold" not in spec else
                        rd.quantity(spec["threshold"], f"{p}.threshold", "concentration", mw=mw, strict=True))
    return out


def save_times(scenario: Scenario) -> np.ndarray:
    """The time-course times: every output.interval up to time.end (end included)."""
    end, step = scenario.data["time"]["end"], scenario.data["output"]["interval"]
    n = int(math.ceil(end / step * (1 - 1e-12)))
    ts = step * np.arange(1, n + 1, dtype=float)
    ts[-1] = end
    return ts
