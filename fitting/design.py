"""Design: the controls of a therapy (doses, times, amounts, durations: `FreeParameter`s over
`solver.Params`) that maximise an objective of the simulated course under constraints, with
gradients by reverse mode through the solver. No file formats in it.

    obj = fitting.design.Accumulated("above_mean", factor=0, region=1)            # s above threshold
    budget = fitting.design.Constraint(fitting.design.ControlSum([1.0]), upper=1e6, name="budget")
    prob = fitting.DesignProblem(model, params0, controls, obj, [budget], t_end=7 * 86400.0, dt=600.0,
                                 bounds={"dose": (1e4, 1e7)}, metrics=solver.SmoothExposure.of(model, thr))
    res = fitting.optimise(prob)            # res.theta, res.objective, res.active, res.sensitivity

Quantities (`AbstractQuantity`) map one simulation's `Outcome` (the per-step accumulator of the
metrics, what the observer saved at the save times, and the controls' values) to a number:
`Accumulated` (an entry of the accumulator: AUC, time above threshold, peaks), `ExposedShare`
(the volume share of a region that spent at least a duration above threshold, smoothed by a
logistic in the time above, exact as width -> 0), `Saved` (a saved value, e.g. a region mean at
a given day: a trough), `ControlSum` (a weighted sum of the controls: a budget), and the
combinations `Total` (a weighted sum) and `SoftMin` (several factors all above their targets).
The objective is maximised; a `Constraint` keeps a quantity within [lower, upper].

The optimiser (`optimise`) is an augmented Lagrangian (Powell-Hestenes-Rockafellar, for
inequalities) around a bounded quasi-Newton inner solve (SciPy's L-BFGS-B, which keeps the
controls' boxes exactly) in the coordinate u in [0, 1]^K of each control's box (in its
transform's coordinate: log for doses, identity for times). Each evaluation is one forward solve
and one reverse pass, compiled once for the problem's structure (`optimise` traces it once; new
numbers, multipliers or penalty weights reuse the program).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from paracrine import solver

__all__ = ["AbstractQuantity", "Accumulated", "Constraint", "ControlSum", "DesignProblem", "DesignResult",
           "ExposedShare", "Outcome", "Saved", "SoftMin", "Total", "optimise"]


class Outcome(NamedTuple):
    metrics: dict | None     # the per-step accumulator (solver.Exposure / SmoothExposure): arrays (S, R), (S, N)
    ys: object               # what the observer saved at the save times (leading axis T), or None
    theta: jax.Array         # (K,) the controls' values, natural units


class AbstractQuantity(eqx.Module):
    """A number computed from one simulation's `Outcome`."""

    @abc.abstractmethod
    def __call__(self, out: Outcome): ...

    def uses_solution(self) -> bool:
        return True


class Accumulated(AbstractQuantity):
    """out.metrics[key][factor, region]: "auc" (pg/mm^3 s), "above_mean" (s above threshold),
    "peak_mean", "peak_max" (pg/mm^3), "auc_bound"."""

    key: str = eqx.field(static=True)
    factor: int = eqx.field(static=True)
    region: int = eqx.field(static=True)

    def __call__(self, out):
        if out.metrics is None or self.key not in out.metrics:
            raise ValueError(f"Accumulated({self.key!r}) needs a metrics accumulator with {self.key!r}")
        return out.metrics[self.key][self.factor, self.region]


class ExposedShare(AbstractQuantity):
    """Share of region `region`'s volume whose nodes spent at least `duration` s above the factor's
    threshold: sum_i W_ir sigma((above_i - duration) / (width duration)) / V_r; width = 0 is the
    exact step (the reported metric), width > 0 its smooth surrogate for the optimiser."""

    weights: jax.Array                       # (N, R) mm^3
    factor: int = eqx.field(static=True)
    region: int = eqx.field(static=True)
    duration: float = eqx.field(static=True)
    width: float = eqx.field(static=True, default=0.1)

    def __call__(self, out):
        above = out.metrics["above_node"][self.factor]
        w = self.weights[:, self.region].astype(above.dtype)
        if self.width > 0:
            hit = jax.nn.sigmoid((above - self.duration) / (self.width * self.duration))
        else:
            hit = (above >= self.duration * (1 - 1e-9)).astype(above.dtype)
        return jnp.sum(w * hit) / jnp.sum(w)


class Saved(AbstractQuantity):
    """out.ys[t_index][index]: a saved value, e.g. a region mean (S, R) at a save time (a trough)."""

    t_index: int = eqx.field(static=True)
    index: tuple = eqx.field(static=True)

    def __call__(self, out):
        return out.ys[self.t_index][self.index]


class ControlSum(AbstractQuantity):
    """sum_k weights_k theta_k: a budget (total cells = dose x number of doses), a volume."""

    weights: jax.Array

    def __init__(self, weights):
        self.weights = jnp.asarray(weights, jnp.result_type(float))

    def __call__(self, out):
        return jnp.sum(self.weights.astype(out.theta.dtype) * out.theta)

    def uses_solution(self) -> bool:
        return False


class Total(AbstractQuantity):
    """sum_i weights_i terms_i."""

    terms: tuple
    weights: tuple = eqx.field(static=True)

    def __call__(self, out):
        return sum(w * q(out) for q, w in zip(self.terms, self.weights))

    def uses_solution(self) -> bool:
        return any(q.uses_solution() for q in self.terms)


class SoftMin(AbstractQuantity):
    """A smooth minimum of terms_i / scales_i (each term over its own target, e.g. VEGF's and HGF's
    hours above threshold over the wanted hours): -tau log sum_i exp(-(q_i / s_i) / tau) (+ tau log n,
    so that equal terms give their common value); tau -> 0 is the minimum."""

    terms: tuple
    scales: tuple = eqx.field(static=True)
    tau: float = eqx.field(static=True, default=0.05)

    def __call__(self, out):
        x = jnp.stack([q(out) / s for q, s in zip(self.terms, self.scales)])
        return -self.tau * (jax.nn.logsumexp(-x / self.tau) - math.log(len(self.terms)))

    def uses_solution(self) -> bool:
        return any(q.uses_solution() for q in self.terms)


class Constraint(eqx.Module):
    """lower <= quantity <= upper (either may be None), scaled by |bound| in the optimiser."""

    quantity: AbstractQuantity
    upper: float | None = eqx.field(static=True, default=None)
    lower: float | None = eqx.field(static=True, default=None)
    name: str = eqx.field(static=True, default="constraint")
    unit: str = eqx.field(static=True, default="")

    def __check_init__(self):
        if self.upper is None and self.lower is None:
            raise ValueError(f"constraint {self.name!r}: give upper, lower or both")
        for b in (self.upper, self.lower):
            if b is not None and not math.isfinite(b):
                raise ValueError(f"constraint {self.name!r}: bound {b!r}; allowed: finite numbers")
        if self.upper is not None and self.lower is not None and self.lower > self.upper:
            raise ValueError(f"constraint {self.name!r}: lower {self.lower:g} > upper {self.upper:g}")

    def scaled(self, out):
        """g (<= 0 when met), one entry per side: (q - upper) / |upper|, (lower - q) / |lower|."""
        q = self.quantity(out)
        g = []
        if self.upper is not None:
            g.append((q - self.upper) / (abs(self.upper) or 1.0))
        if self.lower is not None:
            g.append((self.lower - q) / (abs(self.lower) or 1.0))
        return g


class DesignProblem(eqx.Module):
    """Maximise objective(Outcome) over the controls within their bounds and the constraints.

    model, params0: a `solver.Model` and its `solver.Params` (the controls start at params0's values
    or `initial`). controls: FreeParameters (and `ModelControl`s: site positions of MovableSources).
    bounds: {name: (low, high)} natural units, required for every control (a design has no default
    range). t_end (s), dt (s): fixed steps (a fixed step grid keeps the outcome a smooth function of
    the controls); method: a stepper (default TR-BDF2 with its
    discrete adjoint); metrics: the accumulator (`solver.SmoothExposure` for time above threshold);
    observer and save_at: what `Saved` quantities read.
    """

    model: solver.Model
    params0: solver.Params
    objective: AbstractQuantity
    constraints: tuple
    metrics: object
    observer: object
    stepper: object
    lo: jax.Array          # (K,) box in the transform's coordinate
    hi: jax.Array
    controls: tuple = eqx.field(static=True)
    t_end: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    save_at: tuple = eqx.field(static=True)
    adjoint: str = eqx.field(static=True)

    def __init__(self, model, params0, controls, objective, constraints=(), *, bounds, t_end, dt, initial=None,
                 metrics=None, observer=None, save_at=(), method="trbdf2", adjoint=None, source="design"):
        controls = tuple(controls)
        names = [c.name for c in controls]
        if not controls:
            raise ValueError(f"{source}: no controls given")
        if len(set(names)) != len(names):
            raise ValueError(f"{source}: controls named twice: {names}")
        for n in list(bounds) + list(initial or {}):
            if n not in names:
                raise ValueError(f"{source}: bounds or initial value for {n!r}, which is not a control; controls: {names}")
        if not isinstance(objective, AbstractQuantity):
            raise TypeError(f"{source}: the objective must be a fitting.design quantity, got {type(objective).__name__}")
        for c in constraints:
            if not isinstance(c, Constraint):
                raise TypeError(f"{source}: constraints holds fitting.design.Constraint, got {type(c).__name__}")
        if not (isinstance(t_end, (int, float)) and t_end > 0 and isinstance(dt, (int, float)) and 0 < dt <= t_end):
            raise ValueError(f"{source}: t_end = {t_end!r}, dt = {dt!r}; allowed: t_end > 0, 0 < dt <= t_end (s)")
        dtype = params0.D.dtype
        for c in controls:
            if c.name in (initial or {}):
                if c.on == "model":
                    model = c.set(model, jnp.asarray(initial[c.name], dtype))
                else:
                    params0 = c.set(params0, jnp.asarray(initial[c.name], dtype))
        lo, hi = [], []
        for c in controls:
            if c.name not in bounds:
                raise ValueError(f"{source}: control {c.name}: no bounds; allowed: (low, high) in {c.unit or 'its unit'}")
            a, b = (float(x) for x in bounds[c.name])
            if not (math.isfinite(a) and math.isfinite(b) and a < b and c.transform.allowed(a) and c.transform.allowed(b)):
                raise ValueError(f"{source}: control {c.name}: bounds ({a:g}, {b:g}); allowed: low < high, both "
                                 f"{c.transform.domain}")
            v = float(c.get(model if c.on == "model" else params0))
            if not (a <= v <= b):
                raise ValueError(f"{source}: control {c.name} starts at {v:g} {c.unit}, outside its bounds "
                                 f"({a:g}, {b:g}); give an initial value inside them")
            za, zb = float(c.to_z(a)), float(c.to_z(b))
            lo.append(za), hi.append(zb)
        if isinstance(method, str):
            method = solver.plan(model, params0, dt=float(dt), method=method)
        self.adjoint = adjoint or ("discrete" if isinstance(method, solver.TRBDF2) else "checkpoint")
        save_at = tuple(float(t) for t in save_at)
        if any(q.uses_solution() for q in [objective] + [c.quantity for c in constraints]) and metrics is None \
                and observer is None:
            raise ValueError(f"{source}: the objective reads the simulation; give metrics (an accumulator) or an observer")
        self.model, self.params0, self.objective, self.constraints = model, params0, objective, tuple(constraints)
        self.metrics, self.observer, self.stepper = metrics, observer, method
        self.lo, self.hi = jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
        self.controls, self.t_end, self.dt, self.save_at = controls, float(t_end), float(dt), save_at

    @property
    def names(self) -> list:
        return [c.name for c in self.controls]

    @property
    def n_constraints(self) -> int:
        return sum((c.upper is not None) + (c.lower is not None) for c in self.constraints)

    @property
    def u0(self) -> np.ndarray:
        return u_of(self, [float(c.get(self.model if c.on == "model" else self.params0)) for c in self.controls])

    def theta(self, u):
        z = self.lo + jnp.asarray(u, self.lo.dtype) * (self.hi - self.lo)
        return jnp.stack([c.from_z(z[k]) for k, c in enumerate(self.controls)])

    def params_at(self, u):
        th, params = self.theta(u), self.params0
        for k, c in enumerate(self.controls):
            if c.on == "params":
                params = c.set(params, th[k].astype(params.D.dtype))
        return params

    def model_at(self, u):
        th, model = self.theta(u), self.model
        for k, c in enumerate(self.controls):
            if c.on == "model":
                model = c.set(model, th[k].astype(self.lo.dtype))
        return model

    def outcome(self, u) -> Outcome:
        params = self.params_at(u)
        th = self.theta(u)
        needs = any(q.uses_solution() for q in [self.objective] + [c.quantity for c in self.constraints])
        if not needs:
            return Outcome(None, None, th), jnp.zeros((), jnp.int32)
        save = np.asarray(self.save_at) if self.save_at else None
        sol = solver.simulate(self.model_at(u), params, t_end=self.t_end, dt=self.dt, save_at=save, method=self.stepper,
                              observe=self.observer, metrics=self.metrics,
                              adjoint=self.adjoint)
        return Outcome(sol.metrics, sol.ys if self.observer is not None else None, th), sol.status

    def evaluate(self, u):
        """(objective, g (m,) scaled constraints, <= 0 when met, status) at u."""
        out, status = self.outcome(u)
        J = self.objective(out)
        g = [x for c in self.constraints for x in c.scaled(out)]
        g = jnp.stack(g) if g else jnp.zeros((0,), J.dtype)
        return J, g, status

    def lagrangian(self, u, lam, rho, scale):
        """-J / scale + sum_i (max(0, lam_i + rho g_i)^2 - lam_i^2) / (2 rho), with (J, g, status)."""
        J, g, status = self.evaluate(u)
        pen = jnp.sum(jnp.maximum(0.0, lam + rho * g) ** 2 - lam ** 2) / (2 * rho)
        return -J / scale + pen, (J, g, status)


@dataclasses.dataclass
class DesignResult:
    names: list
    units: list
    theta: np.ndarray            # the optimum, natural units
    theta0: np.ndarray
    objective: float             # at the optimum, the objective as optimised (the surrogate where smoothed)
    objective0: float
    constraints: list            # per constraint: {"name", "value", "lower", "upper", "active", "multiplier"}
    sensitivity: np.ndarray      # dJ/dtheta_k at the optimum, natural units
    elasticity: np.ndarray       # theta_k dJ/dtheta_k / J
    at_bound: list               # per control: "low", "high" or ""
    history: list                # per evaluation: {"objective", "violation", "outer"}
    evaluations: int             # forward solves (each with one reverse pass)
    outer: int
    converged: bool
    message: str
    seconds: float
    compile_seconds: float
    feasible: bool = True

    def summary(self) -> str:
        rows = [f"objective {self.objective0:.6g} -> {self.objective:.6g} in {self.evaluations} solves "
                f"({self.outer} outer iterations, {self.message})"]
        for n, v, v0, un, b in zip(self.names, self.theta, self.theta0, self.units, self.at_bound):
            rows.append(f"  {n} = {v:.6g} {un} (start {v0:.6g}){'  at its ' + b + ' bound' if b else ''}")
        for c in self.constraints:
            rows.append(f"  {c['name']}: {c['value']:.6g}  [{c['lower']}, {c['upper']}]"
                        f"{'  active' if c['active'] else ''}")
        return "\n".join(rows)


_vg = eqx.filter_jit(eqx.filter_value_and_grad(lambda u, prob, lam, rho, scale: prob.lagrangian(u, lam, rho, scale),
                                                has_aux=True))


def _value_and_grad(prob, u, lam, rho, scale):
    # prob goes second so that filter_value_and_grad differentiates u only
    return _vg(u, prob, lam, rho, scale)


def u_of(prob: DesignProblem, theta) -> np.ndarray:
    """The box coordinate u of natural control values theta."""
    z = np.array([float(c.to_z(v)) for c, v in zip(prob.controls, theta)])
    lo, hi = np.asarray(prob.lo, float), np.asarray(prob.hi, float)
    return np.clip((z - lo) / (hi - lo), 0.0, 1.0)


def _restore(prob: DesignProblem, u) -> np.ndarray:
    """Scale the controls of each violated upper limit on a sum of controls with non-negative weights
    (a budget) down onto the limit, so the returned optimum meets budgets exactly."""
    th = np.asarray(prob.theta(jnp.asarray(u, prob.lo.dtype)), float)
    for c in prob.constraints:
        q = c.quantity
        if isinstance(q, ControlSum) and c.upper is not None and c.upper > 0:
            w = np.asarray(q.weights, float)
            val = float(w @ th)
            if val > c.upper and np.all(w >= 0):
                th = np.where(w > 0, th * (c.upper / val) * (1 - 1e-12), th)
    return u_of(prob, th)


def optimise(prob: DesignProblem, *, max_outer: int = 12, max_inner: int = 40, tol: float = 1e-3,
             rho0: float = 100.0, progress: Callable | None = None, u0=None) -> DesignResult:
    """Maximise prob's objective (see the module docstring). tol: the largest allowed scaled constraint
    violation and the relative change of the objective between outer iterations at which it stops.
    progress(record) is called after every evaluation (record: objective, violation, outer, evaluations).
    u0: a start in the box coordinate [0, 1]^K instead of the problem's (another start of a multi-start)."""
    from scipy.optimize import minimize

    if not isinstance(prob, DesignProblem):
        raise TypeError(f"optimise needs a fitting.DesignProblem, got {type(prob).__name__}")
    t_start = time.perf_counter()
    dtype = prob.lo.dtype
    m = prob.n_constraints
    lam = np.zeros(m)
    rho = float(rho0)
    u = prob.u0 if u0 is None else np.clip(np.asarray(u0, float), 0.0, 1.0)
    history: list = []
    compile_s = [0.0]

    def call(u_, lam_, rho_, scale_):
        t0 = time.perf_counter()
        (L, (J, g, st)), grad = _value_and_grad(prob, jnp.asarray(u_, dtype), jnp.asarray(lam_, dtype),
                                                jnp.asarray(rho_, dtype), jnp.asarray(scale_, dtype))
        L, J, g, grad, st = float(L), float(J), np.asarray(g, float), np.asarray(grad, float), int(st)
        if not history:
            compile_s[0] = time.perf_counter() - t0
        return L, J, g, grad, st

    _, J0, g0, _, st0 = call(u, lam, rho, 1.0)
    if st0 != 0:
        raise solver.SolverError(f"design: the simulation at the start failed: {solver.STATUS_MESSAGES[st0]}")
    scale = abs(J0) if J0 != 0 else 1.0
    history.append({"objective": J0, "violation": float(np.max(g0, initial=0.0)), "outer": 0})
    best = None
    outer = 0
    converged, message = False, "maximum outer iterations"
    J_prev = J0
    viol_prev = float(np.max(np.maximum(g0, 0.0), initial=0.0))
    for outer in range(1, max_outer + 1):
        last = {}

        def fun(x):
            L, J, g, grad, st = call(x, lam, rho, scale)
            if st != 0 or not np.isfinite(L):
                L, grad = 1e30, np.zeros_like(x)
            last.update(u=np.array(x), J=J, g=g)
            rec = {"objective": J, "violation": float(np.max(g, initial=0.0)), "outer": outer}
            history.append(rec)
            if progress is not None:
                progress({**rec, "evaluations": len(history)})
            return L, grad

        r = minimize(fun, u, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * len(u),
                     options={"maxiter": max_inner, "maxfun": 2 * max_inner, "ftol": 1e-3 * tol,
                                                  "gtol": 1e-6})
        u = np.clip(r.x, 0.0, 1.0)
        _, J, g, _, st = call(u, lam, rho, scale)
        history.append({"objective": J, "violation": float(np.max(g, initial=0.0)), "outer": outer})
        viol = float(np.max(np.maximum(g, 0.0), initial=0.0))
        if viol <= tol and (best is None or J > best[1]):
            best = (u.copy(), J)
        lam = np.maximum(0.0, lam + rho * g)
        if viol > tol and viol > 0.25 * viol_prev:
            rho *= 10.0
        if viol <= tol and abs(J - J_prev) <= tol * max(abs(J), 1e-300) and outer > 1:
            converged, message = True, "converged"
            break
        if m == 0:
            converged, message = bool(r.success), str(r.message).lower()
            break
        J_prev, viol_prev = J, viol
    if best is None:   # a point within tol of the control-only limits is moved onto them, then judged
        u = _restore(prob, u)
        _, J, g, _, st = call(u, np.zeros(m), rho, scale)
        if float(np.max(g, initial=0.0)) <= tol:
            best = (u, J)
    feasible = best is not None
    if best is not None:
        u = _restore(prob, best[0])
    if not feasible:
        u = np.asarray(u, float)
    (L, (J, g, st)), grad_u = _value_and_grad(prob, jnp.asarray(u, dtype), jnp.asarray(np.zeros(m), dtype),
                                               jnp.asarray(rho, dtype), jnp.asarray(1.0, dtype))
    J, g = float(J), np.asarray(g, float)
    # dJ/dtheta from dJ/du (the penalty is zero with lam = 0 at a feasible point: L = -J there)
    th = np.asarray(prob.theta(jnp.asarray(u, dtype)), float)
    dth_du = np.asarray(jax.vmap(jax.grad(lambda x, k: prob.theta(x)[k]), in_axes=(None, 0))(
        jnp.asarray(u, dtype), jnp.arange(len(u))), float).diagonal()
    dJ_du = -np.asarray(grad_u, float)
    sens = dJ_du / np.where(dth_du != 0, dth_du, np.inf)
    cons = []
    i = 0
    for c in prob.constraints:
        sides = [s for s in ("upper", "lower") if getattr(c, s) is not None]
        gi = g[i:i + len(sides)]
        li = lam[i:i + len(sides)]
        val = (gi[0] * (abs(c.upper) or 1.0) + c.upper) if sides[0] == "upper" else \
            (c.lower - gi[0] * (abs(c.lower) or 1.0))
        active = bool(np.any(gi > -max(tol, 1e-6) * 10) or np.any(li > 0))
        cons.append({"name": c.name, "value": float(val), "lower": c.lower, "upper": c.upper, "unit": c.unit,
                     "active": active, "multiplier": float(np.max(li, initial=0.0)),
                     "met": bool(np.all(gi <= max(tol, 1e-6)))})
        i += len(sides)
    at_bound = ["low" if x <= 1e-9 else "high" if x >= 1 - 1e-9 else "" for x in u]
    if not feasible:
        message = "no feasible point found: " + message
    return DesignResult(names=prob.names, units=[c.unit for c in prob.controls], theta=th,
                        theta0=np.asarray(prob.theta(jnp.asarray(prob.u0, dtype)), float), objective=J,
                        objective0=J0, constraints=cons, sensitivity=sens,
                        elasticity=sens * th / (J if J != 0 else 1.0), at_bound=at_bound, history=history,
                        evaluations=len(history) + 1, outer=outer, converged=converged and feasible,
                        message=message, seconds=time.perf_counter() - t_start, compile_seconds=compile_s[0],
                        feasible=feasible)
