"""The numbers of a model: a traced pytree, apart from the static `Model`."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .profiles import AbstractProfile


def _arr(x):
    """Floating arrays keep their dtype; anything else becomes the default float."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


class AbstractReaction(eqx.Module):
    """A saturable loss of the free factor, u(c) = s(c) c >= 0 with slope u'(c) >= 0, integrated in the
    reaction sub-step (kinetics.py) with its own budget entry. A new reaction is one final subclass
    (its numbers as fields, `coefficient`, `slope`, `budget`), its key in `Model.params` and the
    scenario, and its fit parameters."""

    #: the budget entry its losses go to
    budget: ClassVar[str]

    @abc.abstractmethod
    def coefficient(self, space, c):
        """s(c) = u(c) / c on fields (S, *shape), finite at c = 0."""

    @abc.abstractmethod
    def slope(self, space, c):
        """u'(c) on fields (S, *shape)."""

    def _col(self, space, x):
        return x.reshape((-1,) + (1,) * len(space.shape))


class Saturable(AbstractReaction):
    """Michaelis-Menten uptake V_sr c / (Km_s + c): Vmax (S, R) pg/mm^3/s by region, Km (S,) pg/mm^3."""

    Vmax: jax.Array = eqx.field(converter=_arr)
    Km: jax.Array = eqx.field(converter=_arr)
    budget: ClassVar[str] = "taken_up"

    def coefficient(self, space, c):
        return space.per_node(self.Vmax) / (self._col(space, self.Km) + c)

    def slope(self, space, c):
        km = self._col(space, self.Km)
        return space.per_node(self.Vmax) * km / (km + c) ** 2


class Hill(AbstractReaction):
    """Hill-type receptor uptake V_sr c^n / (K_s^n + c^n) (cooperative receptor binding followed by
    internalisation): Vmax (S, R) pg/mm^3/s by region, K (S,) pg/mm^3 the half-saturation
    concentration, n (S,) >= 1 the Hill coefficient (n = 1 is Michaelis-Menten)."""

    Vmax: jax.Array = eqx.field(converter=_arr)
    K: jax.Array = eqx.field(converter=_arr)
    n: jax.Array = eqx.field(converter=_arr)
    budget: ClassVar[str] = "internalised"

    def _parts(self, space, c):
        K, n = self._col(space, self.K), self._col(space, self.n)
        x = jnp.maximum(c, 0.0) / K                     # c / K >= 0
        xn1 = jnp.where(x > 0, x, 1.0) ** (n - 1.0)     # (c / K)^(n - 1), no 0^0 or log 0 in derivatives
        xn1 = jnp.where(x > 0, xn1, jnp.where(n == 1.0, 1.0, 0.0))
        return space.per_node(self.Vmax), K, n, x, xn1

    def coefficient(self, space, c):
        V, K, n, x, xn1 = self._parts(space, c)
        return V / K * xn1 / (1.0 + x * xn1)            # V c^(n-1) / (K^n + c^n)

    def slope(self, space, c):
        V, K, n, x, xn1 = self._parts(space, c)
        return V / K * n * xn1 / (1.0 + x * xn1) ** 2   # V n K^n c^(n-1) / (K^n + c^n)^2


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
    hill:      Hill-type receptor uptake (Hill) or None.
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
    hill: Hill | None = None

    @property
    def reactions(self) -> tuple:
        """The saturable uptake reactions present, in a fixed order."""
        return tuple(r for r in (self.saturable, self.hill) if r is not None)

    def __check_init__(self):
        for p in self.sources:
            if not isinstance(p, AbstractProfile):
                raise TypeError(f"Params.sources holds profiles (Constant, Exponential, ...), got {type(p).__name__}")
