"""Before any work: how big a run, mesh or fit will be, and whether its output folder can be made.

The size of a generated LV mesh is estimated from the tissue volume and the mesh size before
gmsh is called (nodes ~ V / h^3 x (0.52 + 2.6 h / wall), measured on gmsh's LV meshes of every
species within ~15 %), with the refined balls around the injection sites added; a voxel grid's
size is exact. The time steps of fixed steps are exact; error-controlled steps are not known
before the run (the controller stops a chunk after `max_steps` tries). A work estimate above a
limit (`LIMITS`) is refused unless forced, with the key that sets it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

#: refused without --force above these (nodes of the mesh or grid, time steps, bytes of fields or memory)
LIMITS = {"nodes": 5e6, "steps": 1e6, "bytes": 8e9}


class EstimateError(ValueError):
    """The work estimate is above a limit; the message gives the estimate and the key to change."""


def _count(x: float) -> str:
    """6.9k, 39k, 1.2M, 6e+09: a rough count."""
    if x < 1e3:
        return f"{x:.0f}"
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if div <= x < 1e3 * div:
            v = x / div
            return f"{v:.2g}{suffix}" if v < 10 else f"{v:.0f}{suffix}"
    return f"{x:.2g}"


def _length(h: float, like: str | None) -> str:
    """A mesh size in the style of `like` (quoted for scenario keys)."""
    text = f"{h:.2g} mm"
    return f'"{text}"' if like and like.startswith('"') else text


def _bytes(b: float) -> str:
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if b >= div:
            return f"{b / div:.3g} {unit}"
    return f"{b:.0f} B"


def _node_factor(h: float, wall: float) -> tuple[float, float]:
    """(nodes, cells) per h^3 of tissue of gmsh's LV meshes at edge length h on a wall this thick."""
    r = min(h / wall, 1.0)
    return 0.52 + 2.6 * r, 3.66 + 4.5 * r


def lv_mesh_size(shape: dict | str, h: float, *, refine: float | None = None, refine_radius: float | None = None,
                 sites: int = 0) -> tuple[float, float]:
    """(nodes, cells) of gmsh's tetrahedral LV with edge length h (mm), before meshing; with `refine`,
    `sites` balls of radius refine_radius (default 4 x refine) meshed at `refine`, growing back to h over
    4 h (the size field of geometry.lv_ellipsoid)."""
    from paracrine import geometry

    s = geometry.LVShape(**shape) if isinstance(shape, dict) else geometry.lv_shape(shape)
    wall = s.a_epi - s.a_endo
    vol = s.volume()
    kn, kc = _node_factor(h, wall)
    nodes, cells = vol / h ** 3 * kn, vol / h ** 3 * kc
    if refine and sites and refine < h:
        R = refine * 4 if refine_radius is None else refine_radius
        r = np.linspace(0.0, R + 4 * h, 400)
        size = np.where(r <= R, refine, refine + (h - refine) * np.clip((r - R) / (4 * h), 0, 1))
        dv = np.minimum(4 * np.pi * r ** 2, 2 * np.pi * np.maximum(r, 1e-12) * wall)   # ball, then the wall slab
        fn = np.array([_node_factor(x, wall)[0] for x in size])
        fc = np.array([_node_factor(x, wall)[1] for x in size])
        extra_n = np.trapezoid(dv * (fn / size ** 3 - kn / h ** 3), r)
        extra_c = np.trapezoid(dv * (fc / size ** 3 - kc / h ** 3), r)
        nodes += sites * max(extra_n, 0.0)
        cells += sites * max(extra_c, 0.0)
    return nodes, cells


def lv_grid_size(shape: dict | str, spacing: float) -> tuple[float, float]:
    """(grid nodes, tissue voxels) of the voxel LV at this spacing: the box is exact (the state lives on
    every voxel of it), the tissue is the wall volume / spacing^3."""
    from paracrine import geometry

    s = geometry.LVShape(**shape) if isinstance(shape, dict) else geometry.lv_shape(shape)
    lo = np.array([-s.a_epi, -s.a_epi, -s.c_epi])
    n = np.ceil((np.array([s.a_epi, s.a_epi, s.base]) - lo) / spacing)
    return float(np.prod(n)), s.volume() / spacing ** 3


@dataclasses.dataclass
class Estimate:
    """What a command will compute: nodes and cells (None: known only once the geometry is read),
    time steps (None: error-controlled), bytes of saved fields and of memory; `keys` name the
    settings behind each number (for the refusal)."""

    nodes: float | None = None
    cells: float | None = None
    steps: float | None = None
    field_bytes: float | None = None
    memory_bytes: float | None = None
    steps_note: str = ""
    keys: dict = dataclasses.field(default_factory=dict)
    mesh_h: float | None = None        # the mesh size / spacing the node count comes from (for the advice)
    grid: bool = False

    def line(self) -> str:
        parts = []
        if self.nodes is not None:
            parts.append(f"~{_count(self.nodes)} nodes")
        if self.cells is not None:
            parts.append(f"~{_count(self.cells)} {'tissue voxels' if self.grid else 'cells'}")
        if self.steps is not None:
            parts.append(f"{_count(self.steps)} time steps")
        elif self.steps_note:
            parts.append(self.steps_note)
        if self.field_bytes is not None:
            parts.append(f"{_bytes(self.field_bytes)} of fields")
        if self.memory_bytes is not None:
            parts.append(f"~{_bytes(self.memory_bytes)} of memory")
        return "estimate: " + ", ".join(parts)

    def problems(self) -> list[str]:
        """What is above LIMITS, each with the key to change."""
        out = []
        if self.nodes is not None and self.nodes > LIMITS["nodes"]:
            key, now = self.keys.get("nodes", ("the mesh size", None))
            said = [f"now {now}"] if now else []
            if self.mesh_h:
                h_ok = self.mesh_h * (self.nodes / (0.5 * LIMITS['nodes'])) ** (1 / 3)
                said.append(f"about {_length(h_ok, now)} stays below it")
            out.append(f"~{_count(self.nodes)} nodes is above the limit of {LIMITS['nodes']:.0e} (meshing and "
                       f"assembling it would take hours and may run out of memory): raise {key}"
                       + (f" ({'; '.join(said)})" if said else ""))
        if self.steps is not None and self.steps > LIMITS["steps"]:
            key, now = self.keys.get("steps", ("time.dt", None))
            out.append(f"{_count(self.steps)} time steps is above the limit of {LIMITS['steps']:.0e} (hours of "
                       f"stepping with little to show): raise {key}" + (f" (now {now})" if now else "")
                       + ", or use error-controlled steps (time.rtol = 1e-3 instead of time.dt)")
        worst = max(self.field_bytes or 0.0, self.memory_bytes or 0.0)
        if worst > LIMITS["bytes"]:
            key, _ = self.keys.get("bytes", ("the mesh size", None))
            out.append(f"{_bytes(worst)} of {'fields' if (self.field_bytes or 0) >= (self.memory_bytes or 0) else 'memory'}"
                       f" is above the limit of {_bytes(LIMITS['bytes'])}: raise {key}")
        return out

    def check(self, force: bool = False, say=None) -> None:
        """Raise EstimateError when above a limit and not forced; else say(line) (the line, with what was
        forced)."""
        bad = self.problems()
        if bad and not force:
            raise EstimateError(f"{self.line()}; " + "; ".join(bad) + "; or give --force to start it anyway")
        if say is not None:
            say(self.line() + (f" (above the limits, started with --force: {'; '.join(bad)})" if bad else ""))


def _point_sites(d: dict) -> int:
    from .scenario import POINT_ROUTES

    n = 0
    for x in list(d.get("injections", [])) + list(d.get("media", [])):
        if x.get("route") in POINT_ROUTES:
            s = x.get("sites") or {}
            n += len(s["points"]) if "points" in s else int(s.get("n", 0))
    return n


def geometry_estimate(g: dict, d: dict | None = None) -> Estimate:
    """Nodes and cells of a scenario's geometry before it is made (the generated LV only; a file or
    label image gives None: counted once read)."""
    est = Estimate()
    if g.get("kind") != "lv":
        return est
    if g.get("mesh_size"):
        h = g["mesh_size"]
        est.nodes, est.cells = lv_mesh_size(g["shape"], h, refine=g.get("refine"), refine_radius=g.get("refine_radius"),
                                            sites=_point_sites(d or {}))
        est.keys["nodes"] = ("geometry.mesh_size" + (" and geometry.refine" if g.get("refine") else ""),
                             f'"{h:g} mm"' + (f' and "{g["refine"]:g} mm"' if g.get("refine") else ""))
        est.mesh_h = h
    elif g.get("grid_spacing"):
        h = g["grid_spacing"]
        est.nodes, est.cells = lv_grid_size(g["shape"], h)
        est.keys["nodes"] = ("geometry.grid_spacing", f'"{h:g} mm"')
        est.mesh_h, est.grid = h, True
    return est


def run_estimate(d: dict, *, nodes: float | None = None, cells: float | None = None, itemsize: int = 4,
                 grid: bool | None = None) -> Estimate:
    """The estimate of `paracrine run` for the resolved scenario `d`; nodes/cells when the geometry is
    known (read from a file), else estimated from geometry.*."""
    from .scenario import Scenario, save_times

    est = geometry_estimate(d["geometry"], d) if nodes is None else Estimate(nodes=float(nodes), cells=cells)
    if grid is not None:
        est.grid = grid
    t = d["time"]
    ts = save_times(Scenario(d))
    if t.get("dt"):
        gaps = np.diff(np.concatenate([[0.0], ts]))
        est.steps = float(np.ceil(gaps / t["dt"] * (1 - 1e-12)).sum())
        est.keys["steps"] = ("time.dt", f'"{t["dt"]:g} s"')
    else:
        est.steps_note = f"error-controlled steps (rtol {t.get('rtol') or 1e-3:g})"
    if est.nodes is not None:
        S = len(d["factors"])
        o = d["output"]
        every = max(int(o.get("fields_every", 1)), 1)
        idx = np.arange(len(ts))
        maps = [int(np.argmin(np.abs(ts - m))) for m in o.get("maps", [])]
        k = int((((idx + 1) % every == 0) | (idx == len(ts) - 1) | np.isin(idx, maps)).sum())
        binding = any(f.get("binding") for f in d["factors"].values())
        pools = 2 if binding else 1
        est.field_bytes = float(k * S * est.nodes * 4 * pools)                     # float32 snapshots
        per_chunk = max(1, int(round(t.get("chunk", 86400.0) / o["interval"])))
        chunk_bytes = per_chunk * S * est.nodes * itemsize * pools * 2             # on the device and the host
        est.memory_bytes = est.field_bytes + chunk_bytes + est.nodes * 400.0          # + operator and geometry
        est.keys["bytes"] = ("output.fields (fewer snapshots) or geometry.mesh_size", None)
    return est


def mesh_estimate(species: str, size: float | None, spacing: float | None) -> Estimate:
    """`paracrine mesh` of the generated LV, before gmsh or the voxeliser runs."""
    from paracrine import geometry

    shape = dataclasses.asdict(geometry.lv_shape(species))
    if size is not None:
        est = geometry_estimate({"kind": "lv", "shape": shape, "mesh_size": size})
        est.keys["nodes"] = ("--size", f"{size:g} mm")
    else:
        est = geometry_estimate({"kind": "lv", "shape": shape, "grid_spacing": spacing})
        est.keys["nodes"] = ("--spacing", f"{spacing:g} mm")
    if est.nodes is not None:
        est.memory_bytes = est.nodes * 400.0
        est.keys["bytes"] = est.keys["nodes"]
    return est


# ---------------------------------------------------------------------------------------------------------
# the output folder


def out_problem(out: Path, what: str = "--out") -> str | None:
    """Why the folder `out` cannot be created (None when it can): an existing file, a non-empty folder, a
    file among its parents, or a parent folder this process cannot write to. An existing empty folder is
    fine (it is replaced by the finished one)."""
    out = Path(out)
    if out.is_file() or (out.exists() and not out.is_dir()):
        return f"{what} {out} is an existing file; give a folder that does not exist yet"
    if out.is_dir():
        if any(out.iterdir()):
            return f"{out} exists and is not empty; choose another {what} (nothing is ever overwritten)"
        parent = out.parent
    else:
        parent = out.parent
    anc = parent
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        return f"{what} {out}: {anc} is a file, not a folder; choose another {what}"
    if anc.exists() and not os.access(anc, os.W_OK | os.X_OK):
        return f"{what} {out}: the folder {anc} is not writable here; choose another {what} in a folder you can write to"
    return None


def make_parents(path: Path) -> list[Path]:
    """Create the missing parents of `path` (not `path`); returns those created, deepest last, for
    remove_created."""
    made = []
    missing = []
    p = Path(path).parent
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        p.mkdir()
        made.append(p)
    return made


def remove_created(made: list[Path]) -> None:
    """Remove the parents make_parents created, where still empty (never anything else)."""
    for p in reversed(made):
        try:
            p.rmdir()
        except OSError:
            break


__all__ = ["LIMITS", "Estimate", "EstimateError", "geometry_estimate", "lv_grid_size", "lv_mesh_size",
           "make_parents", "mesh_estimate", "out_problem", "remove_created", "run_estimate"]
