"""Where sources put their amount: point sources at coordinates and volumetric fields.

A point source at x spreads an amount Q over the nodes of the cell containing
x with P1 (barycentric) weights phi_i(x) (mesh) or into the voxel containing x
(grid): c_i += Q phi_i(x) / m_i.  A field source spreads Q
in proportion to a non-negative density rho: c_i += Q rho_i / sum_j m_j rho_j.
The numbers (rates, timings) live in the matching profile in `Params.sources`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


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
