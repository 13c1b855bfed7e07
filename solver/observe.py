"""Observation operators for `simulate(..., observe=...)`: evaluated inside the
compiled loop at the save times only, so full fields are never stored."""

from __future__ import annotations

import jax.numpy as jnp

from .model import Model


def region_amounts(model: Model):
    """observe(c, t) -> (S, R) amount (pg) of each factor in each region."""
    space = model.space
    return lambda c, t: space.region_amounts(c)


def tissue_amounts(model: Model):
    """observe(c, t, b=None) -> (S, R) tissue content (free + bound, what an ELISA of a homogenate
    measures) of each factor in each region, pg."""
    space = model.space
    return lambda c, t, b=None: space.region_amounts(c if b is None else c + b)


def region_means(model: Model):
    """observe(c, t) -> (S, R) volume-mean concentration (pg/mm^3 = ng/mL) in each region."""
    space = model.space

    def observe(c, t):
        vol = space.region_volumes().astype(c.dtype)
        return space.region_amounts(c) / jnp.where(vol > 0, vol, 1.0)

    return observe


def probes(model: Model, disc, points):
    """observe(c, t) -> (S, P) concentration interpolated at points (P1 weights on meshes,
    trilinear weights over the surrounding tissue voxels on grids)."""
    nodes, w = disc.locate(points)
    nodes, w = jnp.asarray(nodes), jnp.asarray(w)

    def observe(c, t):
        flat = c.reshape(c.shape[0], -1)
        return jnp.sum(flat[:, nodes] * w[None].astype(c.dtype), axis=-1)

    return observe
