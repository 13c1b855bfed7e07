"""The static structure of a simulation: space (operators and arrays), factors, sources."""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .params import Params
from .profiles import AbstractProfile, PiecewiseLinear
from .sources import AbstractSource, FieldSource, PointSource
from .space_grid import GridSpace
from .space_mesh import MeshSpace


class Model(eqx.Module):
    """What is simulated, without the numbers.

    Built once on the host from a discretised geometry; its arrays are passed
    into the compiled program as arguments (never captured as constants) and
    its static fields (shapes, names, layout) select the program.
    """

    space: GridSpace | MeshSpace
    sources: tuple
    factors: tuple = eqx.field(static=True)
    regions: tuple = eqx.field(static=True)

    def __init__(self, disc, *, factors=("factor",), sources=(), layout: str = "csr", dtype=None):
        from geometry import GridDiscretisation, MeshDiscretisation

        dtype = dtype or jnp.result_type(float)
        if isinstance(disc, GridDiscretisation):
            self.space = GridSpace.from_discretisation(disc)
        elif isinstance(disc, MeshDiscretisation):
            self.space = MeshSpace.from_discretisation(disc, layout=layout, dtype=dtype)
        else:
            raise TypeError(f"Model needs geometry.discretise(...) output, got {type(disc).__name__}")
        factors = (factors,) if isinstance(factors, str) else tuple(factors)
        if not factors or len(set(factors)) != len(factors) or not all(isinstance(f, str) and f for f in factors):
            raise ValueError(f"factors must be distinct non-empty names, got {factors!r}")
        for s in sources:
            if not isinstance(s, AbstractSource):
                raise TypeError(f"sources holds PointSource / FieldSource, got {type(s).__name__}")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be distinct, got {names}")
        self.factors = factors
        self.regions = tuple(disc.regions)
        self.sources = tuple(sources)

    @property
    def n_factors(self) -> int:
        return len(self.factors)

    @property
    def n_regions(self) -> int:
        return len(self.regions)

    @property
    def state_shape(self) -> tuple:
        return (self.n_factors,) + tuple(self.space.shape)

    def mass(self, dtype=None):
        """Control volume per node, broadcastable to the state's spatial shape."""
        return self.space.mass(dtype or jnp.result_type(float))

    def params(self, *, D, decay=0.0, uptake=0.0, sources=()) -> Params:
        """Params with scalars and per-factor values broadcast to (S,) / (S, R)."""
        S, R = self.n_factors, self.n_regions

        def per_region(x, key):
            x = jnp.asarray(x, jnp.result_type(float))
            if x.ndim == 1 and x.shape[0] == S:
                x = x[:, None]
            try:
                return jnp.broadcast_to(x, (S, R))
            except ValueError:
                raise ValueError(f"{key} has shape {x.shape}; allowed: scalar, ({S},) per factor or ({S}, {R}) "
                                 f"per factor and region {self.regions}") from None

        decay = jnp.asarray(decay, jnp.result_type(float))
        if decay.shape not in ((), (S,)):
            raise ValueError(f"decay has shape {decay.shape}; allowed: scalar or ({S},) per factor {self.factors}")
        profiles = []
        for k, p in enumerate(sources):
            if not isinstance(p, AbstractProfile):
                raise TypeError(f"sources[{k}] must be a profile (Constant, Exponential, PiecewiseLinear)")
            if isinstance(p, PiecewiseLinear):
                p = eqx.tree_at(lambda q: q.rates, p, jnp.broadcast_to(p.rates, (S, p.times.shape[0])))
            else:
                p = eqx.tree_at(lambda q: q.rate, p, jnp.broadcast_to(p.rate, (S,)))
            profiles.append(p)
        return Params(D=per_region(D, "D"), decay=jnp.broadcast_to(decay, (S,)),
                      uptake=per_region(uptake, "uptake"), sources=tuple(profiles))

    def check(self, params: Params) -> None:
        """Host-side validation of shapes (always) and values (when concrete)."""
        S, R = self.n_factors, self.n_regions
        want = {"D": (S, R), "decay": (S,), "uptake": (S, R)}
        for key, shape in want.items():
            got = getattr(params, key).shape
            if got != shape:
                raise ValueError(f"params.{key} has shape {got}; the model needs {shape} "
                                 f"(factors {self.factors}, regions {self.regions})")
        if len(params.sources) != len(self.sources):
            raise ValueError(f"params has {len(params.sources)} source profiles; the model has "
                             f"{len(self.sources)} sources {[s.name for s in self.sources]}")
        for src, prof in zip(self.sources, params.sources):
            lead = prof.rates.shape[0] if isinstance(prof, PiecewiseLinear) else prof.rate.shape[0] if prof.rate.ndim else None
            if lead != S:
                raise ValueError(f"source {src.name!r}: rates must have one entry per factor ({S}), got {lead}")
        leaves = jax.tree.leaves(params)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return
        checks = {"D": (params.D, "finite and >= 0 (mm^2/s)", lambda v: np.isfinite(v) & (v >= 0)),
                  "decay": (params.decay, "finite and >= 0 (1/s)", lambda v: np.isfinite(v) & (v >= 0)),
                  "uptake": (params.uptake, "finite and >= 0 (1/s)", lambda v: np.isfinite(v) & (v >= 0))}
        for src, prof in zip(self.sources, params.sources):
            rate = prof.rates if isinstance(prof, PiecewiseLinear) else prof.rate
            checks[f"sources[{src.name!r}] rate"] = (rate, "finite and >= 0 (pg/s)", lambda v: np.isfinite(v) & (v >= 0))
        for key, (value, allowed, ok) in checks.items():
            v = np.asarray(value)
            bad = np.argwhere(~ok(v))
            if bad.size:
                idx = tuple(int(i) for i in bad[0])
                raise ValueError(f"params.{key}{list(idx)} = {float(v[idx])!r} ({self._where(key, idx)}); allowed: {allowed}")

    def _where(self, key, idx):
        parts = []
        if idx and key in ("D", "decay", "uptake"):
            parts.append(f"factor {self.factors[idx[0]]!r}")
            if len(idx) > 1:
                parts.append(f"region {self.regions[idx[1]]!r}")
        return ", ".join(parts) or "value"

    def total(self, c):
        return self.space.total(c)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Model({self.space.kind} {self.space.shape}, factors={self.factors}, regions={self.regions}, "
                f"sources={[s.name for s in self.sources]})")


def point_source(disc, points, *, name: str = "source") -> PointSource:
    return PointSource.at(disc, points, name=name)


def field_source(disc, density, *, name: str = "field") -> FieldSource:
    return FieldSource.from_density(disc, density, name=name)


