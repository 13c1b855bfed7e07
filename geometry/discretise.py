"""Host precompute, once, in NumPy: what the solver needs from a geometry, as arrays.

Mesh (lumped P1):
    m_i     = sum_{cells e with i} |e| / (d + 1)                     lumped mass
    m_ir    = the same sum over cells of region r                    mass per region
    G_{e,r} = -sum_{cells of region r with edge e} |c| grad(phi_i).grad(phi_j)
              unit-diffusivity edge conductance per region, so that the
              stiffness with region-wise D is (K c)_i = sum_{e=(i,j)} g_e (c_i - c_j),
              g_e = sum_r D_r G_{e,r}  (linear in D: cheap and differentiable).
    A_{i,b}  = sum_{facets f of boundary b with i} |f| / d    lumped boundary area (Robin terms)
    A coupling g_e < 0 (an obtuse angle opposite the edge: a positive off-diagonal entry of K)
    breaks the M-matrix property and the discrete maximum principle; operator="m-matrix"
    replaces g_e by max(g_e, 0) (see `positive_conductances`).
Grid (cell-centred finite volumes): voxel volume, region index per voxel
(-1 outside the tissue) and 1/h_a^2; face conductances D_f / h_a^2 with the
harmonic mean D_f = 2 D_i D_j / (D_i + D_j) are formed by the solver.

Points (sources, probes) are located by P1 (barycentric) weights phi_i(x) on
meshes and by trilinear (bilinear in 2-D) weights over the 2^d surrounding
voxel centres on grids (`trilinear_weights`): both reproduce constants and
linear functions, so a source off a node or voxel centre is placed to second
order and its position is a smooth (differentiable) input within a cell.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from .errors import GeometryError
from .grid import Grid
from .mesh import Mesh


def p1_gradients(points: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the P1 basis functions, shape (m, d+1, d), and cell volumes (m,)."""
    p = points[cells]
    jac = (p[:, 1:, :] - p[:, :1, :]).transpose(0, 2, 1)  # columns p_k - p_0
    inv = np.linalg.inv(jac)  # rows are grad(phi_k), k = 1..d
    grads = np.concatenate([-inv.sum(axis=1, keepdims=True), inv], axis=1)
    dim = points.shape[1]
    vol = np.abs(np.linalg.det(jac)) / (2.0 if dim == 2 else 6.0)
    return grads, vol


OPERATORS = ("p1", "m-matrix")


def positive_conductances(g, operator: str = "p1"):
    """The conductances of the chosen operator: g itself ("p1") or max(g, 0) ("m-matrix").

    With g -> max(g, 0) every off-diagonal entry of K is <= 0 and every row sum stays 0, so
    K (+ M k with decay) is an M-matrix and the lumped scheme obeys the discrete maximum
    principle (forward Euler within its step bound, implicit Euler, the steady state). This
    is the discrete diffusion of algebraic flux correction, K* = K + D with
    d_ij = -max(k_ij, 0) for i != j and d_ii = -sum_{j != i} d_ij (Kuzmin, Shashkov &
    Svyatskiy 2009, J. Comput. Phys. 228:3448; Burman & Ern 2004, C. R. Acad. Sci. Paris
    338:641). It is applied to g = sum_r D_r G_{e,r} of the actual region-wise D, not to
    each G_{e,r} (which would also remove couplings that the other regions make positive).
    The price is consistency: where obtuse cells persist under refinement the corrected
    operator does not converge (on box meshes perturbed by 0.1-0.3 h its error stays at
    2-7 % in 2-D while P1 is second order; tests/test_mmatrix.py), so it is an option, not the
    default. On Kuhn box meshes nothing changes. Works on NumPy and JAX arrays (differentiable
    almost everywhere).
    """
    if operator not in OPERATORS:
        raise GeometryError(f"operator {operator!r} is not one of {OPERATORS}")
    return g if operator == "p1" else g * (g > 0)  # max(g, 0) for NumPy and traced JAX arrays alike


def p1_couplings(mesh: Mesh) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Regions (by tag), region index of each cell (m,), cell volumes (m,), edges (E, 2)
    with i < j, and G_{e,r} (E, R): the unit-diffusivity couplings of the module docstring."""
    n, dim = mesh.points.shape
    labels = sorted(mesh.region_names.items(), key=lambda kv: kv[1])
    regions = tuple(name for name, _ in labels)
    region_of_cell = np.searchsorted([v for _, v in labels], mesh.cell_regions)
    R = len(regions)
    grads, vol = p1_gradients(mesh.points, mesh.cells)
    pairs = list(itertools.combinations(range(dim + 1), 2))
    a, b = np.array(pairs).T
    kab = -vol[:, None] * np.einsum("mpd,mpd->mp", grads[:, a, :], grads[:, b, :])  # (m, pairs)
    i = mesh.cells[:, a]
    j = mesh.cells[:, b]
    lo, hi = np.minimum(i, j).ravel(), np.maximum(i, j).ravel()
    uniq, inv = np.unique(lo * n + hi, return_inverse=True)
    E = len(uniq)
    edges = np.stack([uniq // n, uniq % n], axis=1)
    reg = np.repeat(region_of_cell, len(pairs))
    couplings = np.bincount(inv * R + reg, kab.ravel(), E * R).reshape(E, R)
    return regions, region_of_cell, vol, edges, couplings


@dataclasses.dataclass(frozen=True, eq=False)
class MeshDiscretisation:
    mesh: Mesh
    regions: tuple
    mass: np.ndarray          # (N,)
    mass_region: np.ndarray   # (N, R)
    edges: np.ndarray         # (E, 2), i < j
    couplings: np.ndarray     # (E, R)
    csr_row: np.ndarray       # (2E,) directed edges sorted by row
    csr_col: np.ndarray
    csr_edge: np.ndarray
    nbr: np.ndarray           # (N, K) neighbours, padded with the node itself
    nbr_edge: np.ndarray      # (N, K) edge ids, padded with E (a zero conductance)
    boundaries: tuple = ()    # boundary names, ordered by tag
    boundary_area: np.ndarray | None = None  # (N, B) lumped facet area of node i on boundary b

    kind = "mesh"

    @property
    def dim(self) -> int:
        return self.mesh.dim

    @property
    def n_nodes(self) -> int:
        return self.mesh.n_nodes

    @property
    def spatial_shape(self) -> tuple:
        return (self.mesh.n_nodes,)

    @property
    def coordinates(self) -> np.ndarray:
        return self.mesh.points

    def h(self) -> float:
        """Longest edge length (mesh size)."""
        d = self.mesh.points[self.edges[:, 0]] - self.mesh.points[self.edges[:, 1]]
        return float(np.sqrt((d ** 2).sum(1)).max())

    def stiffness(self, D, *, operator: str = "p1") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """COO triplets (rows, cols, values) of K(D) for region-wise D (R,); operator="m-matrix"
        gives K* with g_e -> max(g_e, 0) (`positive_conductances`)."""
        g = positive_conductances(self.couplings @ np.asarray(D, float), operator)
        i, j = self.edges.T
        diag = np.bincount(i, g, self.n_nodes) + np.bincount(j, g, self.n_nodes)
        n = np.arange(self.n_nodes)
        return (np.concatenate([i, j, n]), np.concatenate([j, i, n]), np.concatenate([-g, -g, diag]))

    def _containing(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Index of the cell containing each point and its barycentric coordinates."""
        x = np.atleast_2d(np.asarray(x, float))
        if x.shape[1] != self.dim:
            raise GeometryError(f"points must have {self.dim} coordinates, got shape {x.shape}")
        pts, cells = self.mesh.points, self.mesh.cells
        p0 = pts[cells[:, 0]]
        inv = np.linalg.inv((pts[cells[:, 1:]] - p0[:, None, :]).transpose(0, 2, 1))
        found, weights = [], []
        for k, xk in enumerate(x):
            lam = np.einsum("mij,mj->mi", inv, xk - p0)
            lam = np.concatenate([1 - lam.sum(1, keepdims=True), lam], axis=1)
            best = int(np.argmax(lam.min(axis=1)))
            if lam[best].min() < -1e-9:
                raise GeometryError(f"point {k} at {xk.tolist()} lies outside the mesh")
            w = np.clip(lam[best], 0, None)
            found.append(best)
            weights.append(w / w.sum())
        return np.array(found), np.array(weights)

    def locate(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Nodes and P1 (barycentric) weights of the cells containing points x, (P, d+1) each."""
        cell, w = self._containing(x)
        return self.mesh.cells[cell], w

    def region_of(self, x) -> np.ndarray:
        """Index into `regions` of the cell containing each point."""
        cell, _ = self._containing(x)
        names = {v: k for k, v in self.mesh.region_names.items()}
        return np.array([self.regions.index(names[int(r)]) for r in self.mesh.cell_regions[cell]])


def _discretise_mesh(mesh: Mesh) -> MeshDiscretisation:
    if len(mesh.unreferenced):
        raise GeometryError(
            f"mesh has {len(mesh.unreferenced)} nodes that no cell uses (first {mesh.unreferenced[:5].tolist()}): "
            "they would have zero mass; call mesh.prune() first")
    n, dim = mesh.points.shape
    regions, region_of_cell, vol, edges, couplings = p1_couplings(mesh)
    R, E, k = len(regions), len(edges), dim + 1
    node_region = mesh.cells * R + region_of_cell[:, None]
    mass_region = np.bincount(node_region.ravel(), np.repeat(vol / k, k), n * R).reshape(n, R)
    row = np.concatenate([edges[:, 0], edges[:, 1]])
    col = np.concatenate([edges[:, 1], edges[:, 0]])
    eid = np.concatenate([np.arange(E), np.arange(E)])
    order = np.lexsort((col, row))
    row, col, eid = row[order], col[order], eid[order]
    deg = np.bincount(row, minlength=n)
    K = int(deg.max())
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    slot = np.arange(len(row)) - start[row]
    nbr = np.repeat(np.arange(n)[:, None], K, axis=1)
    nbr_edge = np.full((n, K), E)
    nbr[row, slot] = col
    nbr_edge[row, slot] = eid
    btags = sorted(mesh.boundary_names.items(), key=lambda kv: kv[1])
    boundary_area = np.zeros((n, len(btags)))
    if len(mesh.facets) and btags:
        f = mesh.points[mesh.facets]
        if dim == 2:
            area = np.linalg.norm(f[:, 1] - f[:, 0], axis=1)
        else:
            area = 0.5 * np.linalg.norm(np.cross(f[:, 1] - f[:, 0], f[:, 2] - f[:, 0]), axis=1)
        for b, (_, tag) in enumerate(btags):
            sel = mesh.facet_tags == tag
            np.add.at(boundary_area[:, b], mesh.facets[sel].ravel(), np.repeat(area[sel] / dim, dim))
    arrays = dict(mass=mass_region.sum(1), mass_region=mass_region, edges=edges, couplings=couplings,
                  csr_row=row, csr_col=col, csr_edge=eid, nbr=nbr, nbr_edge=nbr_edge, boundary_area=boundary_area)
    for v in arrays.values():
        v.setflags(write=False)
    return MeshDiscretisation(mesh=mesh, regions=regions, boundaries=tuple(k for k, _ in btags), **arrays)


@dataclasses.dataclass(frozen=True, eq=False)
class GridDiscretisation:
    grid: Grid
    regions: tuple
    region_index: np.ndarray  # grid shape, -1 outside the tissue
    inv_h2: tuple             # 1 / h_a^2 per axis
    homogeneous: bool         # every voxel is tissue of a single region
    boundaries = ()           # grids carry no tagged boundaries

    kind = "grid"

    @property
    def dim(self) -> int:
        return self.grid.dim

    @property
    def spatial_shape(self) -> tuple:
        return self.grid.shape

    @property
    def n_nodes(self) -> int:
        return int(np.prod(self.grid.shape))

    @property
    def tissue(self) -> np.ndarray:
        return self.region_index >= 0

    @property
    def mass(self) -> np.ndarray:
        return self.tissue * self.grid.voxel_volume

    @property
    def coordinates(self) -> np.ndarray:
        return self.grid.centres().reshape(-1, self.dim)

    def h(self) -> float:
        return float(max(self.grid.spacing))

    def _containing(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Points as (P, d) and the index (P, d) of the voxel containing each, which must be tissue."""
        x = np.atleast_2d(np.asarray(x, float))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise GeometryError(f"points must have {self.dim} coordinates, got shape {x.shape}")
        idx, inbox = containing(x, self.grid)
        for k, (xk, ik) in enumerate(zip(x, idx)):
            if not inbox[k] or self.region_index[tuple(ik)] < 0:
                raise GeometryError(f"point {k} at {xk.tolist()} lies outside the tissue of the grid; allowed: "
                                    "points inside a tissue voxel")
        return x, idx

    def locate(self, x) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices and trilinear (bilinear in 2-D) weights of the 2^d voxel centres around
        each point, (P, 2^d) each; see `trilinear_weights` for the rule."""
        x, own = self._containing(x)
        g = self.grid
        return trilinear_weights(x, origin=g.origin, spacing=g.spacing, shape=g.shape,
                                 tissue=None if self.tissue.all() else self.tissue.reshape(-1), own=own)

    def region_of(self, x) -> np.ndarray:
        """Index into `regions` of the voxel containing each point."""
        _, own = self._containing(x)
        return self.region_index[tuple(own.T)]


def voxel_faces(grid: Grid) -> tuple:
    """Face coordinates o_a + (j - 1/2) h_a, j = 0..n_a, per axis: voxel j spans [f_j, f_{j+1}).

    The voxel containing x is found by comparing x with these (no arithmetic on x, so the host
    and the traced `PointSource.trilinear` agree on ties); the box's outer faces are moved out
    by 1e-9 h so that a point on the box face is inside."""
    out = []
    for o, h, n in zip(grid.origin, grid.spacing, grid.shape):
        f = o + (np.arange(n + 1) - 0.5) * h
        f[0] -= 1e-9 * h
        f[-1] += 1e-9 * h
        out.append(f)
    return tuple(out)


def containing(x, grid: Grid, xp=np):
    """Index (P, d) of the voxel containing each point (clipped into the box) and whether the point
    lies in the box at all (P,), by comparison with `voxel_faces`. xp: numpy, or jax.numpy for
    traced points (`solver.PointSource.trilinear`)."""
    faces = voxel_faces(grid)
    idx = xp.stack([xp.clip(xp.searchsorted(xp.asarray(f, x.dtype), x[:, a], side="right") - 1, 0, len(f) - 2)
                    for a, f in enumerate(faces)], axis=1)
    inbox = xp.all(xp.stack([(x[:, a] >= f[0]) & (x[:, a] <= f[-1]) for a, f in enumerate(faces)], axis=1), axis=1)
    return idx, inbox


def trilinear_weights(x, *, origin, spacing, shape, tissue=None, own=None, xp=np):
    """Trilinear (bilinear in 2-D) spreading of points x (P, d) over voxel centres o + i h.

    With u_a = (x_a - o_a) / h_a clamped to [0, n_a - 1], i_a = min(floor(u_a), n_a - 2) and
    t_a = u_a - i_a, corner i + k (k in {0, 1}^d) gets

        w_k = prod_a (t_a if k_a = 1 else 1 - t_a),      sum_k w_k = 1,  sum_k w_k (i + k) = u.

    The clamp is the mirror image in the no-flux box face: a corner beyond the box lands on
    the edge voxel. With a tissue mask (flat, of xp's kind), corners that are not tissue lose
    their weight and the rest are renormalised, w_k tissue_k / sum_j w_j tissue_j (the amount
    is conserved); such a corner's index is replaced by the containing voxel `own` (weight 0
    there), so every index is a tissue voxel. The voxel containing x is one of the corners,
    with weight >= 2^-d, so the sum is positive whenever that voxel is tissue.
    xp: numpy on the host (`GridDiscretisation.locate`), jax.numpy for traced points
    (`solver.PointSource.trilinear`); floor carries no gradient, so the weights are smooth in x
    within a cell. Returns flat indices and weights, (P, 2^d) each.
    """
    n = np.array(shape)
    u = xp.clip((x - xp.asarray(origin, x.dtype)) * xp.asarray(1 / np.array(spacing, float), x.dtype), 0, n - 1)
    i = xp.clip(xp.floor(u), 0, np.maximum(n - 2, 0))
    t = u - i
    k = np.array(list(itertools.product((0, 1), repeat=len(n))), np.int32)   # (2^d, d), last axis fastest
    corner = xp.minimum(i.astype(np.int32)[:, None, :] + k[None], n - 1)     # (P, 2^d, d)
    w = xp.ones(corner.shape[:2], x.dtype)
    for a in range(len(n)):
        w = w * xp.where(k[None, :, a] == 1, t[:, None, a], 1 - t[:, None, a])

    def ravel(idx):
        return xp.ravel_multi_index(tuple(xp.moveaxis(idx, -1, 0)), tuple(shape), mode="clip")

    flat = ravel(corner)
    if tissue is not None:
        keep = tissue[flat]
        w = xp.where(keep, w, 0.0)
        w = w / xp.sum(w, axis=1, keepdims=True)
        flat = xp.where(keep, flat, ravel(own)[:, None])
    return flat, w


def _discretise_grid(grid: Grid) -> GridDiscretisation:
    labels = sorted(grid.region_names.items(), key=lambda kv: kv[1])
    regions = tuple(name for name, _ in labels)
    lut = np.full(int(grid.labels.max()) + 1, -1, np.int32)
    for r, (_, v) in enumerate(labels):
        lut[v] = r
    region_index = lut[grid.labels]
    region_index.setflags(write=False)
    homogeneous = bool((region_index >= 0).all() and len(regions) == 1)
    return GridDiscretisation(grid=grid, regions=regions, region_index=region_index,
                              inv_h2=tuple(1.0 / h ** 2 for h in grid.spacing), homogeneous=homogeneous)


def discretise(geometry: Mesh | Grid) -> MeshDiscretisation | GridDiscretisation:
    """Everything the solver needs from a Mesh or a Grid, computed once on the host."""
    if isinstance(geometry, Mesh):
        return _discretise_mesh(geometry)
    if isinstance(geometry, Grid):
        return _discretise_grid(geometry)
    raise GeometryError(f"discretise expects a geometry.Mesh or geometry.Grid, got {type(geometry).__name__}")
