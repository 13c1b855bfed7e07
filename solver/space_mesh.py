"""Lumped P1 finite elements on triangle/tetrahedron meshes.

(L c)_i = -(1/m_i) (K c)_i = sum_j w_ij c_j - d_i c_i,
w_ij = g_e / m_i for the edge e = (i, j), d_i = sum_j w_ij,
g_e = sum_r D_r G_{e,r}  (unit-diffusivity couplings per region, from geometry);
operator="m-matrix" uses max(g_e, 0) instead, per factor for its own D (an M-matrix on
meshes with obtuse cells: geometry.discretise.positive_conductances).

w and d are formed once per simulation, so a pass is one gather of c and one
reduction. Two layouts of the same operator, measured side by side (benchmarks/README.md):
"csr" (the default): directed edges sorted by row, a gather and a sorted `segment_sum`;
"padded": a dense neighbour table padded with the node itself and zero weights, stored
slot-major (K, N), so that a pass is K contiguous gathers summed in one fused loop. The
padded table is 2-3.5x faster in forward runs on CPU (1.4-1.6x SciPy's CSR matvec at 205k
nodes), but JAX's derivatives of its gathers are scatter-adds: reverse-mode gradients
(RKL2, checkpointed) took 1.8x and the forward-mode Jacobians of a Levenberg-Marquardt fit
1.5x the CSR layout's time, so CSR stays the default (the app fits and designs); pass
solver.Model(..., layout="padded") for forward-only work from Python.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from paracrine.geometry.discretise import positive_conductances

from .space import AbstractSpace
from .operators import MeshOperator

LAYOUTS = ("csr", "padded")
#: largest flat index factors x nodes that the padded layout's gathers address in int32 (past it each
#: factor is gathered on its own)
FLAT_INDEX_MAX = 2 ** 31 - 1


def _weighted_gather(w, c, nbr):
    """sum_k w[:, k] * c[:, nbr[k]] on the slot-major padded table: K gathers along N (unrolled), which
    XLA fuses into one loop over the nodes with contiguous streams of w and nbr; one (S, N, K)
    gather and a row sum was 1.2-2x slower (benchmarks/README.md, operator.py). The field is
    indexed flat with (S, N) indices, so that each gather's output has the field's own layout (a
    gather c[:, idx] puts the index axis first and, transposed back, is not fused with its
    consumer inside CG loops). Differentiated by JAX (reverse mode makes the gathers scatter-adds);
    a hand-given transpose by gathers (W^T y = m W (y / m)) was tried, 1.1-1.9x faster in first
    derivatives, and dropped: the custom_linear_solve that carried it does not differentiate what
    its solves close over, so second derivatives w.r.t. the diffusivities came out wrong."""
    S, N = c.shape
    if S * N > FLAT_INDEX_MAX:
        # the flat (S, N) index would overflow int32: gather each factor's own row instead
        w = jnp.broadcast_to(w, (S,) + w.shape[1:])
        return jax.vmap(lambda wk, ck: sum(wk[k] * ck[nbr[k]] for k in range(nbr.shape[0])))(w, c)
    idx = (jnp.arange(S, dtype=nbr.dtype) * N)[:, None] + nbr[:, None, :]     # (K, S, N)
    cf = c.reshape(-1)
    return sum(w[:, k] * cf[idx[k]] for k in range(nbr.shape[0]))


class MeshSpace(AbstractSpace):
    """Arrays and operators of a mesh; fields have shape (S, N)."""

    mass_: jax.Array          # (N,)
    weights: jax.Array        # (N, R) share of m_i in region r
    couplings: jax.Array      # (E, R)
    csr_row: jax.Array
    csr_col: jax.Array
    csr_edge: jax.Array
    nbr: jax.Array            # (K, N): slot k of every node's neighbour table
    nbr_edge: jax.Array       # (K, N)
    boundary_weights: jax.Array  # (N, B) lumped boundary area / m_i
    layout: str = eqx.field(static=True)
    shape: tuple = eqx.field(static=True)
    n_regions: int = eqx.field(static=True)
    operator: str = eqx.field(static=True, default="p1")

    kind = "mesh"

    @classmethod
    def from_discretisation(cls, disc, *, layout: str = "csr", operator: str = "p1", dtype=None) -> "MeshSpace":
        if layout not in LAYOUTS:
            raise ValueError(f"mesh operator layout {layout!r} is not one of {LAYOUTS}")
        dtype = dtype or jnp.result_type(float)
        f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
        i = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
        return cls(mass_=f(disc.mass), weights=f(disc.mass_region / disc.mass[:, None]),
                   couplings=f(disc.couplings), csr_row=i(disc.csr_row), csr_col=i(disc.csr_col),
                   csr_edge=i(disc.csr_edge), nbr=i(disc.nbr.T), nbr_edge=i(disc.nbr_edge.T),
                   boundary_weights=f(disc.boundary_area / disc.mass[:, None]), layout=layout,
                   shape=(disc.n_nodes,), n_regions=len(disc.regions), operator=operator)

    def per_node(self, values):
        """Region-wise values (S, R) as nodal values (S, N): sum_r w_ir v_r."""
        return jnp.asarray(values) @ self.weights.T

    def per_boundary(self, values):
        """Boundary rates (S, B) in mm/s as nodal loss rates (S, N): sum_b beta_b A_ib / m_i (1/s)."""
        return jnp.asarray(values) @ self.boundary_weights.T

    def with_sink(self, g, r):
        """Add a nodal loss rate r (S, N) to the operator's diagonal: L c - r c."""
        return g.with_sink(jnp.broadcast_to(r, g.d.shape))

    def sink(self, g):
        """The diagonal sink of the operator (S, N), or None."""
        return g.sink

    def conductances(self, D):
        """MeshOperator(w, d, None): per-layout weights w_ij = g_e / m_i, (S, 2E) or (S, K, N), the diagonal
        d = row sums of w (S, N), and no sink (see `with_sink`); g_e -> max(g_e, 0) with the
        "m-matrix" operator."""
        g = positive_conductances(D @ self.couplings.T, self.operator)  # (S, E)
        if self.layout == "csr":
            w = g[:, self.csr_edge] / self.mass_[self.csr_row]
        else:
            w = jnp.pad(g, ((0, 0), (0, 1)))[:, self.nbr_edge] / self.mass_
        return MeshOperator(w, self._row_sum(w))

    def _row_sum(self, w):
        if self.layout == "csr":
            return jax.vmap(lambda wk: jax.ops.segment_sum(wk, self.csr_row, self.shape[0],
                                                           indices_are_sorted=True))(w)
        return jnp.sum(w, axis=1)

    def apply(self, c, g):
        w, d = g.w, g.d
        if self.layout == "csr":
            n = self.shape[0]
            gathered = jax.vmap(lambda ck, wk: jax.ops.segment_sum(wk * ck[self.csr_col], self.csr_row, n,
                                                                    indices_are_sorted=True))(c, w)
        else:
            gathered = _weighted_gather(w, c, self.nbr)
        return gathered - d * c

    def rate_bound(self, g):
        """Upper bound (S,) on the spectral radius of M^{-1} K (Gershgorin: |d_i| + sum_j |w_ij|)."""
        w, d = g.w, g.d
        return jnp.max(jnp.abs(d) + self._row_sum(jnp.abs(w)), axis=1)

    def diagonal(self, g):
        return g.d

    def mass(self, dtype):
        return self.mass_.astype(dtype)

    def total(self, c):
        # a reduction, not a dot: XLA fuses it with the product that feeds it (a dot is a kernel of its
        # own), which takes several kernels out of each step (benchmarks/hlo.py)
        return jnp.sum(c * self.mass_, axis=-1)

    def region_amounts(self, c):
        """Amount of each factor in each region, (S, R): sum_i m_ir c_i."""
        return c @ (self.weights * self.mass_[:, None])

    def region_volumes(self):
        return self.mass_ @ self.weights

    def cg_mass(self, dtype):
        return self.mass_.astype(dtype)
