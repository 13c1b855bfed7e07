"""Plane sections of a tetrahedral mesh: the triangles of the cut, with node values interpolated
linearly along the cut edges (exact for P1 fields), in the plane's own coordinates."""

from __future__ import annotations

import numpy as np

_EDGES = np.array([(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)])


def plane_basis(normal) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, u, v): the unit normal and an orthonormal in-plane basis; for a horizontal plane u = x, v = y,
    for a vertical one v = z (up)."""
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    up = np.array([0.0, 0.0, 1.0])
    if abs(n @ up) > 0.9:        # a short-axis (horizontal) plane: x to the right, y up
        u = np.array([1.0, 0.0, 0.0]) - n[0] * n
    else:                        # a long-axis (vertical) plane: z up
        u = np.cross(up, n)
    u = u / np.linalg.norm(u)
    return n, u, np.cross(n, u)


def cut_tetrahedra(points, cells, origin, normal, values=None):
    """The cut of a tetrahedral mesh by the plane through `origin` with `normal`.

    Returns (xy (3T, 2) in-plane coordinates (mm) of the corners of T triangles, listed triangle by
    triangle; cell (T,) the tetrahedron each comes from; vals (K, 3T) the node values `values`
    (K, N) interpolated linearly along the cut edges, or None)."""
    points = np.asarray(points, float)
    cells = np.asarray(cells)
    n, u, v = plane_basis(normal)
    d = (points - np.asarray(origin, float)) @ n
    d = np.where(d == 0.0, 1e-12 * (np.ptp(points, axis=0).max() or 1.0), d)   # no corner exactly on the plane
    dc = d[cells]                                                               # (M, 4)
    pos = (dc > 0).sum(axis=1)
    keep = (pos > 0) & (pos < 4)
    cells, dc = cells[keep], dc[keep]
    cell_ids = np.flatnonzero(keep)
    a, b = cells[:, _EDGES[:, 0]], cells[:, _EDGES[:, 1]]                     # (M, 6) edge ends
    da, db = dc[:, _EDGES[:, 0]], dc[:, _EDGES[:, 1]]
    crosses = (da > 0) != (db > 0)
    t = np.where(crosses, da / np.where(crosses, da - db, 1.0), 0.0)           # along a -> b
    xyz = points[a] + t[..., None] * (points[b] - points[a])                   # (M, 6, 3)
    k = crosses.sum(axis=1)                                                    # 3 or 4 corners
    # corners of each polygon in angular order around its centre, in plane coordinates
    uv = np.stack([xyz @ u, xyz @ v], axis=-1)                                 # (M, 6, 2)
    centre = (uv * crosses[..., None]).sum(axis=1) / k[:, None]
    ang = np.where(crosses, np.arctan2(uv[..., 1] - centre[:, None, 1], uv[..., 0] - centre[:, None, 0]), np.inf)
    order = np.argsort(ang, axis=1)                                            # crossing edges first, by angle
    tri = [(order[:, 0], order[:, 1], order[:, 2])]
    quad = k == 4
    tri_cells = [np.arange(len(cells))]
    if quad.any():
        q = np.flatnonzero(quad)
        tri.append((order[q, 0], order[q, 2], order[q, 3]))
        tri_cells.append(q)
    rows = np.concatenate(tri_cells)
    corners = np.concatenate([np.stack(c, axis=1) for c in tri])               # (T, 3) edge slots
    xy = uv[rows[:, None], corners].reshape(-1, 2)
    vals = None
    if values is not None:
        values = np.atleast_2d(np.asarray(values, float))
        ta = t[rows[:, None], corners]
        va = values[:, a[rows[:, None], corners]]
        vb = values[:, b[rows[:, None], corners]]
        vals = (va + ta[None] * (vb - va)).reshape(values.shape[0], -1)
    return xy, cell_ids[rows], vals


def cut_area(xy) -> float:
    """Total area (mm^2) of the cut triangles."""
    p = xy.reshape(-1, 3, 2)
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return float(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum())
