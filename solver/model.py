"""The static structure of a simulation: space (operators and arrays), factors, sources."""

from __future__ import annotations


import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .params import Binding, Hill, Params, Saturable
from .profiles import AbstractProfile
from .therapy import CellSecretion
from .sources import AbstractSource, FieldSource, PointSource, Source
from .space import AbstractSpace
from .space_grid import GridSpace
from .space_mesh import MeshSpace


class Model(eqx.Module):
    """What is simulated, without the numbers.

    Built once on the host from a discretised geometry; its arrays are passed
    into the compiled program as arguments (never captured as constants) and
    its static fields (shapes, names, layout) select the program.
    """

    space: AbstractSpace
    sources: tuple
    #: the profiles of sources given as Source(placement, profile): model.params' default
    profiles: tuple | None
    factors: tuple = eqx.field(static=True)
    regions: tuple = eqx.field(static=True)
    boundaries: tuple = eqx.field(static=True)

    def __init__(self, disc, *, factors=("factor",), sources=(), layout: str = "csr", operator: str = "p1",
                 dtype=None):
        """operator: "p1" (default) or "m-matrix", the P1 operator with negative couplings removed
        (an M-matrix on meshes with obtuse cells, see geometry.positive_conductances); the
        finite-volume operator of a grid is an M-matrix either way."""
        from paracrine.geometry import OPERATORS, GridDiscretisation, MeshDiscretisation

        dtype = dtype or jnp.result_type(float)
        if operator not in OPERATORS:
            raise ValueError(f"operator = {operator!r}; allowed: {list(OPERATORS)}")
        if isinstance(disc, GridDiscretisation):
            self.space = GridSpace.from_discretisation(disc)
        elif isinstance(disc, MeshDiscretisation):
            self.space = MeshSpace.from_discretisation(disc, layout=layout, operator=operator, dtype=dtype)
        else:
            raise TypeError(f"Model needs geometry.discretise(...) output, got {type(disc).__name__}")
        factors = (factors,) if isinstance(factors, str) else tuple(factors)
        if not factors or len(set(factors)) != len(factors) or not all(isinstance(f, str) and f for f in factors):
            raise ValueError(f"factors must be distinct non-empty names, got {factors!r}")
        sources = tuple(sources)
        for s in sources:
            if not isinstance(s, (AbstractSource, Source)):
                raise TypeError(f"sources holds Source(placement, profile) or placements (PointSource, FieldSource, "
                                f"...), got {type(s).__name__}")
        paired = [isinstance(s, Source) for s in sources]
        if any(paired) and not all(paired):
            raise ValueError("sources: give every source as Source(placement, profile), or only placements "
                             "(then model.params(sources=...) names their profiles), not a mixture")
        self.profiles = tuple(s.profile for s in sources) if sources and all(paired) else None
        sources = tuple(s.placement if isinstance(s, Source) else s for s in sources)
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be distinct, got {names}")
        self.factors = factors
        self.regions = tuple(disc.regions)
        self.boundaries = tuple(disc.boundaries)
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

    def params(self, *, D, decay=0.0, uptake=0.0, clearance=0.0, robin=None, saturable=None, binding=None,
               sources=None, hill=None) -> Params:
        """Params with scalars and per-factor values broadcast to (S,) / (S, R).

        sources: the sources' time profiles: {source name: profile} (paired by name; every source
        named), or omitted when the Model was built from Source(placement, profile) objects (their
        profiles; a dict then replaces some of them by name). A sequence in the Model's source
        order is accepted as well.

        robin: {boundary name: beta (mm/s), scalar or one per factor}; boundaries not named get 0.
        saturable: {"Vmax": per region, "Km": per factor}; hill: {"Vmax": per region, "K": per factor,
        "n": per factor (default 1)}, Hill-type receptor uptake; binding: {"kon", "koff", "capacity"
        (per region), "kdeg" (default 0)}; None leaves the term out of the model.
        """
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
        sources = self._profiles(sources)
        profiles = []
        for k, p in enumerate(sources):
            if not isinstance(p, AbstractProfile):
                raise TypeError(f"sources[{k}] must be a profile (Constant, Exponential, PiecewiseLinear, "
                                "CellSecretion, Bolus)")
            try:
                p = eqx.tree_at(lambda q: q.factor_values(), p,
                                jnp.broadcast_to(p.factor_values(), p.factor_shape(S)))
            except ValueError:
                raise ValueError(f"sources[{k}] ({type(p).__name__}): per-factor values must be a scalar or "
                                 f"({S},) for the factors {self.factors}") from None
            profiles.append(p)
        def per_factor(x, key):
            x = jnp.asarray(x, jnp.result_type(float))
            if x.shape not in ((), (S,)):
                raise ValueError(f"{key} has shape {x.shape}; allowed: scalar or ({S},) per factor {self.factors}")
            return jnp.broadcast_to(x, (S,))

        def sub(spec, key, allowed):
            if spec is None:
                return None
            if not isinstance(spec, dict):
                raise TypeError(f"{key} must be a dict with keys {sorted(allowed)}")
            bad = set(spec) - set(allowed)
            if bad:
                raise ValueError(f"{key} has unknown key {sorted(bad)[0]!r}; allowed: {sorted(allowed)}")
            need = {k for k, v in allowed.items() if v is None} - set(spec)
            if need:
                raise ValueError(f"{key} needs {sorted(need)}")
            return {k: spec.get(k, d) for k, d in allowed.items()}

        sat = sub(saturable, "saturable", {"Vmax": None, "Km": None})
        bnd = sub(binding, "binding", {"kon": None, "koff": None, "capacity": None, "kdeg": 0.0})
        hl = sub(hill, "hill", {"Vmax": None, "K": None, "n": 1.0})
        hl = None if hl is None else Hill(Vmax=per_region(hl["Vmax"], "hill.Vmax"), K=per_factor(hl["K"], "hill.K"),
                                          n=per_factor(hl["n"], "hill.n"))
        sat = None if sat is None else Saturable(Vmax=per_region(sat["Vmax"], "saturable.Vmax"),
                                                 Km=per_factor(sat["Km"], "saturable.Km"))
        bnd = None if bnd is None else Binding(kon=per_factor(bnd["kon"], "binding.kon"),
                                               koff=per_factor(bnd["koff"], "binding.koff"),
                                               capacity=per_region(bnd["capacity"], "binding.capacity"),
                                               kdeg=per_factor(bnd["kdeg"], "binding.kdeg"))
        robin_arr = None
        if robin is not None:
            if not isinstance(robin, dict):
                raise TypeError("robin must be a dict {boundary name: coefficient (mm/s)}")
            bad = [k for k in robin if k not in self.boundaries]
            if bad:
                raise ValueError(f"robin names unknown boundary {bad[0]!r}; this geometry's boundaries are "
                                 f"{list(self.boundaries)}")
            cols = [jnp.broadcast_to(jnp.asarray(robin.get(b, 0.0), jnp.result_type(float)), (S,))
                    for b in self.boundaries]
            robin_arr = jnp.stack(cols, axis=1)
        return Params(D=per_region(D, "D"), decay=jnp.broadcast_to(decay, (S,)),
                      uptake=per_region(uptake, "uptake"), clearance=per_region(clearance, "clearance"),
                      robin=robin_arr, saturable=sat, binding=bnd, sources=tuple(profiles), hill=hl)

    def _profiles(self, sources):
        names = [s.name for s in self.sources]
        if sources is None or (isinstance(sources, (tuple, list)) and not sources and self.profiles):
            return self.profiles or ()   # none for placements without profiles: Model.check names them
        if isinstance(sources, dict):
            unknown = [k for k in sources if k not in names]
            if unknown:
                raise ValueError(f"sources names {unknown[0]!r}, which is not a source of the model; its sources "
                                 f"are {names}")
            default = dict(zip(names, self.profiles or ()))
            missing = [n for n in names if n not in sources and n not in default]
            if missing:
                raise ValueError(f"sources gives no profile for the model's source(s) {missing}")
            return tuple(sources.get(n, default.get(n)) for n in names)
        sources = tuple(sources)
        if len(sources) != len(names):
            raise ValueError(f"sources holds {len(sources)} profiles; the model has {len(names)} sources {names} "
                             "(pair them by name: sources={name: profile})")
        return sources

    def check(self, params: Params) -> None:
        """Host-side validation of shapes (always) and values (when concrete)."""
        S, R = self.n_factors, self.n_regions
        want = {"D": (S, R), "decay": (S,), "uptake": (S, R), "clearance": (S, R), "robin": (S, len(self.boundaries))}
        for key, shape in want.items():
            if getattr(params, key) is None:
                continue
            got = getattr(params, key).shape
            if got != shape:
                raise ValueError(f"params.{key} has shape {got}; the model needs {shape} "
                                 f"(factors {self.factors}, regions {self.regions})")
        if len(params.sources) != len(self.sources):
            raise ValueError(f"params has {len(params.sources)} source profiles; the model has "
                             f"{len(self.sources)} sources {[s.name for s in self.sources]}")
        for src, prof in zip(self.sources, params.sources):
            values = prof.factor_values()
            lead = values.shape[0] if values.ndim else None
            if lead != S:
                raise ValueError(f"source {src.name!r}: rates must have one entry per factor ({S}), got {lead}")
        leaves = jax.tree.leaves(params)
        if any(isinstance(x, jax.core.Tracer) for x in leaves):
            return
        checks = {"D": (params.D, "finite and >= 0 (mm^2/s)", lambda v: np.isfinite(v) & (v >= 0)),
                  "decay": (params.decay, "finite and >= 0 (1/s)", lambda v: np.isfinite(v) & (v >= 0)),
                  "uptake": (params.uptake, "finite and >= 0 (1/s)", lambda v: np.isfinite(v) & (v >= 0))}
        nonneg = lambda v: np.isfinite(v) & (v >= 0)  # noqa: E731
        if params.saturable is not None:
            checks["saturable.Vmax"] = (params.saturable.Vmax, "finite and >= 0 (pg/mm^3/s)", nonneg)
            checks["saturable.Km"] = (params.saturable.Km, "finite and > 0 (pg/mm^3)", lambda v: np.isfinite(v) & (v > 0))
        if params.hill is not None:
            checks["hill.Vmax"] = (params.hill.Vmax, "finite and >= 0 (pg/mm^3/s)", nonneg)
            checks["hill.K"] = (params.hill.K, "finite and > 0 (pg/mm^3)", lambda v: np.isfinite(v) & (v > 0))
            checks["hill.n"] = (params.hill.n, "a Hill coefficient, finite and >= 1", lambda v: np.isfinite(v) & (v >= 1))
        if params.binding is not None:
            for k, unit in (("kon", "mm^3/pg/s"), ("koff", "1/s"), ("capacity", "pg/mm^3"), ("kdeg", "1/s")):
                checks[f"binding.{k}"] = (getattr(params.binding, k), f"finite and >= 0 ({unit})", nonneg)
        for key in ("clearance", "robin"):
            if getattr(params, key) is not None:
                unit = "1/s" if key == "clearance" else "mm/s"
                checks[key] = (getattr(params, key), f"finite and >= 0 ({unit})", lambda v: np.isfinite(v) & (v >= 0))
        for src, prof in zip(self.sources, params.sources):
            rate = prof.factor_values()
            checks[f"sources[{src.name!r}] rate"] = (rate, "finite and >= 0 (pg/s)", lambda v: np.isfinite(v) & (v >= 0))
        for src, prof in zip(self.sources, params.sources):
            if isinstance(prof, CellSecretion):
                frac = lambda v: np.isfinite(v) & (v >= 0) & (v <= 1)  # noqa: E731
                for k, allowed, ok in (("dose", "finite and >= 0 (cells)", nonneg),
                                       ("retention", "a fraction in [0, 1]", frac),
                                       ("fast_fraction", "a fraction in [0, 1]", frac),
                                       ("k_fast", "finite and >= 0 (1/s)", nonneg), ("k_slow", "finite and >= 0 (1/s)", nonneg),
                                       ("multiplier", "finite and >= 0", nonneg), ("time", "finite", np.isfinite)):
                    checks[f"sources[{src.name!r}].{k}"] = (np.atleast_1d(getattr(prof, k)), allowed, ok)
        for key, (value, allowed, ok) in checks.items():
            v = np.asarray(value)
            bad = np.argwhere(~ok(v))
            if bad.size:
                idx = tuple(int(i) for i in bad[0])
                raise ValueError(f"params.{key}{list(idx)} = {float(v[idx])!r} ({self._where(key, idx)}); allowed: {allowed}")

    def _where(self, key, idx):
        """Name the element of a parameter array: factor and region/boundary, or injection."""
        if not idx:
            return "value"
        if key.startswith("sources") and not key.endswith(" rate"):
            return f"injection {idx[0]}" if key.split(".")[-1] in ("dose", "time", "retention") else "value"
        parts = [f"factor {self.factors[idx[0]]!r}"]
        if len(idx) > 1 and not key.startswith("sources"):
            where = self.boundaries if key == "robin" else self.regions
            parts.append(f"{'boundary' if key == 'robin' else 'region'} {where[idx[1]]!r}")
        return ", ".join(parts)

    def loss_rates(self, params: Params) -> dict:
        """First-order loss rates (1/s) by mechanism, as fields broadcastable to the state:
        decay k, uptake sum_r w_ir u_r and capillary clearance sum_r w_ir a_r (the budget
        reports each one)."""
        space = self.space
        shape = (-1,) + (1,) * len(space.shape)
        clearance = params.clearance if params.clearance is not None else jnp.zeros_like(params.uptake)
        return {"decayed": params.decay.reshape(shape), "taken_up": space.per_node(params.uptake),
                "cleared": space.per_node(clearance)}

    def has_robin(self, params: Params) -> bool:
        return params.robin is not None and bool(self.boundaries)

    def losses_in_operator(self, params: Params) -> bool:
        """Whether decay, uptake and clearance are in the diffusion operator (every model but those
        with ECM binding, whose stiff free/bound exchange integrates them with the reactions:
        kinetics.py; tests/test_stiff_binding.py measures why)."""
        return params.binding is None

    def operator_sinks(self, params: Params) -> dict:
        """The loss rates inside the operator, by budget name: decayed, taken_up, cleared (unless
        binding takes them) and to_boundary (Robin: sum_b beta_b A_ib / m_i)."""
        sinks = dict(self.loss_rates(params)) if self.losses_in_operator(params) else {}
        if self.has_robin(params):
            sinks["to_boundary"] = self.space.per_boundary(params.robin)
        return sinks

    def operator(self, params: Params):
        """The operator L c = -M^{-1} K(D) c - r c for these params: conductances from D and every
        linear loss r of `operator_sinks` on the diagonal (Robin as the lumped boundary mass term of
        K), so that they are integrated with the diffusion, not split from it."""
        g = self.space.conductances(params.D)
        sinks = self.operator_sinks(params)
        if sinks:
            g = self.space.with_sink(g, sum(sinks.values()))
        return g

    def total(self, c):
        return self.space.total(c)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Model({self.space.kind} {self.space.shape}, factors={self.factors}, regions={self.regions}, "
                f"sources={[s.name for s in self.sources]})")


def point_source(disc, points, *, name: str = "source") -> PointSource:
    return PointSource.at(disc, points, name=name)


def field_source(disc, density, *, name: str = "field") -> FieldSource:
    return FieldSource.from_density(disc, density, name=name)


