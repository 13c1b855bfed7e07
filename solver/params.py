"""The numbers of a model: a traced pytree, apart from the static `Model`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .profiles import AbstractProfile


def _arr(x):
    """Floating arrays keep their dtype; anything else becomes the default float."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


class Saturable(eqx.Module):
    """Michaelis-Menten uptake V_sr c / (Km_s + c): Vmax (S, R) pg/mm^3/s by region, Km (S,) pg/mm^3."""

    Vmax: jax.Array = eqx.field(converter=_arr)
    Km: jax.Array = eqx.field(converter=_arr)


class Binding(eqx.Module):
    """ECM binding: kon (S,) mm^3/pg/s, koff (S,) 1/s, capacity B (S, R) pg/mm^3 by region,
    kdeg (S,) 1/s degradation of the bound factor. K_D = koff / kon."""

    kon: jax.Array = eqx.field(converter=_arr)
    koff: jax.Array = eqx.field(converter=_arr)
    capacity: jax.Array = eqx.field(converter=_arr)
    kdeg: jax.Array = eqx.field(converter=_arr)


class Params(eqx.Module):
    """Parameters in internal units (mm, s, pg).

    D:         (S, R) diffusivity of factor s in region r, mm^2/s.
    decay:     (S,) first-order loss k_s, 1/s (ln 2 / half-life).
    uptake:    (S, R) linear uptake u_sr by region, 1/s.
    clearance: (S, R) microvascular (capillary) clearance a_sr by region, 1/s.
    robin:     (S, B) flux coefficients beta_sb (mm/s) to an exterior at zero concentration
               through the tagged boundaries of a mesh (-D dc/dn = beta c), or None.
    saturable: Michaelis-Menten uptake (Saturable) or None.
    binding:   ECM binding with a bound pool (Binding) or None.
    sources:   one profile per source of the model (rates in pg/s per site).

    Every leaf is an array, so one compiled program serves every value and
    `jax.grad` / `jax.vmap` apply to Params directly.
    """

    D: jax.Array = eqx.field(converter=_arr)
    decay: jax.Array = eqx.field(converter=_arr)
    uptake: jax.Array = eqx.field(converter=_arr)
    clearance: jax.Array | None = eqx.field(converter=lambda x: None if x is None else _arr(x), default=None)
    robin: jax.Array | None = eqx.field(converter=lambda x: None if x is None else _arr(x), default=None)
    saturable: Saturable | None = None
    binding: Binding | None = None
    sources: tuple = ()

    def __check_init__(self):
        for p in self.sources:
            if not isinstance(p, AbstractProfile):
                raise TypeError(f"Params.sources holds profiles (Constant, Exponential, ...), got {type(p).__name__}")
