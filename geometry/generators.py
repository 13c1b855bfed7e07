"""Structured generators: box meshes (triangles / tetrahedra) and box grids."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping

import numpy as np

from .errors import GeometryError
from .grid import Grid
from .mesh import Mesh

Predicate = Callable[[np.ndarray], np.ndarray]

_SIDES = ("x", "y", "z")


def halfspace(axis: int, value: float, *, above: bool = True) -> Predicate:
    """Predicate of the points with x[axis] >= value (or < value with above=False)."""
    if above:
        return lambda x: x[..., axis] >= value
    return lambda x: x[..., axis] < value


def _check_box(lower, upper, n, dim=None):
    lower = np.atleast_1d(np.asarray(lower, float))
    upper = np.atleast_1d(np.asarray(upper, float))
    if lower.shape != upper.shape or lower.size not in (2, 3):
        raise GeometryError(f"lower and upper must both have 2 or 3 entries, got {lower.tolist()} and {upper.tolist()}")
    if not np.all(np.isfinite(lower)) or not np.all(np.isfinite(upper)) or np.any(upper <= lower):
        raise GeometryError(f"box needs finite lower < upper on every axis, got {lower.tolist()} and {upper.tolist()}")
    n = np.broadcast_to(np.asarray(n), lower.shape)
    if not np.issubdtype(n.dtype, np.integer) or np.any(n < 1):
        raise GeometryError(f"n (cells per axis) must be integers >= 1, got {np.asarray(n).tolist()}")
    return lower, upper, tuple(int(k) for k in n)


def _labels(x: np.ndarray, regions: Mapping[str, Predicate | bool] | None, what: str):
    """Region labels 1, 2, ... in the order of `regions`; later predicates win."""
    if regions is None:
        return np.ones(x.shape[:-1], np.int64), {"tissue": 1}
    labels = np.zeros(x.shape[:-1], np.int64)
    names = {}
    for k, (name, pred) in enumerate(dict(regions).items(), start=1):
        mask = np.ones(x.shape[:-1], bool) if pred is True else np.asarray(pred(x), bool)
        if mask.shape != labels.shape:
            raise GeometryError(f"region {name!r}: predicate returned shape {mask.shape}, expected {labels.shape}")
        labels[mask] = k
        names[name] = k
    return labels, names


def boundary_facets(cells: np.ndarray) -> np.ndarray:
    """Facets (dim nodes each) that belong to exactly one cell."""
    k = cells.shape[1]
    faces = np.concatenate([np.delete(cells, i, axis=1) for i in range(k)])
    key = np.sort(faces, axis=1)
    _, idx, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
    return faces[idx[counts == 1]]


def box_mesh(lower, upper, n, *, regions: Mapping[str, Predicate | bool] | None = None) -> Mesh:
    """Structured simplex mesh of the box [lower, upper] with n cells per axis.

    2-D: each square is cut into two right triangles; 3-D: each cube into the six
    tetrahedra of the Kuhn (Freudenthal) triangulation, which is conforming and
    gives the 5-/7-point stencil for P1 stiffness in the interior. `regions` maps
    a name to a predicate on cell centroids (later entries win; `True` matches
    all). Boundary facets are tagged xmin, xmax, ymin, ymax[, zmin, zmax].
    """
    lower, upper, n = _check_box(lower, upper, n)
    return tensor_mesh([np.linspace(lower[a], upper[a], n[a] + 1) for a in range(len(n))], regions=regions)


def tensor_mesh(axes, *, regions: Mapping[str, Predicate | bool] | None = None) -> Mesh:
    """Simplex mesh of the tensor-product grid with node coordinates `axes` (one increasing 1-D array
    per axis): graded spacing refines where fields vary fast, e.g. next to an injection site."""
    axes = [np.asarray(a, float) for a in axes]
    if len(axes) not in (2, 3):
        raise GeometryError(f"tensor_mesh needs 2 or 3 axes, got {len(axes)}")
    for k, a in enumerate(axes):
        if a.ndim != 1 or a.size < 2 or not np.all(np.isfinite(a)) or np.any(np.diff(a) <= 0):
            raise GeometryError(f"axis {k} must be a strictly increasing list of >= 2 finite coordinates")
    lower = np.array([a[0] for a in axes])
    upper = np.array([a[-1] for a in axes])
    n = tuple(a.size - 1 for a in axes)
    dim = len(n)
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, dim)
    strides = np.array([int(np.prod([m + 1 for m in n[a + 1:]])) for a in range(dim)])
    base = np.stack(np.meshgrid(*[np.arange(m) for m in n], indexing="ij"), axis=-1).reshape(-1, dim) @ strides
    cells = []
    for perm in itertools.permutations(range(dim)):
        offs = [0]
        for a in perm:
            offs.append(offs[-1] + strides[a])
        cells.append(base[:, None] + np.array(offs)[None, :])
    cells = np.concatenate(cells)
    centroids = points[cells].mean(axis=1)
    labels, names = _labels(centroids, regions, "cell")
    if (labels == 0).any():
        c = int(np.flatnonzero(labels == 0)[0])
        raise GeometryError(f"cell {c} at {centroids[c].round(6).tolist()} matches no region predicate of {list(names)}")
    facets = boundary_facets(cells)
    fc = points[facets].mean(axis=1)
    tags = np.full(len(facets), -1)
    bnames = {}
    for a in range(dim):
        for s, (side, val) in enumerate((("min", lower[a]), ("max", upper[a]))):
            tag = 2 * a + s + 1
            tags[np.isclose(fc[:, a], val, rtol=0, atol=1e-9 * (upper[a] - lower[a]))] = tag
            bnames[f"{_SIDES[a]}{side}"] = tag
    return Mesh(points, cells, labels, names, facets, tags, bnames)


def box_grid(lower, upper, n, *, regions: Mapping[str, Predicate | bool] | None = None,
             mask: Predicate | None = None) -> Grid:
    """Voxel grid of the box [lower, upper] with n voxels per axis.

    `regions` maps names to predicates on voxel centres (later entries win);
    `mask` selects tissue voxels (default: all). Labels are 1, 2, ... by region order.
    """
    lower, upper, n = _check_box(lower, upper, n)
    spacing = (upper - lower) / np.array(n)
    origin = lower + spacing / 2
    axes = [origin[a] + spacing[a] * np.arange(n[a]) for a in range(len(n))]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    labels, names = _labels(x, regions, "voxel")
    tissue = np.ones(n, bool) if mask is None else np.asarray(mask(x), bool)
    unmatched = tissue & (labels == 0)
    if unmatched.any():
        idx = tuple(int(i) for i in np.argwhere(unmatched)[0])
        raise GeometryError(f"voxel {idx} at {x[idx].round(6).tolist()} matches no region predicate of {list(names)}")
    labels = np.where(tissue, labels, 0)
    names = {k: v for k, v in names.items() if (labels == v).any()}
    return Grid(labels, spacing, origin, names)
