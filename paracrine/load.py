"""A run folder as analysis-ready objects: `load_run(path)` -> `Run` (an xarray Dataset and pandas frames).

    >>> import paracrine
    >>> r = paracrine.load_run("runs/default")
    >>> r.dataset["VEGF_pg_per_mL"].sel(time=24.0)                 # the field on the nodes at 24 h
    >>> r.dataset["mean_pg_per_mL"].sel(factor="VEGF", region="border").plot()
    >>> r.metrics.query("region == 'border'")                     # factor, region, metric, value, unit
    >>> r.regions, r.cells, r.info                                 # regions.csv, cells.csv, run.json

Dataset layout (every variable and numeric coordinate has a `units` attribute):

* fields, dims (time, node): `F_pg_per_mL` (and `F_bound_pg_per_mL` with binding) per factor F at the
  snapshot times; `time` in h. On meshes a node is a mesh node; on voxel grids a tissue voxel (its centre).
* node coordinates `x_mm`, `y_mm`, `z_mm`; `node_region` (the region holding most of the node's control
  volume) and `node_region_label`; `node_region_share` (node, region).
* region courses from regions.csv, dims (course_time, factor, region): `mean_pg_per_mL`, `max_pg_per_mL`,
  `free_pg`, `bound_pg`; `course_time` in h (every output.interval; the fields' `time` is every
  output.fields).
* `retained_cells` (cells_time).
* metrics.json flattened into the attributes: `FACTOR.REGION.METRIC`, `FACTOR.METRIC`, `FACTOR.budget.X_pg`,
  `cells.METRIC`, `time_step_s` (the unit is the end of each name).

The fields are read when `.dataset` is first used; `.metrics`, `.regions`, `.cells` and `.info` do not
read them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import numpy as np

#: the files every complete run folder holds
REQUIRED = ("run.json", "metrics.json", "regions.csv", "cells.csv", "fields.xdmf", "fields.h5")
COURSE_COLUMNS = ("mean_pg_per_mL", "max_pg_per_mL", "free_pg", "bound_pg")


class RunFolderError(ValueError):
    """A path that is not a complete run folder; the message says what it is and what to do."""


def _complete(path: Path) -> Path:
    """`path` as a complete run folder, or a RunFolderError naming the folder and what is missing."""
    path = Path(path)
    out = path.with_name(path.name[: -len(".partial")]) if path.name.endswith(".partial") else path
    part = out.with_name(out.name + ".partial")
    interrupted = (f"{part} is an interrupted run: paracrine run works in OUT.partial and renames it to OUT only "
                   f"when every output is written. Continue it with `paracrine run --resume {out}` (it computes "
                   f"exactly what the uninterrupted run would have), then load {out}")
    if path.name.endswith(".partial"):
        if path.is_dir():
            raise RunFolderError(interrupted)
        if out.is_dir():
            path = out
    if not path.exists():
        if part.is_dir():
            raise RunFolderError(f"{path} does not exist; {interrupted}")
        raise RunFolderError(f"{path}: no such run folder (a folder written by `paracrine run SCENARIO --out "
                             f"{path}`)")
    if not path.is_dir():
        hint = (f"; give the folder that holds it ({path.parent})" if path.name in REQUIRED else "")
        raise RunFolderError(f"{path} is a file, not a run folder{hint}")
    missing = [n for n in REQUIRED if not (path / n).is_file()]
    if missing:
        if (path / "run-start.json").is_file() or (path / "checkpoints").is_dir():
            raise RunFolderError(interrupted)
        raise RunFolderError(f"{path} is not a complete run folder: {', '.join(missing)} "
                             f"{'is' if len(missing) == 1 else 'are'} missing (a folder written by paracrine run "
                             f"holds {', '.join(REQUIRED)}, figures/ and scenario.toml)")
    return path


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{path} does not read as JSON ({type(err).__name__}: {err}); the run folder "
                             f"{path.parent} is damaged: run its scenario.toml again") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path} holds {type(obj).__name__}, not the JSON object paracrine run writes")
    return obj


def _read_csv(path: Path, need: tuple):
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as err:   # pandas' parser errors are ValueErrors
        raise RunFolderError(f"{path} does not read as CSV ({type(err).__name__}: {err}); the run folder "
                             f"{path.parent} is damaged: run its scenario.toml again") from None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise RunFolderError(f"{path}: no column {missing[0]!r} (columns: {list(df.columns)}); allowed: a "
                             f"{path.name} written by paracrine run")
    return df


def normalise_metrics(m: dict) -> dict:
    """metrics.json with the key names of this version (runs written before units were part of every
    name are read with their keys renamed: auc -> auc_pg_per_mL_h, ...)."""
    from .report import OLD_METRIC_KEYS

    ren = lambda d: {OLD_METRIC_KEYS.get(k, k): v for k, v in d.items()}  # noqa: E731
    out = dict(m, factors={})
    for f, v in m.get("factors", {}).items():
        v = dict(v)
        v["regions"] = {r: ren(e) for r, e in v.get("regions", {}).items()}
        b = dict(v.get("budget_pg", {}))
        if "closure" in b:
            v.setdefault("budget_closure_fraction", b.pop("closure"))
        v["budget_pg"] = b
        out["factors"][f] = v
    if "cells" in m:
        out["cells"] = ren(m["cells"])
    return out


def metrics_frame(m: dict):
    """metrics.json as a tidy frame: factor, region ("" for a factor's own values), metric, value, unit."""
    import pandas as pd

    from .report import unit_of

    rows = []
    for f, v in m.get("factors", {}).items():
        for r, entry in v.get("regions", {}).items():
            rows += [(f, r, k, x) for k, x in entry.items()]
        for k, x in v.items():
            if k == "regions":
                continue
            if k == "budget_pg":
                rows += [(f, "", f"budget_{b}_pg", y) for b, y in x.items()]
            else:
                rows.append((f, "", k, x))
    rows += [("", "", k, x) for k, x in m.get("cells", {}).items()]
    if "time_step_s" in m:
        rows.append(("", "", "time_step_s", m["time_step_s"]))
    rows = [(f, r, k, np.nan if x is None else float(x), unit_of(k) or "") for f, r, k, x in rows
            if x is None or isinstance(x, (int, float)) and not isinstance(x, bool)]
    return pd.DataFrame(rows, columns=["factor", "region", "metric", "value", "unit"])


@dataclasses.dataclass
class Run:
    """A complete run folder. `dataset` (xarray, read on first use), `regions` (regions.csv), `cells`
    (cells.csv), `metrics` (tidy: factor, region, metric, value, unit), `metrics_json` (metrics.json with
    this version's key names), `info` (run.json)."""

    path: Path
    info: dict
    metrics_json: dict
    regions: object
    cells: object

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def factors(self) -> list:
        return list(self.metrics_json.get("factors", {}))

    @property
    def region_names(self) -> list:
        return list(self.info.get("scenario", {}).get("regions") or self.regions["region"].unique())

    @functools.cached_property
    def metrics(self):
        return metrics_frame(self.metrics_json)

    def course(self, factor: str, region: str = "border", column: str = "mean_pg_per_mL"):
        """(time_h, values) of one region course from regions.csv."""
        df = self.regions[(self.regions["factor"] == factor) & (self.regions["region"] == region)]
        return df["time_h"].to_numpy(float), df[column].to_numpy(float)

    def metric(self, factor: str, region: str, metric: str) -> float:
        df = self.metrics
        hit = df[(df["factor"] == factor) & (df["region"] == region) & (df["metric"] == metric)]
        if hit.empty:
            raise KeyError(f"{self.path}: no metric {metric!r} for factor {factor!r}, region {region!r}")
        return float(hit["value"].iloc[0])

    @functools.cached_property
    def dataset(self):
        return _dataset(self)

    def __repr__(self) -> str:
        return (f"Run({str(self.path)!r}: factors {self.factors}, regions {self.region_names}, "
                f"{self.info.get('status', '?')})")


def load_run(path) -> Run:
    """Read a complete run folder (written by `paracrine run` or `paracrine.run`). A folder that is not one
    (missing files, an interrupted OUT.partial) is a RunFolderError (a ValueError) saying what it is."""
    path = _complete(Path(path))
    info = _read_json(path / "run.json")
    m = normalise_metrics(_read_json(path / "metrics.json"))
    regions = _read_csv(path / "regions.csv", ("time_h", "factor", "region") + COURSE_COLUMNS)
    cells = _read_csv(path / "cells.csv", ("time_h",))
    if "cells_retained" in cells.columns:   # written before the column had its unit
        cells = cells.rename(columns={"cells_retained": "retained_cells"})
    return Run(path=path, info=info, metrics_json=m, regions=regions, cells=cells)


# ---------------------------------------------------------------------------------------------------------


def _region_names(run: Run, h5) -> dict:
    """name -> label of the run's geometry: fields.h5 (this version), else geometry.npz."""
    if "region_names" in h5.attrs:
        return {str(k): int(v) for k, v in json.loads(h5.attrs["region_names"]).items()}
    npz = run.path / "geometry.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as z:
            if "region_names" in z.files:
                return {str(k): int(v) for k, v in json.loads(str(z["region_names"])).items()}
    return {r: k + 1 for k, r in enumerate(run.region_names)}


def _dataset(run: Run):
    import h5py
    import meshio
    import xarray as xr

    from .report import unit_of

    xdmf = run.path / "fields.xdmf"
    try:
        with meshio.xdmf.TimeSeriesReader(str(xdmf)) as rd:
            points, cells = rd.read_points_cells()
            steps = [rd.read_data(k) for k in range(rd.num_steps)]
    except Exception as err:  # noqa: BLE001 - meshio and h5py raise many types for damaged files
        raise RunFolderError(f"{xdmf} (with fields.h5) does not read back ({type(err).__name__}: {err}); the run "
                             f"folder {run.path} is damaged: run its scenario.toml again") from None
    with h5py.File(run.path / "fields.h5", "r") as h5:
        names = _region_names(run, h5)
        node_label = h5["node_region"][()] if "node_region" in h5 else None
        share = h5["node_region_share"][()] if "node_region_share" in h5 else None
        share_cols = json.loads(h5["node_region_share"].attrs["columns"]) if share is not None else None
    block = cells[0]
    times = np.array([float(t) for t, _, _ in steps])
    on_points = bool(steps) and bool(steps[0][1])   # meshes: point data; grids: cell data only
    if on_points:
        xyz = np.asarray(points, float)
        fields = {k: np.stack([pd[k] for _, pd, _ in steps]) for k in steps[0][1]}
    else:   # voxel grid: fields are cell data of the tissue voxels; a node is a voxel (its centre)
        xyz = np.asarray(points, float)[block.data].mean(axis=1)
        names_ = [k for k in (steps[0][2] if steps else {}) if k != "region"]
        fields = {k: np.stack([cd[k][0] for _, _, cd in steps]) for k in names_}
    n = len(xyz)
    if node_label is None:   # written before fields.h5 held it
        cell_label = np.asarray(steps[0][2]["region"][0]) if steps else np.zeros(len(block.data), int)
        if on_points:
            p = np.asarray(points, float)[block.data]
            vol = np.abs(np.linalg.det(p[:, 1:] - p[:, :1])) if p.shape[1] == 4 else np.ones(len(p))
            labs = sorted(set(names.values()))
            acc = np.zeros((n, len(labs)))
            for j in range(block.data.shape[1]):
                np.add.at(acc, (block.data[:, j], np.searchsorted(labs, cell_label)), vol)
            node_label = np.asarray(labs)[acc.argmax(axis=1)]
        else:
            node_label = cell_label
    label_name = {v: k for k, v in names.items()}
    regions = run.region_names
    factors = run.factors
    ds = xr.Dataset(coords={
        "time": ("time", times, {"units": "h", "long_name": "time of the field snapshot"}),
        "node": ("node", np.arange(n), {"units": "1", "long_name": "mesh node" if on_points else "tissue voxel"}),
        "x_mm": ("node", xyz[:, 0], {"units": "mm"}), "y_mm": ("node", xyz[:, 1], {"units": "mm"}),
        "z_mm": ("node", xyz[:, 2] if xyz.shape[1] > 2 else np.zeros(n), {"units": "mm"}),
        "node_region": ("node", np.array([label_name.get(int(v), str(v)) for v in node_label], dtype=object),
                        {"units": "", "long_name": "region holding most of the node's control volume"}),
        "node_region_label": ("node", np.asarray(node_label, np.int32), {"units": "region label",
                                                                           "labels": json.dumps(names)}),
        "factor": ("factor", np.array(factors, dtype=object), {"units": ""}),
        "region": ("region", np.array(regions, dtype=object), {"units": ""}),
    })
    what = {f"{f}_pg_per_mL": (f, "free") for f in factors} | {f"{f}_bound_pg_per_mL": (f, "bound") for f in factors}
    for k, v in fields.items():
        f, kind = what.get(k, ("", ""))
        ds[k] = (("time", "node"), np.asarray(v, float), {"units": unit_of(k) or "", "factor": f,
                                                          "long_name": f"{kind} {f} concentration".strip()})
    if share is not None:
        cols = [share_cols.index(r) for r in regions]
        ds["node_region_share"] = (("node", "region"), share[:, cols],
                                   {"units": "1", "long_name": "share of the node's control volume in each region"})
    # region courses from regions.csv
    df = run.regions
    ct = np.unique(df["time_h"].to_numpy(float))
    ds = ds.assign_coords(course_time=("course_time", ct, {"units": "h", "long_name": "time of the region course"}))
    ti = np.searchsorted(ct, df["time_h"].to_numpy(float))
    fi = np.array([factors.index(f) for f in df["factor"]])
    ri = np.array([regions.index(r) for r in df["region"]])
    for col in COURSE_COLUMNS:
        a = np.full((len(ct), len(factors), len(regions)), np.nan)
        a[ti, fi, ri] = df[col].to_numpy(float)
        ds[col] = (("course_time", "factor", "region"), a, {"units": unit_of(col) or ""})
    c = run.cells
    if "retained_cells" in c.columns:
        ds = ds.assign_coords(cells_time=("cells_time", c["time_h"].to_numpy(float), {"units": "h"}))
        ds["retained_cells"] = (("cells_time",), c["retained_cells"].to_numpy(float), {"units": "cells"})
    # metrics as attributes (netCDF-safe scalars), run facts
    for row in run.metrics.itertuples():
        key = ".".join(x for x in (row.factor, row.region, row.metric.replace("budget_", "budget.", 1)) if x)
        ds.attrs[key] = float(row.value)
    ds.attrs.update(run=run.name, path=str(run.path), title=run.info.get("scenario", {}).get("title", ""),
                    status=str(run.info.get("status", "")), precision=str(run.info.get("precision", "")),
                    metric_units=json.dumps(dict(zip(run.metrics["metric"], run.metrics["unit"]))))
    return ds


# ---------------------------------------------------------------------------------------------------------


def run(scenario=None, out=None, *, device: str | None = None, precision: str | None = None, progress=False,
        figures: bool = True, checkpoint_every: float = 60.0, force: bool = False, resume: bool = False) -> Run:
    """Run a scenario into a run folder, as `paracrine run` does, and return it read back (`load_run`).

    scenario: a scenario file (path), its text as a dict of TOML tables (as `tomllib.load` gives it),
        a loaded `paracrine.scenario.Scenario`, or None for the built-in default.
    out: the run folder to create (must not exist; runs never overwrite); default runs/<file stem>, or
        runs/<title or "scenario"> for a dict, runs/default for the default, as the command line does.
    device: "cpu" or "gpu", precision: "single" or "double" (default: what this process's JAX has). A
        library call does not change JAX's process-wide configuration: the device and the precision asked
        for must be the process's (for double precision call `jax.config.update("jax_enable_x64", True)`
        first; JAX cannot switch precision for one run); a mismatch is refused, saying what to set.
    progress: a progress bar on stderr (None: on a terminal); figures, checkpoint_every, force, resume as
        for the command line (resume=True continues the interrupted run in `out`).
    """
    from . import runner, scenario as sc

    if precision not in (None, "single", "double"):
        raise ValueError(f"precision = {precision!r}; allowed: 'single', 'double' or None")
    if device not in (None, "cpu", "gpu"):
        raise ValueError(f"device = {device!r}; allowed: 'cpu', 'gpu' or None")
    import jax

    kw = dict(checkpoint_every=checkpoint_every, progress=progress, figures=figures, force=force)
    if device is not None and jax.default_backend() != device:
        raise ValueError(f"device = {device!r}, but this process's JAX runs on {jax.default_backend()!r}; allowed: "
                         f"None, or set JAX_PLATFORMS before JAX starts")
    if precision == "single" and jax.config.jax_enable_x64:
        raise ValueError("precision = 'single', but jax_enable_x64 is on in this process (a run in float32 "
                         "needs it off); allowed: precision='double' or None here, or 'single' in a process "
                         "that has not enabled x64")
    if precision == "double" and not jax.config.jax_enable_x64:
        raise ValueError("precision = 'double', but jax_enable_x64 is off in this process; allowed: None or "
                         "'single', or call jax.config.update(\"jax_enable_x64\", True) before any JAX work")
    if resume:
        if out is None:
            raise ValueError("resume=True needs out, the run folder to continue")
        return load_run(runner.run(None, Path(out), resume=True, **kw))
    stem = "default"
    if scenario is None:
        scen = sc.default()
    elif isinstance(scenario, sc.Scenario):
        scen = scenario
        stem = Path(scen.source).stem if Path(scen.source).is_file() else (scen.data.get("title") or "scenario")
    elif isinstance(scenario, dict):
        import tomlkit

        try:
            text = tomlkit.dumps(scenario)
        except Exception as err:  # noqa: BLE001 - tomlkit raises several types for values TOML cannot hold
            raise sc.ScenarioError(f"<dict>: the scenario does not convert to TOML ({type(err).__name__}: {err}); "
                                   "allowed: tables of text, numbers, booleans and lists, as in a scenario file") \
                from None
        scen = sc.loads(text, source="<dict>")
        stem = str(scenario.get("title") or "scenario")
    elif isinstance(scenario, (str, Path)):
        scen = sc.load(scenario)
        stem = Path(scenario).stem
    else:
        raise TypeError(f"scenario = {type(scenario).__name__}; allowed: a path, a dict of TOML tables, a "
                        "paracrine.scenario.Scenario or None (the default)")
    if out is None:
        safe = "".join(ch if ch.isalnum() or ch in "._+-" else "_" for ch in stem).strip("._") or "scenario"
        out = Path("runs") / safe
    return load_run(runner.run(scen, Path(out), **kw))
