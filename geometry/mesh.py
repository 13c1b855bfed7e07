"""Simplicial meshes: triangles (2-D) or tetrahedra (3-D) with region and boundary labels."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import numpy as np

from . import validate
from .errors import GeometryError


def signed_volumes(points: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Signed area (2-D) or volume (3-D) of each simplex: det[p1-p0, ..., pd-p0] / d!."""
    p = points[cells]
    jac = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1)
    dim = points.shape[1]
    return np.linalg.det(jac) / (2.0 if dim == 2 else 6.0)


def _as_names(names: Mapping[str, int] | None, labels: np.ndarray, what: str, default: str) -> dict[str, int]:
    present = [int(v) for v in np.unique(labels)]
    if names is None:
        if len(present) <= 1:
            return {default: present[0] if present else 0}
        return {f"{default}{v}": v for v in present}
    out = {}
    for name, label in dict(names).items():
        if not isinstance(name, str) or not name:
            raise GeometryError(f"{what} names must be non-empty strings, got {name!r}")
        out[name] = int(label)
    if len(set(out.values())) != len(out):
        raise GeometryError(f"{what} names map two names to one label: {out}")
    allowed = set(out.values())
    bad = [v for v in present if v not in allowed]
    if bad:
        idx = int(np.flatnonzero(labels == bad[0])[0])
        raise GeometryError(
            f"{what} label {bad[0]} (first at element {idx}) has no name; named labels are {sorted(allowed)}"
        )
    return out


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh:
    """A conforming simplicial mesh.

    points:        (n_nodes, dim) coordinates in mm, dim 2 or 3.
    cells:         (n_cells, dim + 1) node indices, positively oriented after construction.
    cell_regions:  (n_cells,) integer region label of each cell.
    region_names:  name -> label.
    facets:        (n_facets, dim) node indices of tagged boundary facets.
    facet_tags:    (n_facets,) integer tag of each facet.
    boundary_names: name -> tag.

    Construction validates: finite coordinates, indices in range, no duplicated nodes
    (within 1e-9 of the bounding-box diagonal: a crack), no degenerate cells
    (|volume| <= 1e-10 * longest_edge^dim), no duplicated cells, no facet shared by
    more than two cells (`geometry.validate`), labels named. Inverted cells are
    reoriented when ``orientation="fix"`` (the default) and rejected with
    ``orientation="error"``. Nodes that no cell uses are reported with a warning
    (``Mesh.prune()`` drops them).
    """

    points: np.ndarray
    cells: np.ndarray
    cell_regions: np.ndarray
    region_names: dict
    facets: np.ndarray
    facet_tags: np.ndarray
    boundary_names: dict

    def __init__(self, points, cells, cell_regions=None, region_names=None, facets=None,
                 facet_tags=None, boundary_names=None, *, orientation: str = "fix"):
        points = np.array(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] not in (2, 3):
            raise GeometryError(f"points must have shape (n, 2) or (n, 3), got {points.shape}")
        dim = points.shape[1]
        bad = np.flatnonzero(~np.all(np.isfinite(points), axis=1))
        if bad.size:
            raise GeometryError(f"point {bad[0]} has non-finite coordinates {points[bad[0]].tolist()}")
        cells = np.array(cells)
        if cells.ndim != 2 or cells.shape[1] != dim + 1:
            raise GeometryError(f"cells of a {dim}-D mesh must have shape (m, {dim + 1}), got {cells.shape}")
        if cells.size and not np.issubdtype(cells.dtype, np.integer):
            raise GeometryError(f"cells must hold integer node indices, got dtype {cells.dtype}")
        cells = cells.astype(np.int64)
        if cells.shape[0] == 0:
            raise GeometryError("mesh has no cells")
        out = (cells < 0) | (cells >= len(points))
        if out.any():
            c, k = np.argwhere(out)[0]
            n_bad = int(out.any(axis=1).sum())
            raise GeometryError(f"cell {c} refers to node {cells[c, k]}, allowed 0..{len(points) - 1} (the mesh has "
                                f"{len(points)} nodes; {n_bad} cells in all refer to missing nodes)")
        validate.duplicate_nodes(points, cells)
        vol = signed_volumes(points, cells)
        p = points[cells]
        a, b = np.triu_indices(dim + 1, 1)
        d = p[:, a] - p[:, b]
        longest = np.sqrt(np.einsum("mek,mek->me", d, d).max(axis=1))
        degenerate = np.abs(vol) <= 1e-10 * longest ** dim
        if degenerate.any():
            c = int(np.flatnonzero(degenerate)[0])
            raise GeometryError(
                f"cell {c} is degenerate: volume {vol[c]:.3e} with longest edge {longest[c]:.3e} "
                f"({int(degenerate.sum())} degenerate cells in all); allowed: cells of volume above 1e-10 x the "
                f"longest edge^{dim} (remesh, or remove the flat cells)")
        validate.cell_topology(cells, len(points))
        inverted = vol < 0
        if inverted.any():
            if orientation == "error":
                c = int(np.flatnonzero(inverted)[0])
                raise GeometryError(
                    f"cell {c} is inverted: signed volume {vol[c]:.3e} "
                    f"({int(inverted.sum())} inverted cells); pass orientation='fix' to reorient")
            if orientation != "fix":
                raise GeometryError(f"orientation must be 'fix' or 'error', got {orientation!r}")
            cells = cells.copy()
            cells[inverted, 1], cells[inverted, 2] = cells[inverted, 2].copy(), cells[inverted, 1].copy()
        if cell_regions is None:
            cell_regions = np.zeros(len(cells), dtype=np.int64)
        cell_regions = np.asarray(cell_regions)
        if cell_regions.shape != (len(cells),) or not np.issubdtype(cell_regions.dtype, np.integer):
            raise GeometryError(
                f"cell_regions must be {len(cells)} integers, got shape {cell_regions.shape} dtype {cell_regions.dtype}")
        region_names = _as_names(region_names, cell_regions, "region", "tissue")
        if facets is None:
            facets = np.zeros((0, dim), dtype=np.int64)
            facet_tags = np.zeros(0, dtype=np.int64)
        facets = np.asarray(facets).astype(np.int64).reshape(-1, dim)
        facet_tags = np.zeros(len(facets), np.int64) if facet_tags is None else np.asarray(facet_tags).astype(np.int64)
        if facet_tags.shape != (len(facets),):
            raise GeometryError(f"facet_tags must have {len(facets)} entries, got shape {facet_tags.shape}")
        out = (facets < 0) | (facets >= len(points))
        if out.any():
            f, k = np.argwhere(out)[0]
            raise GeometryError(f"facet {f} refers to node {facets[f, k]}, allowed 0..{len(points) - 1}")
        boundary_names = _as_names(boundary_names, facet_tags, "boundary", "boundary") if len(facets) else dict(boundary_names or {})
        for a in (points, cells, cell_regions, facets, facet_tags):
            a.setflags(write=False)
        set_ = object.__setattr__
        set_(self, "points", points)
        set_(self, "cells", cells)
        set_(self, "cell_regions", cell_regions)
        set_(self, "region_names", region_names)
        set_(self, "facets", facets)
        set_(self, "facet_tags", facet_tags)
        set_(self, "boundary_names", boundary_names)
        n_unref = len(self.unreferenced)
        if n_unref:
            warnings.warn(
                f"mesh has {n_unref} nodes that no cell uses (first: {self.unreferenced[:5].tolist()}); "
                "Mesh.prune() removes them", stacklevel=2)

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    @property
    def n_nodes(self) -> int:
        return self.points.shape[0]

    @property
    def n_cells(self) -> int:
        return self.cells.shape[0]

    @property
    def volumes(self) -> np.ndarray:
        return signed_volumes(self.points, self.cells)

    @property
    def unreferenced(self) -> np.ndarray:
        used = np.zeros(len(self.points), bool)
        used[self.cells.ravel()] = True
        return np.flatnonzero(~used)

    def region_volumes(self) -> dict[str, float]:
        vol = self.volumes
        return {name: float(vol[self.cell_regions == label].sum()) for name, label in self.region_names.items()}

    def prune(self) -> "Mesh":
        """The same mesh without unreferenced nodes (facets on removed nodes are dropped)."""
        used = np.zeros(self.n_nodes, bool)
        used[self.cells.ravel()] = True
        new = np.cumsum(used) - 1
        keep_f = used[self.facets].all(axis=1) if len(self.facets) else np.zeros(0, bool)
        return Mesh(self.points[used], new[self.cells], self.cell_regions, self.region_names,
                    new[self.facets[keep_f]], self.facet_tags[keep_f], self.boundary_names)

    def __repr__(self) -> str:
        kind = "triangles" if self.dim == 2 else "tetrahedra"
        return (f"Mesh({self.n_nodes} nodes, {self.n_cells} {kind}, regions={list(self.region_names)}, "
                f"boundaries={list(self.boundary_names)})")
