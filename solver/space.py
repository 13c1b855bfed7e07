"""The interface every space (voxel grid, simplicial mesh) gives the solver: operators, masses,
totals and region maps. Fields have shape (S, *shape): one row per factor."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp


def lead_ones(x, ndim: int):
    """x with unit axes in front up to rank ndim, so that it broadcasts against a field of that rank
    as it stands (a 0-d x stays 0-d: it broadcasts already)."""
    x = jnp.asarray(x)
    return x.reshape((1,) * (ndim - x.ndim) + x.shape) if x.ndim else x


class AbstractSpace(eqx.Module):
    shape: eqx.AbstractVar[tuple]
    n_regions: eqx.AbstractVar[int]
    kind: ClassVar[str]

    @abc.abstractmethod
    def conductances(self, D):
        """The diffusion operator (a Module of this space's kind, no sink) for diffusivities D (S, R)."""

    @abc.abstractmethod
    def with_sink(self, g, r):
        """The operator g with the loss rate r (broadcastable to a field) added to its diagonal."""

    @abc.abstractmethod
    def sink(self, g):
        """The operator's sink (field) or None."""

    @abc.abstractmethod
    def apply(self, c, g):
        """L c for fields c."""

    def apply_transpose(self, y, g):
        """L^T y. L is self-adjoint in the inner product of `cg_mass` m (the implicit steps' CG needs
        it), so L^T y = m L(y / m): a forward application, where JAX's own transpose of a mesh
        operator's gathers is a scatter-add (1.5-2x slower in reverse mode on CPU)."""
        m = self.cg_mass(y.dtype)
        m = lead_ones(m, y.ndim)
        return m * self.apply(y / m, g)

    @abc.abstractmethod
    def diagonal(self, g):
        """The diagonal of -L (broadcastable to a field): Jacobi preconditioning."""

    @abc.abstractmethod
    def rate_bound(self, g):
        """An upper bound (S,) on the spectral radius of -L (Gershgorin)."""

    @abc.abstractmethod
    def per_node(self, values):
        """Region-wise values (S, R) as a field."""

    @abc.abstractmethod
    def per_boundary(self, values):
        """Boundary coefficients (S, B) in mm/s as nodal loss rates (S, N)."""

    @abc.abstractmethod
    def mass(self, dtype):
        """Control volume per node, broadcastable to a field."""

    @abc.abstractmethod
    def cg_mass(self, dtype):
        """The mass that symmetrises the implicit steps' matrices."""

    @abc.abstractmethod
    def total(self, c):
        """Amount (S,) of each factor."""

    @abc.abstractmethod
    def region_amounts(self, c):
        """Amount (S, R) of each factor in each region."""

    @abc.abstractmethod
    def region_volumes(self):
        """Volume (R,) of each region."""
