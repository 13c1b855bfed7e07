"""Free parameters over `solver.Params`: how to read and write one number, and the unconstrained
coordinate an optimiser moves in.

    k = fitting.parameter("decay", lambda p: p.decay, index=0, unit="1/s")          # log coordinate
    f = fitting.parameter("retention", lambda p: p.sources[0].retention, index=0,
                          transform=fitting.Logit())                                 # a fraction

A `FreeParameter(name, get, set, transform, bounds, unit)` is plain data: `get(params)` gives the
value, `set(params, value)` a new Params with it written in, `transform` maps the value to the
coordinate z (log for positive quantities, logit for fractions, identity otherwise) and back,
`bounds` (natural units) is the box an optimiser keeps to (None: a default around the start,
see `default_bounds`). The same objects serve calibration (`fitting.Problem`), sweeps
(`fitting.ensemble`) and design; this module knows nothing of scenario files.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Callable, ClassVar

import equinox as eqx
import jax.numpy as jnp


class AbstractTransform(eqx.Module):
    """value <-> unconstrained coordinate z; `domain` says which values are allowed."""

    @abc.abstractmethod
    def to_z(self, v): ...

    @abc.abstractmethod
    def from_z(self, z): ...

    @abc.abstractmethod
    def allowed(self, v) -> bool: ...

    domain: eqx.AbstractClassVar[str]
    kind: eqx.AbstractClassVar[str]

    def default_bounds(self, v: float) -> tuple[float, float]:
        """The box around a start v when none is given."""
        return (v / 1e4, v * 1e4)


class Log(AbstractTransform):
    """z = log v for positive quantities (rates, diffusivities, doses, half-lives)."""

    domain: ClassVar[str] = "> 0"
    kind: ClassVar[str] = "positive"

    def to_z(self, v):
        return jnp.log(jnp.maximum(v, 1e-300))

    def from_z(self, z):
        return jnp.exp(z)

    def allowed(self, v):
        return math.isfinite(v) and v > 0


class Logit(AbstractTransform):
    """z = log(v / (1 - v)) for fractions in (0, 1) (retention, fast fraction)."""

    domain: ClassVar[str] = "in (0, 1)"
    kind: ClassVar[str] = "fraction"

    def to_z(self, v):
        v = jnp.clip(v, 1e-12, 1 - 1e-12)
        return jnp.log(v) - jnp.log1p(-v)

    def from_z(self, z):
        return 1.0 / (1.0 + jnp.exp(-z))

    def allowed(self, v):
        return math.isfinite(v) and 0 < v < 1

    def default_bounds(self, v):
        return (1e-6, 1 - 1e-6)


class Identity(AbstractTransform):
    """z = v for quantities of either sign (a time shift, a coordinate)."""

    domain: ClassVar[str] = "finite"
    kind: ClassVar[str] = "real"

    def to_z(self, v):
        return jnp.asarray(v)

    def from_z(self, z):
        return z

    def allowed(self, v):
        return math.isfinite(v)

    def default_bounds(self, v):
        return (v - 1e4 * max(abs(v), 1.0), v + 1e4 * max(abs(v), 1.0))


TRANSFORMS = {"log": Log, "logit": Logit, "identity": Identity}


@dataclasses.dataclass(frozen=True, eq=False)
class FreeParameter:
    """One number of a Params tree that an optimiser may change.

    Compared and hashed by identity: a compiled fit is reused as long as the same FreeParameter
    objects are used (build them once, change data and starts freely)."""

    name: str
    get: Callable                   # Params -> scalar
    set: Callable                   # (Params, scalar) -> Params
    transform: AbstractTransform = Log()
    bounds: tuple | None = None     # (low, high) in natural units, or None for the default box
    unit: str = ""

    #: what get and set act on: "params" (solver.Params) or "model" (solver.Model: a site position)
    on: ClassVar[str] = "params"

    @property
    def kind(self) -> str:
        return self.transform.kind

    def to_z(self, v):
        return self.transform.to_z(v)

    def from_z(self, z):
        return self.transform.from_z(z)

    def box(self, start: float, bounds=None) -> tuple[float, float]:
        """(low, high) for a start value: `bounds` if given, else self.bounds, else the transform's
        default around the start; checked (low < high, both allowed, the start inside)."""
        lo, hi = bounds if bounds is not None else (self.bounds or self.transform.default_bounds(start))
        lo, hi = float(lo), float(hi)
        closed = {"positive": lo >= 0, "fraction": 0 <= lo and hi <= 1, "real": True}[self.kind]
        if not (lo < hi and closed and math.isfinite(lo) and math.isfinite(hi) and lo <= start <= hi):
            raise ValueError(f"bounds for {self.name} = ({lo:g}, {hi:g}); allowed: low < high, both "
                             f"{self.transform.domain} or at its edge, around the start {start:g}")
        return lo, hi


def parameter(name: str, where: Callable, index=(), *, transform="log", bounds=None, unit: str = "",
              scale: Callable | None = None) -> FreeParameter:
    """A FreeParameter for the element `index` of the array leaf `where(params)`.

    index=() takes a scalar leaf; an index with slices (e.g. `(0, slice(None))`) sets every element
    it selects to one value and reads the first. transform: "log", "logit", "identity" or an
    AbstractTransform."""
    if isinstance(transform, str):
        if transform not in TRANSFORMS:
            raise ValueError(f"transform {transform!r}; allowed: {list(TRANSFORMS)} or an AbstractTransform")
        transform = TRANSFORMS[transform]()
    idx = index if isinstance(index, tuple) else (index,)

    def get(p):
        a = jnp.asarray(where(p))[idx]
        return a.reshape(-1)[0] if a.ndim else a

    def set_(p, v):
        leaf = where(p)
        return eqx.tree_at(where, p, jnp.asarray(leaf).at[idx].set(jnp.asarray(v, jnp.asarray(leaf).dtype)))

    return FreeParameter(name, get, set_, transform, bounds, unit)


@dataclasses.dataclass(frozen=True, eq=False)
class ModelControl(FreeParameter):
    """A number of the Model rather than of its Params (a site coordinate of a `solver.MovableSource`):
    get(model) -> scalar, set(model, value) -> Model. Design takes it; calibration does not."""

    on: ClassVar[str] = "model"
