"""The outputs of a run folder: fields.h5 + fields.xdmf, regions.csv, cells.csv, metrics.json, figures/.

Units in the files: time in hours, concentrations in pg/mL (1 pg/mm^3 = 1000 pg/mL),
amounts in pg, volumes in mm^3. One naming style for CSV columns, metrics keys and field names:
snake_case ending in the unit (`time_h`, `mean_pg_per_mL`, `auc_pg_per_mL_h`, `free_pg`,
`volume_mm3`, `exposed_volume_fraction`, `retained_cells`); `UNIT_SUFFIXES` reads a unit back
from a name. run.json holds the resolved scenario in internal units (mm, s, pg) with a `units` map
(`run_json_units`) giving the unit of every number in it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

PG_PER_ML = 1e3     # internal pg/mm^3 -> pg/mL
HOUR = 3600.0

#: the unit a name ends in -> the unit (longest suffix first); "1": dimensionless
UNIT_SUFFIXES = (("_pg_per_mL_h", "pg/mL*h"), ("_pg_per_mL", "pg/mL"), ("_pg_per_mm3", "pg/mm^3"), ("_mm3", "mm^3"),
                 ("_pg", "pg"), ("_mm", "mm"), ("_h", "h"), ("_s", "s"), ("_fraction", "1"), ("_cells", "cells"))


def unit_of(name: str) -> str | None:
    """The unit a column, key or field name ends in (`UNIT_SUFFIXES`), or None."""
    for suffix, unit in UNIT_SUFFIXES:
        if name.endswith(suffix):
            return unit
    return None


#: metrics.json keys and what they are (the unit is the end of each name)
METRIC_UNITS = {
    "volume_mm3": "region volume, mm^3",
    "auc_pg_per_mL_h": "time integral of the region mean, pg/mL*h",
    "auc_bound_pg_per_mL_h": "time integral of the region mean of the bound pool (binding only), pg/mL*h",
    "peak_mean_pg_per_mL": "largest region mean, pg/mL", "peak_mean_time_h": "its time, h",
    "peak_max_pg_per_mL": "largest nodal concentration in the region, pg/mL", "peak_max_time_h": "its time, h",
    "mean_at_end_pg_per_mL": "region mean at the last output time, pg/mL",
    "mean_above_threshold_h": "time the region mean is above the factor's threshold, h",
    "exposed_volume_fraction": "share (0-1) of the region's volume above the threshold for at least exposure_h",
    "threshold_pg_per_mL": "the factor's threshold, pg/mL", "exposure_h": "output.exposure, h",
    "budget_pg": "mass budget, pg: secreted = decayed + taken_up + cleared + boundary + degraded_bound + left_free "
                 "+ left_bound",
    "budget_closure_fraction": "|secreted - removed - left| / secreted (dimensionless)",
    "limited_pg": "mass added by the positivity limiter, pg",
    "time_step_s": "the longest time step, s (the resolution of the metrics)",
    "retained_at_start_cells": "retained living cells at time 0", "retained_at_end_cells": "at the end",
}

#: metrics.json keys written before units were part of every name -> the name now
OLD_METRIC_KEYS = {"auc": "auc_pg_per_mL_h", "auc_bound": "auc_bound_pg_per_mL_h", "peak_mean": "peak_mean_pg_per_mL",
                   "peak_max": "peak_max_pg_per_mL", "mean_at_end": "mean_at_end_pg_per_mL",
                   "hours_mean_above_threshold": "mean_above_threshold_h",
                   "volume_share_above_threshold_for_exposure": "exposed_volume_fraction",
                   "retained_at_start": "retained_at_start_cells", "retained_at_end": "retained_at_end_cells"}

#: the unit of every number in run.json, by dotted path; "*" stands for one key or list index. Internal
#: units: mm, s, pg (concentrations pg/mm^3 = 1000 pg/mL); "1" dimensionless; "count" a number of things.
RUN_UNITS = {
    "scenario.geometry.shape.*": "mm", "scenario.geometry.border_width": "mm", "scenario.geometry.mesh_size": "mm",
    "scenario.geometry.grid_spacing": "mm", "scenario.geometry.refine": "mm", "scenario.geometry.refine_radius": "mm",
    "scenario.geometry.spacing": "mm", "scenario.geometry.spacing.*": "mm",
    "scenario.geometry.transmural": "1 (fraction of the wall)", "scenario.geometry.territory.*": "AHA segment",
    "scenario.time.end": "s", "scenario.time.dt": "s", "scenario.time.rtol": "1", "scenario.time.chunk": "s",
    "scenario.output.interval": "s", "scenario.output.fields_every": "count (output intervals)",
    "scenario.output.maps.*": "s", "scenario.output.exposure": "s",
    "scenario.factors.*.mw_kda": "kDa", "scenario.factors.*.D.*": "mm^2/s", "scenario.factors.*.decay": "1/s",
    "scenario.factors.*.uptake.*": "1/s", "scenario.factors.*.clearance.*": "1/s",
    "scenario.factors.*.robin.*": "mm/s", "scenario.factors.*.saturable.Vmax.*": "pg/mm^3/s",
    "scenario.factors.*.saturable.Km": "pg/mm^3", "scenario.factors.*.hill.Vmax.*": "pg/mm^3/s",
    "scenario.factors.*.hill.K": "pg/mm^3", "scenario.factors.*.hill.n": "1",
    "scenario.factors.*.binding.kon": "mm^3/pg/s", "scenario.factors.*.binding.koff": "1/s",
    "scenario.factors.*.binding.capacity.*": "pg/mm^3", "scenario.factors.*.binding.kdeg": "1/s",
    "scenario.factors.*.threshold": "pg/mm^3",
    "scenario.cells.secretion.*": "pg/cell/s", "scenario.cells.fast_fraction": "1",
    "scenario.cells.fast_half_life": "s", "scenario.cells.slow_half_life": "s", "scenario.cells.hypoxia.*": "1",
    "scenario.cells.immune_onset": "s", "scenario.cells.immune_half_life": "s",
    "scenario.cells.repeat_immune_onset": "s", "scenario.cells.repeat_immune_half_life": "s",
    "scenario.cells.retention_by_time.time.*": "s (after the infarction)",
    "scenario.cells.retention_by_time.factor.*": "1", "scenario.cells.retention_by_time.start_after_mi": "s",
    "scenario.injections.*.times.*": "s", "scenario.injections.*.sites.n": "count",
    "scenario.injections.*.sites.seed": "1 (seed)", "scenario.injections.*.sites.points.*.*": "mm",
    "scenario.injections.*.territory.*": "AHA segment", "scenario.injections.*.retention": "1",
    "scenario.injections.*.dose": "cells",
    "scenario.media.*.times.*": "s", "scenario.media.*.sites.n": "count", "scenario.media.*.sites.seed": "1 (seed)",
    "scenario.media.*.sites.points.*.*": "mm", "scenario.media.*.territory.*": "AHA segment",
    "scenario.media.*.retention": "1", "scenario.media.*.volume": "mm^3", "scenario.media.*.amount.*": "pg",
    "scenario.media.*.duration": "s", "scenario.probes.*.*": "mm",
    "device.count": "count", "steps": "count", "stages": "count (right-hand side evaluations)",
    "steps_rejected": "count", "rtol": "1", "error_estimate.largest_scaled_local_error": "1 (of rtol)",
    "error_estimate.largest_relative_local_error": "1", "longest_step_s": "s", "chunks": "count",
    "geometry.nodes": "count", "geometry.cells": "count", "geometry.shape.*": "count (voxels)",
    "geometry.tissue_voxels": "count", "geometry.region_volumes_mm3.*": "mm^3", "geometry.worst_aspect_ratio": "1",
    "geometry.obtuse_share": "1", "geometry.negative_couplings.count": "count",
    "geometry.negative_couplings.edges": "count", "geometry.negative_couplings.share": "1",
    "geometry.negative_couplings.worst_ratio": "1", "geometry.negative_couplings.sum_ratio": "1",
    "geometry.negative_couplings.by_region.*": "count", "timings.*": "s",
}


def _number_paths(obj, path=()):
    """(path, value) of every number (not bool) in a JSON tree."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _number_paths(v, path + (str(k),))
    elif isinstance(obj, (list, tuple)):
        for k, v in enumerate(obj):
            yield from _number_paths(v, path + (str(k),))
    elif isinstance(obj, (int, float, np.integer, np.floating)) and not isinstance(obj, (bool, np.bool_)):
        yield path, obj


def match_unit(path, patterns=RUN_UNITS) -> tuple[str, str] | None:
    """(pattern, unit) of the first pattern that a dotted path (a tuple of keys) matches; None if none does."""
    for pattern, unit in patterns.items():
        parts = pattern.split(".")
        if len(parts) == len(path) and all(p == "*" or p == k for p, k in zip(parts, path)):
            return pattern, unit
    return None


def run_json_units(info: dict) -> dict:
    """The `units` map of run.json: every RUN_UNITS pattern that a number in `info` matches -> its unit."""
    used = {}
    for path, _ in _number_paths(info):
        m = match_unit(path)
        if m is not None:
            used[m[0]] = m[1]
    return {k: used[k] for k in RUN_UNITS if k in used}


@dataclasses.dataclass
class Result:
    built: object
    ts: np.ndarray            # (T,) save times, s
    stats: np.ndarray         # (T, S, R, 4): mean, max (pg/mm^3), free and bound amount (pg) per region
    snap_idx: np.ndarray      # (K,) indices into ts of the field snapshots
    snaps: np.ndarray         # (K, S, N) free concentration
    snaps_b: np.ndarray | None
    exposure: dict            # the final solver.Exposure accumulator (internal units: pg/mm^3, s)
    step_s: float             # the longest time step, s: the resolution of the exposure metrics
    budget: dict
    final_c: np.ndarray
    final_b: np.ndarray | None
    W: np.ndarray             # (N, R) region volume per node
    share: np.ndarray
    status: int
    steps: int
    stages: int
    limited: np.ndarray

    @property
    def factors(self):
        return list(self.built.model.factors)

    @property
    def regions(self):
        return list(self.built.model.regions)


def write_all(folder: Path, res: Result, *, figures: bool = True) -> dict:
    """Every output into `folder`; returns the metrics written to metrics.json."""
    write_regions_csv(folder / "regions.csv", res)
    write_cells_csv(folder / "cells.csv", res)
    m = metrics(res)
    _write_json(folder / "metrics.json", m)
    write_fields(folder / "fields.xdmf", res)
    if figures:
        (folder / "figures").mkdir(exist_ok=True)
        plot_all(folder / "figures", res)
    return m


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def write_regions_csv(path: Path, res: Result) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_h", "factor", "region", "mean_pg_per_mL", "max_pg_per_mL", "free_pg", "bound_pg"])
        for k, t in enumerate(res.ts):
            for s, f in enumerate(res.factors):
                for r, name in enumerate(res.regions):
                    mean, mx, free, bound = res.stats[k, s, r]
                    w.writerow([f"{t / HOUR:.6g}", f, name, f"{mean * PG_PER_ML:.6g}", f"{mx * PG_PER_ML:.6g}",
                                f"{free:.6g}", f"{bound:.6g}"])
    os.replace(tmp, path)


def cells_over_time(res: Result):
    t = np.concatenate([[0.0], res.ts])
    return t, res.built.cells(t)


def write_cells_csv(path: Path, res: Result) -> None:
    t, n = cells_over_time(res)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time_h", "retained_cells"])
        for a, b in zip(t, n):
            w.writerow([f"{a / HOUR:.6g}", f"{b:.6g}"])
    os.replace(tmp, path)


def metrics(res: Result) -> dict:
    """Exposure metrics per factor and region, and the mass budget.

    AUC, peaks and their times, hours above threshold and the exposed volume share come from the
    `solver.Exposure` accumulator, updated inside the time loop at every step (trapezoid AUC,
    threshold crossings interpolated within the step), not from the saved frames: they do not
    depend on `output.interval`. mean_at_end is the region mean at the last output time.
    """
    d = res.built.scenario.data
    exposure = d["output"]["exposure"]
    vol = res.W.sum(axis=0)
    acc = res.exposure
    from paracrine.solver.metrics import exposed_share

    exposed = np.asarray(exposed_share(acc["above_node"], res.W, exposure))   # (S, R)
    out = {"units": dict(METRIC_UNITS),
           "time_resolution": "every time step (accumulated inside the time loop; output.interval does not "
                              "enter)", "time_step_s": res.step_s, "factors": {}}
    for s, f in enumerate(res.factors):
        thr = d["factors"][f]["threshold"]
        per = {}
        for r, name in enumerate(res.regions):
            entry = {"volume_mm3": float(vol[r]), "auc_pg_per_mL_h": float(acc["auc"][s, r] * PG_PER_ML / HOUR),
                     "peak_mean_pg_per_mL": float(acc["peak_mean"][s, r] * PG_PER_ML),
                     "peak_mean_time_h": float(acc["peak_mean_time"][s, r] / HOUR),
                     "peak_max_pg_per_mL": float(acc["peak_max"][s, r] * PG_PER_ML),
                     "peak_max_time_h": float(acc["peak_max_time"][s, r] / HOUR),
                     "mean_at_end_pg_per_mL": float(res.stats[-1, s, r, 0] * PG_PER_ML)}
            if "auc_bound" in acc and d["factors"][f]["binding"]:
                entry["auc_bound_pg_per_mL_h"] = float(acc["auc_bound"][s, r] * PG_PER_ML / HOUR)
            if thr is not None:
                entry["mean_above_threshold_h"] = float(acc["above_mean"][s, r] / HOUR)
                entry["exposed_volume_fraction"] = float(exposed[s, r])
            per[name] = entry
        b = {k: float(v[s]) for k, v in res.budget.items()}
        left_free = float(res.W.sum(axis=1) @ res.final_c[s].reshape(-1))
        left_bound = 0.0 if res.final_b is None else float(res.W.sum(axis=1) @ res.final_b[s].reshape(-1))
        removed = sum(v for k, v in b.items() if k != "secreted")
        secreted = b.get("secreted", 0.0)
        budget = dict(b, left_free=left_free, left_bound=left_bound)
        closure = abs(secreted - removed - left_free - left_bound) / secreted if secreted > 0 else 0.0
        out["factors"][f] = {"threshold_pg_per_mL": None if thr is None else thr * PG_PER_ML,
                             "exposure_h": exposure / HOUR, "regions": per, "budget_pg": budget,
                             "budget_closure_fraction": closure, "limited_pg": float(res.limited[s])}
    tc, n = cells_over_time(res)
    out["cells"] = {"retained_at_start_cells": float(n[0]) if len(n) else 0.0,
                    "retained_at_end_cells": float(n[-1]) if len(n) else 0.0}
    return out


def _mesh_for_fields(res: Result):
    """Points, cells, cell-region labels and whether fields live on points (mesh) or cells (grid voxels)."""
    from paracrine import geometry

    geom = res.built.geometry
    if isinstance(geom, geometry.Mesh):
        kind = "tetra" if geom.dim == 3 else "triangle"
        return geom.points, [(kind, geom.cells)], geom.cell_regions, True
    # voxels as hexahedra (quads in 2-D); the fields are voxel (cell) data on the tissue voxels
    lab = geom.labels
    idx = np.argwhere(lab > 0)
    h, o = np.asarray(geom.spacing), np.asarray(geom.origin)
    corners = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1], [0, 1, 1]]) \
        if geom.dim == 3 else np.array([[0, 0], [1, 0], [1, 1], [0, 1]])
    pts = (idx[:, None, :] + corners[None] - 0.5) * h + o
    uniq, inv = np.unique(pts.reshape(-1, geom.dim).round(9), axis=0, return_inverse=True)
    cells = inv.reshape(len(idx), len(corners))
    if geom.dim == 2:
        uniq = np.c_[uniq, np.zeros(len(uniq))]
    return uniq, [("hexahedron" if geom.dim == 3 else "quad", cells)], lab[tuple(idx.T)], False


def _series_writer():
    """meshio's XDMF time-series writer with the .h5 opened by its full path (next to the .xdmf) and
    referenced by its bare name from the XDMF text, so nothing depends on the working directory.
    `information` (name -> text) becomes <Information> elements of the Domain; on closing, every
    dataset meshio named /dataK gets HDF5 attributes saying what it holds (name, time_h, units)."""
    import xml.etree.ElementTree as ET

    import h5py
    import meshio

    class Writer(meshio.xdmf.TimeSeriesWriter):
        information: dict = {}

        def __enter__(self):
            if self.data_format != "HDF":
                raise ValueError("fields are written as XDMF with HDF5 data only")
            self.h5_filename = str(Path(self.filename).with_suffix(".h5"))
            self.h5_file = h5py.File(self.h5_filename, "w")   # the XDMF names it by os.path.basename
            return self

        def __exit__(self, *exc):
            if exc[0] is None:
                for name, value in self.information.items():
                    ET.SubElement(self.domain, "Information", Name=name, Value=value)
                self._describe()
            return super().__exit__(*exc)

        def _describe(self):
            def target(item):
                ref = (item.text or "").strip()
                key = ref.split(":/", 1)[1] if ":/" in ref else None
                return self.h5_file[key] if key in self.h5_file else None

            for grid in self.domain.iter("Grid"):
                if grid.get("Name") == self.mesh_name:
                    for tag, name, unit in (("Geometry", "points_mm", "mm"), ("Topology", "cells", "node indices")):
                        el = grid.find(tag)
                        for item in [] if el is None else el.iter("DataItem"):
                            ds = target(item)
                            if ds is not None:
                                ds.attrs.update(name=name, units=unit)
            for step in self.collection:
                time = step.find("Time")
                for att in step.iter("Attribute"):
                    for item in att.iter("DataItem"):
                        ds = target(item)
                        if ds is not None:
                            name = att.get("Name")
                            ds.attrs.update(name=name, time_h=float(time.get("Value")), center=att.get("Center"),
                                            units=unit_of(name) or ("region label" if name == "region" else ""))

    return Writer


def _region_tables(res: Result, on_points: bool):
    """label -> region name of the geometry, and per field location (node, or tissue voxel) the label of the
    region holding most of its control volume, and the share of that volume in each region."""
    names = dict(res.built.geometry.region_names)              # name -> label
    share = np.asarray(res.share, float)                        # (N, R) over res.regions
    if not on_points:
        share = share[np.asarray(res.built.disc.mass).reshape(-1) > 0]
    labels = np.array([names[r] for r in res.regions], dtype=np.int32)
    return names, labels[np.argmax(share, axis=1)], share


def write_fields(path: Path, res: Result) -> None:
    """fields.xdmf + fields.h5 (meshio's XDMF time series): per factor the free concentration
    (pg/mL) and, with binding, the bound one, at the snapshot times (h); the region label per cell.
    The XDMF refers to the .h5 by its name, relative to the folder (the pair can be moved together).

    Region names: fields.xdmf has <Information Name="region_names" Value='{"remote": 1, ...}'/> (name ->
    label) in its Domain; fields.h5 has the same JSON as the root attribute `region_names` and the datasets
    /region_names (names) and /region_labels (their labels, same order), /node_region (per field location,
    nodes on meshes and tissue voxels on grids: the label of the region holding most of its volume) and
    /node_region_share (the share of its control volume in each of the run's regions; the attribute
    `columns` names them)."""
    points, cells, labels, on_points = _mesh_for_fields(res)
    tissue = np.asarray(res.built.disc.mass).reshape(-1) > 0
    names, node_label, share = _region_tables(res, on_points)
    order = list(res.regions) + [n for n in names if n not in res.regions]
    Writer = _series_writer()
    Writer.information = {"region_names": json.dumps(names),
                          "units": "time h; concentrations pg/mL (fields NAME_pg_per_mL); points mm",
                          "field_location": "nodes" if on_points else "tissue voxels (cell data)"}
    with Writer(Path(path).absolute()) as w:
        w.write_points_cells(points, cells)
        for k, i in enumerate(res.snap_idx):
            data = {}
            for s, f in enumerate(res.factors):
                v = res.snaps[k, s].astype(float) * PG_PER_ML
                data[f"{f}_pg_per_mL"] = v if on_points else v[tissue]
                if res.snaps_b is not None and res.built.scenario.data["factors"][f]["binding"]:
                    vb = res.snaps_b[k, s].astype(float) * PG_PER_ML
                    data[f"{f}_bound_pg_per_mL"] = vb if on_points else vb[tissue]
            cell_data = {"region": [labels.astype(np.int32)]}
            if on_points:
                w.write_data(float(res.ts[i] / HOUR), point_data=data, cell_data=cell_data)
            else:
                w.write_data(float(res.ts[i] / HOUR), cell_data={**cell_data, **{k: [v] for k, v in data.items()}})
        h5 = w.h5_file
        h5.attrs["region_names"] = json.dumps(names)
        h5.create_dataset("region_names", data=np.array(order, dtype=object), dtype=h5py_str())
        h5.create_dataset("region_labels", data=np.array([names[n] for n in order], dtype=np.int32))
        h5.create_dataset("node_region", data=node_label.astype(np.int32))
        h5.create_dataset("node_region_share", data=share)
        h5["node_region_share"].attrs["columns"] = json.dumps(list(res.regions))


def h5py_str():
    import h5py

    return h5py.string_dtype("utf-8")


def plot_all(folder: Path, res: Result) -> None:
    """figures/: region courses and maps of each factor, cells remaining (paracrine.figures)."""
    from . import figures

    figures.plot_regions(folder, res)
    if res.built.cell_sources:
        figures.plot_cells(folder, *cells_over_time(res))
    plot_maps(folder, res)


def plot_maps(folder: Path, res: Result) -> None:
    """Maps of each factor on the short- and long-axis planes at the snapshot nearest each map time."""
    from . import figures

    figures.plot_maps(folder, res)

