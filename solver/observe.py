"""Observation operators for `simulate(..., observe=...)`: evaluated inside the compiled loop at
the save times only, so full fields are never stored.

Observers are Modules `(t, state, params) -> pytree` (`AbstractObserver`): their arrays (the
space's, probe nodes and weights) are data, arguments of the compiled program, so a new observer
of the same kind (other probes, another mesh of the same size) reuses it without retracing. A
plain function f(c, t) (or f(c, t, b) with binding) is accepted too; being a new Python object
each time, a new one compiles a new program.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from .model import Model


class State(eqx.Module):
    """The state of a simulation: the free field c (S, *shape) and, with ECM binding, the bound one b."""

    c: jax.Array
    b: jax.Array | None = None


class AbstractObserver(eqx.Module):
    @abc.abstractmethod
    def __call__(self, t, state: State, params):
        """What to save at time t."""


class RegionAmounts(AbstractObserver):
    """(S, R) amount (pg) of each factor in each region."""

    space: eqx.Module

    def __call__(self, t, state, params):
        return self.space.region_amounts(state.c)


class TissueAmounts(AbstractObserver):
    """(S, R) tissue content (free + bound, what an ELISA of a homogenate measures), pg."""

    space: eqx.Module

    def __call__(self, t, state, params):
        return self.space.region_amounts(state.c if state.b is None else state.c + state.b)


class RegionMeans(AbstractObserver):
    """(S, R) volume-mean concentration (pg/mm^3 = ng/mL) in each region."""

    space: eqx.Module

    def __call__(self, t, state, params):
        c = state.c
        vol = self.space.region_volumes().astype(c.dtype)
        return self.space.region_amounts(c) / jnp.where(vol > 0, vol, 1.0)


class Probes(AbstractObserver):
    """(S, P) concentration interpolated at points: nodes (P, k) and weights (P, k) from
    `disc.locate(points)` (P1 weights on meshes, trilinear over tissue voxels on grids)."""

    nodes: jax.Array
    weights: jax.Array

    def __call__(self, t, state, params):
        c = state.c
        flat = c.reshape(c.shape[0], -1)
        return jnp.sum(flat[:, self.nodes] * self.weights[None].astype(c.dtype), axis=-1)


class RegionStats(AbstractObserver):
    """(S, R, 4) per factor and region: volume mean (pg/mm^3), largest nodal value among the nodes
    that touch the region (0 for an empty region), free amount and bound amount (pg), from the region
    volume per node `weights` (N, R). With `fields=True` the output is a dict {"stats", "c", "b"} that
    also holds the flat fields (S, N) (b: None without binding), so that a caller can keep the fields
    on the device and move only the save times it writes (`Solution.ys["c"][rows]`)."""

    weights: jax.Array
    fields: bool = eqx.field(static=True, default=False)

    def __call__(self, t, state, params):
        c = state.c.reshape(state.c.shape[0], -1)
        w = self.weights.astype(c.dtype)
        vol = jnp.sum(w, axis=0)
        amounts = c @ w
        member = self.weights > 0
        top = jnp.max(jnp.where(member[None], c[:, :, None], -jnp.inf), axis=1)
        top = jnp.where(jnp.any(member, axis=0)[None], top, 0.0)
        b = None if state.b is None else state.b.reshape(c.shape)
        bound = jnp.zeros_like(amounts) if b is None else b @ w
        stats = jnp.stack([amounts / jnp.where(vol > 0, vol, 1.0), top, amounts, bound], axis=-1)
        return {"stats": stats, "c": c, "b": b} if self.fields else stats


def region_amounts(model: Model) -> RegionAmounts:
    return RegionAmounts(model.space)


def tissue_amounts(model: Model) -> TissueAmounts:
    return TissueAmounts(model.space)


def region_means(model: Model) -> RegionMeans:
    return RegionMeans(model.space)


def probes(model: Model, disc, points) -> Probes:
    nodes, w = disc.locate(points)
    return Probes(jnp.asarray(nodes), jnp.asarray(w))
