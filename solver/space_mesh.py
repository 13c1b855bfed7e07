"""Lumped P1 finite elements on triangle/tetrahedron meshes.

(L c)_i = -(1/m_i) (K c)_i = (1/m_i) sum_{e=(i,j)} g_e (c_j - c_i),
g_e = sum_r D_r G_{e,r}  (unit-diffusivity couplings per region, from geometry).

Two layouts of the same operator, chosen by measurement (benchmarks/README.md):
"csr": directed edges sorted by row, a gather and a sorted `segment_sum`;
"padded": a dense (N, K) neighbour table padded with the node itself.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

LAYOUTS = ("csr", "padded")


class MeshSpace(eqx.Module):
    """Arrays and operators of a mesh; fields have shape (S, N)."""

    mass_: jax.Array          # (N,)
    weights: jax.Array        # (N, R) share of m_i in region r
    couplings: jax.Array      # (E, R)
    csr_row: jax.Array
    csr_col: jax.Array
    csr_edge: jax.Array
    nbr: jax.Array
    nbr_edge: jax.Array
    layout: str = eqx.field(static=True)
    shape: tuple = eqx.field(static=True)
    n_regions: int = eqx.field(static=True)

    kind = "mesh"

    @classmethod
    def from_discretisation(cls, disc, *, layout: str = "csr", dtype=None) -> "MeshSpace":
        if layout not in LAYOUTS:
            raise ValueError(f"mesh operator layout {layout!r} is not one of {LAYOUTS}")
        dtype = dtype or jnp.result_type(float)
        f = lambda a: jnp.asarray(a, dtype)  # noqa: E731
        i = lambda a: jnp.asarray(a, jnp.int32)  # noqa: E731
        return cls(mass_=f(disc.mass), weights=f(disc.mass_region / disc.mass[:, None]),
                   couplings=f(disc.couplings), csr_row=i(disc.csr_row), csr_col=i(disc.csr_col),
                   csr_edge=i(disc.csr_edge), nbr=i(disc.nbr), nbr_edge=i(disc.nbr_edge), layout=layout,
                   shape=(disc.n_nodes,), n_regions=len(disc.regions))

    def per_node(self, values):
        """Region-wise values (S, R) as nodal values (S, N): sum_r w_ir v_r."""
        return jnp.asarray(values) @ self.weights.T

    def conductances(self, D):
        """Per-layout edge conductances divided by the row's mass, (S, 2E) or (S, N, K)."""
        g = D @ self.couplings.T  # (S, E)
        if self.layout == "csr":
            return g[:, self.csr_edge] / self.mass_[self.csr_row]
        g = jnp.pad(g, ((0, 0), (0, 1)))
        return g[:, self.nbr_edge] / self.mass_[:, None]

    def apply(self, c, g):
        if self.layout == "csr":
            n = self.shape[0]

            def one(ck, gk):
                flux = gk * (ck[self.csr_col] - ck[self.csr_row])
                return jax.ops.segment_sum(flux, self.csr_row, n, indices_are_sorted=True)

            return jax.vmap(one)(c, g)
        return jnp.sum(g * (c[:, self.nbr] - c[:, :, None]), axis=-1)

    def _row_abs_sum(self, g):
        if self.layout == "csr":
            return jax.vmap(lambda gk: jax.ops.segment_sum(gk, self.csr_row, self.shape[0],
                                                           indices_are_sorted=True))(g)
        return jnp.sum(g, axis=-1)

    def rate_bound(self, g):
        """Upper bound (S,) on the spectral radius of M^{-1} K (Gershgorin)."""
        return 2 * jnp.max(self._row_abs_sum(jnp.abs(g)), axis=1)

    def diagonal(self, g):
        return self._row_abs_sum(g)

    def mass(self, dtype):
        return self.mass_.astype(dtype)

    def total(self, c):
        return c @ self.mass_

    def region_amounts(self, c):
        """Amount of each factor in each region, (S, R): sum_i m_ir c_i."""
        return c @ (self.weights * self.mass_[:, None])

    def region_volumes(self):
        return self.mass_ @ self.weights

    def cg_mass(self, dtype):
        return self.mass_.astype(dtype)
