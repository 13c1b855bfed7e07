"""Where sources put their amount: point sources at coordinates and volumetric fields.

A point source at x spreads an amount Q over the nodes of the cell containing
x with P1 (barycentric) weights phi_i(x) (mesh) or over the 2^d voxel centres
around x with trilinear (bilinear in 2-D) weights phi_i(x) (grid), renormalised
over the tissue voxels among them: c_i += Q phi_i(x) / m_i, sum_i phi_i(x) = 1.
On grids `PointSource.trilinear` computes the same weights from a traced x, so
an output's gradient with respect to the site coordinates is available.
A field source spreads Q in proportion to a non-negative density rho:
c_i += Q rho_i / sum_j m_j rho_j.
The numbers (rates, timings) live in the matching profile in `Params.sources`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from geometry.discretise import containing, trilinear_weights


class AbstractSource(eqx.Module):
    """Static placement of a source; `add(c, amount)` adds amount (S,) to fields c (S, *shape)."""

    name: str = eqx.field(static=True)

    @abc.abstractmethod
    def add(self, c, amount): ...


class PointSource(AbstractSource):
    """One or more sites; the profile's rate applies to each site."""

    nodes: jax.Array     # (P, k) flat node / voxel indices
    weights: jax.Array   # (P, k) phi_i(x) / m_i

    @classmethod
    def at(cls, disc, points, *, name: str = "source", dtype=None) -> "PointSource":
        nodes, w = disc.locate(points)
        mass = np.asarray(disc.mass).reshape(-1)
        dtype = dtype or jnp.result_type(float)
        return cls(name=name, nodes=jnp.asarray(nodes, jnp.int32), weights=jnp.asarray(w / mass[nodes], dtype))

    @classmethod
    def trilinear(cls, disc, points, *, name: str = "source", dtype=None) -> "PointSource":
        """Sites at points (P, d) on a voxel grid, traceable: `disc.locate`'s rule (one implementation,
        `geometry.discretise.trilinear_weights`) evaluated with jax.numpy.

        phi_k(x) = prod_a (t_a or 1 - t_a) on the corners i + k of the cell of voxel centres
        around x, u = (x - origin) / h clamped to the box's centres, i = floor(u), t = u - i
        (see `geometry.discretise.trilinear_weights`), renormalised over the tissue corners;
        weights phi_k / m_k. The corner indices come from floor and carry no gradient; the
        weights are linear in each coordinate within a cell and continuous across cells, so
        `jax.grad` with respect to `points` works (one-sided at a cell face; zero in the half
        voxel next to the box face, where the clamp holds the weights). Concrete points give
        the same nodes and weights as `PointSource.at` and are checked on the host (a point
        outside the tissue raises GeometryError naming it; the weights agree to rounding, XLA's
        division differing from NumPy's in the last bit); traced points cannot be checked,
        and one whose voxel is not tissue gets NaN weights, which show in the solution.

        To differentiate a simulation with respect to site positions, put the source into
        the model inside the differentiated function and pass a planned stepper:

            def loss(x):
                src = PointSource.trilinear(disc, x, name=model.sources[j].name)
                m = eqx.tree_at(lambda m: m.sources[j], model, src)
                return f(simulate(m, params, ..., method=stepper))
            jax.grad(loss)(x0)      # stepper = solver.plan(model, params, dt=dt)
        """
        from geometry import GridDiscretisation

        if not isinstance(disc, GridDiscretisation):
            raise TypeError(f"PointSource.trilinear needs a grid discretisation, got {type(disc).__name__}; "
                            "on meshes use PointSource.at (P1 weights at fixed points)")
        dtype = dtype or jnp.result_type(float)
        x = jnp.asarray(points, dtype)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != disc.dim:
            raise ValueError(f"source {name!r}: points must have shape (P, {disc.dim}), got {x.shape}")
        if not isinstance(x, jax.core.Tracer):
            disc.locate(np.asarray(x))  # the host check, with its GeometryError
        g = disc.grid
        own, inside = containing(jax.lax.stop_gradient(x), g, xp=jnp)
        tissue = None
        if not disc.tissue.all():
            tissue = jnp.asarray(disc.tissue.reshape(-1))
            inside = inside & tissue[jnp.ravel_multi_index(tuple(own.T), g.shape, mode="clip")]
        flat, w = trilinear_weights(x, origin=g.origin, spacing=g.spacing, shape=g.shape, tissue=tissue, own=own,
                                    xp=jnp)
        w = jnp.where(inside[:, None], w, jnp.nan)
        return cls(name=name, nodes=flat.astype(jnp.int32), weights=w / g.voxel_volume)

    @property
    def n_sites(self) -> int:
        return self.nodes.shape[0]

    def add(self, c, amount):
        flat = c.reshape(c.shape[0], -1)
        inc = (amount[:, None, None] * self.weights[None]).reshape(c.shape[0], -1)  # (S, P k)
        flat = flat.at[:, self.nodes.reshape(-1)].add(inc)
        return flat.reshape(c.shape)


class FieldSource(AbstractSource):
    """Volumetric source with the spatial shape of a non-negative density field."""

    per_amount: jax.Array  # spatial shape: rho_i / sum_j m_j rho_j

    @classmethod
    def from_density(cls, disc, density, *, name: str = "field", dtype=None) -> "FieldSource":
        rho = np.asarray(density, float).reshape(disc.spatial_shape)
        if not np.all(np.isfinite(rho)) or (rho < 0).any():
            raise ValueError(f"field source {name!r}: density must be finite and >= 0 everywhere")
        mass = np.asarray(disc.mass).reshape(disc.spatial_shape)
        total = float((mass * rho).sum())
        if total <= 0:
            raise ValueError(f"field source {name!r}: density is zero over the whole tissue")
        dtype = dtype or jnp.result_type(float)
        return cls(name=name, per_amount=jnp.asarray(np.where(mass > 0, rho, 0.0) / total, dtype))

    def add(self, c, amount):
        return c + amount.reshape((-1,) + (1,) * (c.ndim - 1)) * self.per_amount[None]
