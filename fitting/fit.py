"""`fit`: the front door of calibration. Named free parameters of a built scenario against
observations, by Levenberg-Marquardt (default) or optax, multi-start batched with vmap, with
Laplace/Fisher uncertainty, identifiability warnings and optional profile likelihoods.

Loss (`loss=`): "absolute" weighted least squares r_i = (m_i - y_i) / sd_i; "relative" the same
with every point's sd set to one common coefficient of variation times |y_i| (the median
sd/y of the data), for SDs that are not trusted point by point; "lognormal"
r_i = (log m_i - log y_i) / s_i with s_i = sqrt(log(1 + (sd_i / y_i)^2)). Log-normal priors
add rows (log theta - log median) / sigma. The loss is half the sum of squares.
"""

from __future__ import annotations

import dataclasses
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .data import Observations
from .model import Predictor
from .optimize import CONVERGED, MAXITER, STATUS, levenberg_marquardt, optax_minimize
from .parameters import FreeParameter, resolve
from .sweep import shard_rows

LOSSES = ("absolute", "relative", "lognormal")
METHODS = ("lm", "lbfgs", "adam")
Z95 = 1.959963984540054


@dataclasses.dataclass
class FitResult:
    names: list
    units: list
    values: np.ndarray            # natural units (internal: 1/s, s, pg/cell/s, fractions)
    initial: np.ndarray
    intervals: np.ndarray         # (P, 2) 95 % (Laplace, in the log/logit coordinates)
    sd_z: np.ndarray              # standard deviation of log (logit) values
    correlation: np.ndarray
    cov_z: np.ndarray             # covariance of the log (logit) values
    loss: float
    chi2: float
    n_data: int
    loss_history: np.ndarray
    iterations: int
    n_solves: int                 # passes through the model: residual-only trials plus Jacobian passes
    n_jacobians: int              # of which forward-mode passes carrying P tangents each
    status: str
    converged: bool
    warnings: list
    wall_s: float
    compile_s: float
    starts: list                  # (loss, status text) per start
    params: object                # fitted solver.Params
    predictions: np.ndarray
    observations: Observations
    method: str
    loss_kind: str
    profiles: dict = dataclasses.field(default_factory=dict)
    z: np.ndarray | None = None
    problem: object = None

    def value(self, name):
        return float(self.values[self.names.index(name)])

    def to_dict(self) -> dict:
        return {"parameters": {n: {"value": float(v), "unit": u, "initial": float(i), "ci95": [float(a), float(b)],
                                   "sd_log": float(s)}
                               for n, u, v, i, (a, b), s in zip(self.names, self.units, self.values, self.initial,
                                                                self.intervals, self.sd_z)},
                "correlation": {"names": self.names, "matrix": np.round(self.correlation, 6).tolist()},
                "loss": self.loss, "chi2": self.chi2, "n_data": self.n_data, "dof": self.n_data - len(self.names),
                "loss_kind": self.loss_kind, "method": self.method, "status": self.status, "converged": self.converged,
                "warnings": self.warnings, "iterations": self.iterations, "n_solves": self.n_solves,
                "n_jacobians": self.n_jacobians, "wall_s": self.wall_s, "compile_s": self.compile_s,
                "loss_history": [float(x) for x in self.loss_history],
                "starts": [{"loss": float(a), "status": b} for a, b in self.starts],
                "profiles": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()} for k, v in self.profiles.items()}}


class Problem:
    """Residuals in the unconstrained coordinates z, for one set of free parameters and data."""

    def __init__(self, built, obs: Observations, free: list[FreeParameter], *, loss="absolute", priors=None,
                 bounds=None, initial=None, dt=None, method=None):
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r}; allowed: {list(LOSSES)}")
        self.built, self.obs, self.free, self.loss_kind = built, obs, free, loss
        params = built.params
        initial = dict(initial or {})
        for n in initial:
            if n not in [p.name for p in free]:
                raise ValueError(f"initial value for {n!r}, which is not free; free: {[p.name for p in free]}")
        for p in free:
            if p.name in initial:
                params = p.set(params, jnp.asarray(initial[p.name], params.D.dtype))
        self.params0 = params
        theta0 = np.array([float(p.get(params)) for p in free])
        for p, v in zip(free, theta0):
            ok = v > 0 if p.kind == "positive" else 0 < v < 1
            if not (ok and math.isfinite(v)):
                allowed = "> 0" if p.kind == "positive" else "in (0, 1)"
                raise ValueError(f"free parameter {p.name} starts at {float(v)!r}; allowed: {allowed} (set it in the scenario "
                                 "or give an initial value)")
        self.theta0 = theta0
        lo, hi = [], []
        bounds = dict(bounds or {})
        for n in bounds:
            if n not in [p.name for p in free]:
                raise ValueError(f"bounds for {n!r}, which is not free; free: {[p.name for p in free]}")
        for p, v in zip(free, theta0):
            a, b = bounds.get(p.name, (v / 1e4, v * 1e4) if p.kind == "positive" else (1e-6, 1 - 1e-6))
            if not (0 <= a < b) or (p.kind == "fraction" and b > 1) or not (a <= v <= b):
                raise ValueError(f"bounds for {p.name} = ({a}, {b}); allowed: 0 <= low < high (<= 1 for fractions), "
                                 f"around the start {v:g}")
            lo.append(float(p.to_z(max(a, 1e-300) if p.kind == "positive" else min(max(a, 1e-12), 1 - 1e-12))))
            hi.append(float(p.to_z(b if p.kind == "positive" else min(max(b, 1e-12), 1 - 1e-12))))
        self.lo, self.hi = np.array(lo), np.array(hi)
        priors = dict(priors or {})
        self.prior_rows = []
        for n, (median, sigma) in priors.items():
            k = [p.name for p in free].index(n) if n in [p.name for p in free] else None
            if k is None:
                raise ValueError(f"prior for {n!r}, which is not free; free: {[p.name for p in free]}")
            if not (median > 0 and sigma > 0):
                raise ValueError(f"prior for {n}: median {median}, sigma {sigma}; allowed: both > 0 (log-normal)")
            self.prior_rows.append((k, float(free[k].to_z(median)), float(sigma)))
        self.predictor = Predictor(built, obs, dt=dt, method=method)
        if self.predictor.needs_pde:
            hi_params = params
            for p, h in zip(free, self.hi):
                if p.name.split(".")[1:2] == ["D"]:  # plan the explicit stepper for the largest D the fit may try
                    hi_params = p.set(hi_params, jnp.asarray(float(p.from_z(h)), params.D.dtype))
            self.predictor.plan(hi_params)
        y, sd = obs.value, obs.sd
        if loss == "lognormal":
            if np.any(y <= 0):
                k = int(np.argmax(y <= 0))
                raise ValueError(f"{obs.source}: line {obs.lines[k] if obs.lines else k}: value {y[k]}; the lognormal "
                                 "loss needs values > 0")
            self.scale = np.sqrt(np.log1p((sd / y) ** 2))
        elif loss == "relative":
            cv = float(np.median(sd / np.where(y > 0, y, np.inf)))
            self.scale = np.maximum(cv * np.abs(y), 1e-300)
        else:
            self.scale = sd

    @property
    def z0(self):
        return np.array([float(p.to_z(v)) for p, v in zip(self.free, self.theta0)])

    def context(self) -> dict:
        """The arrays a residual needs (model, starting params, data): arguments of compiled programs."""
        return {"model": self.built.model, "params0": self.params0, "y": jnp.asarray(self.obs.value),
                "scale": jnp.asarray(self.scale)}

    def params_at(self, z, ctx=None):
        params = (ctx or {}).get("params0", self.params0)
        for k, p in enumerate(self.free):
            params = p.set(params, p.from_z(z[k]).astype(params.D.dtype))
        return params

    def residual(self, z, ctx=None):
        ctx = ctx or self.context()
        pred = self.predictor(self.params_at(z, ctx), ctx["model"])
        y = ctx["y"].astype(pred.dtype)
        scale = ctx["scale"].astype(pred.dtype)
        if self.loss_kind == "lognormal":
            r = (jnp.log(jnp.maximum(pred, 1e-300)) - jnp.log(y)) / scale
        else:
            r = (pred - y) / scale
        if self.prior_rows:
            r = jnp.concatenate([r, jnp.stack([(z[k] - m) / s for k, m, s in self.prior_rows])])
        return r

    def loss(self, z, ctx=None):
        r = self.residual(z, ctx)
        return 0.5 * jnp.sum(r * r)


def fit(built, obs: Observations, free, *, method: str = "lm", loss: str = "absolute", priors=None, bounds=None,
        initial=None, starts: int = 1, seed: int = 0, max_iter: int = 50, profile=(), profile_points: int = 11,
        dt=None, progress=None) -> FitResult:
    """Fit the free parameters (names, see fitting.parameters) of `built` (paracrine.build.Built) to obs.

    starts: number of initial guesses (the scenario's values, then log-uniform within a factor
    of 10 around them), solved together with vmap and spread over all local devices. profile: names to profile (likelihood over a
    grid, the others re-optimised). progress: f(iteration, loss, damping, accepted) per LM iteration.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r}; allowed: {list(METHODS)}")
    if not isinstance(starts, int) or starts < 1:
        raise ValueError(f"starts = {starts!r}; allowed: an integer >= 1")
    free = resolve(built, list(free))
    prob = Problem(built, obs, free, loss=loss, priors=priors, bounds=bounds, initial=initial, dt=dt)
    P = len(free)
    rng = np.random.default_rng(seed)
    z0 = np.tile(prob.z0, (starts, 1))
    if starts > 1:
        z0[1:] += rng.uniform(-math.log(10), math.log(10), size=(starts - 1, P))
    z0 = np.clip(z0, prob.lo, prob.hi)
    dtype = built.params.D.dtype
    lo, hi = jnp.asarray(prob.lo, dtype), jnp.asarray(prob.hi, dtype)

    def solve(z, ctx):  # the model's arrays come in as arguments (ctx), never as baked-in constants
        if method == "lm":
            return levenberg_marquardt(lambda x: prob.residual(x, ctx), z, lo, hi, max_iter=max_iter,
                                       progress=progress if starts == 1 else None)
        return optax_minimize(lambda x: prob.loss(x, ctx), z, lo, hi, name=method, max_iter=max_iter)

    # one start runs unbatched: under vmap, lax.cond evaluates both branches (the Jacobian every iteration)
    batched = (eqx.filter_jit(jax.vmap(solve, in_axes=(0, None))) if starts > 1 else
               eqx.filter_jit(lambda z, ctx: jax.tree.map(lambda a: a[None], solve(z[0], ctx))))
    zs = shard_rows(z0, dtype, shard=starts > 1)  # starts spread over the local devices
    ctx = prob.context()
    t0 = time.perf_counter()
    compiled = batched.lower(zs, ctx).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(zs, ctx))
    out = jax.tree.map(lambda a: a[:starts], out)
    wall = time.perf_counter() - t0
    losses = np.asarray(out["loss"], float)
    best = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.inf)))
    z = np.asarray(out["z"][best], float)
    status_code = int(out["status"][best])
    iterations = int(out["iterations"][best])
    hist = np.asarray(out["history"][best], float)
    hist = hist[: iterations + 1]

    # uncertainty: Fisher information J^T J of the residuals (data and prior rows) at the optimum
    J = np.asarray(jax.jacfwd(prob.residual)(jnp.asarray(z, dtype)), float)
    r = np.asarray(prob.residual(jnp.asarray(z, dtype)), float)
    cov, warns = _covariance(J, [p.name for p in free])
    sd_z = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd_z, sd_z)
    values = np.array([float(p.from_z(v)) for p, v in zip(free, z)])
    # 95 % in the log (logit) coordinates, within the bounds (an unbounded direction spans them)
    ci = np.array([[float(p.from_z(max(v - Z95 * s, a))), float(p.from_z(min(v + Z95 * s, b)))]
                   for p, v, s, a, b in zip(free, z, sd_z, prob.lo, prob.hi)])
    at_bound = [p.name for p, v, a, b in zip(free, z, prob.lo, prob.hi) if v <= a + 1e-9 or v >= b - 1e-9]
    if at_bound:
        warns.append(f"at a bound: {at_bound} (the interval there is not meaningful; widen the bounds)")
    n = len(obs)
    chi2 = float(np.sum(r[:n] ** 2))
    if status_code == MAXITER:
        warns.append(f"stopped after {max_iter} iterations without meeting the tolerances")
    params = prob.params_at(jnp.asarray(z, dtype))
    pred = np.asarray(prob.predictor(params), float)
    result = FitResult(names=[p.name for p in free], units=[p.unit for p in free], values=values,
                       initial=prob.theta0, intervals=ci, sd_z=sd_z, correlation=corr, cov_z=cov, loss=float(losses[best]),
                       chi2=chi2, n_data=n, loss_history=hist, iterations=iterations,
                       n_solves=int(np.asarray(out["n_residual"][best] + out["n_jacobian"][best]) if "n_residual" in out
                                    else 2 * (iterations + 1)),  # optax: a value and a reverse-mode gradient each
                       n_jacobians=int(out["n_jacobian"][best]) if "n_jacobian" in out else 0,
                       status=STATUS[status_code], converged=status_code in CONVERGED, warnings=warns, wall_s=wall,
                       compile_s=compile_s, starts=[(float(a), STATUS[int(b)]) for a, b in zip(losses, out["status"])],
                       params=params, predictions=pred, observations=obs, method=method, loss_kind=loss)
    result.z, result.problem = z, prob
    for name in ([profile] if isinstance(profile, str) else list(profile)):
        result.profiles[name] = profile_likelihood(prob, z, sd_z, name, points=profile_points, max_iter=max_iter)
    return result


def _covariance(J: np.ndarray, names: list) -> tuple[np.ndarray, list]:
    """Inverse of the Fisher matrix J^T J, and plain warnings for directions the data do not determine."""
    F = J.T @ J
    w, V = np.linalg.eigh(F)
    warns = []
    top = max(float(w.max()), 1e-300)
    weak = w <= 1e-10 * top
    for k in np.flatnonzero((w < 1.0 / math.log(10) ** 2) | weak):
        # the combination sum V_ik log(theta_i) is known no better than a factor of 10 (or not at all)
        v = V[:, k] * np.sign(V[np.argmax(np.abs(V[:, k])), k])  # largest component positive
        parts = " ".join(f"{c:+.2f} x log {n}" for c, n in zip(v, names) if abs(c) > 0.1)
        how = "not at all" if weak[k] else f"only to +-{1 / math.sqrt(w[k]):.2g} in log units (1 SD)"
        warns.append(f"not identifiable from these data: the combination ({parts}) is determined {how} "
                     "(near-singular Fisher matrix; fix one of them, add a prior or more data)")
    inv_w = np.where(weak, 0.0, 1.0 / np.where(weak, 1.0, w))
    cov = (V * inv_w) @ V.T
    if weak.any():
        cov = cov + (V[:, weak] @ V[:, weak].T) * 1e6  # unbounded directions: a huge variance, not a false precision
    return cov, warns


def profile_likelihood(prob: Problem, z_best, sd_z, name: str, *, points: int = 11, max_iter: int = 50) -> dict:
    """Profile of the loss over one parameter (the others re-optimised), batched with vmap; the 95 %
    interval is where the loss rises by less than chi2_1(0.95) / 2 = 1.92."""
    names = [p.name for p in prob.free]
    if name not in names:
        raise ValueError(f"profile of {name!r}, which is not free; free: {names}")
    k = names.index(name)
    half = min(max(3.0 * float(sd_z[k]), 0.05), 3 * math.log(10))
    grid = np.clip(z_best[k] + np.linspace(-half, half, points), prob.lo[k], prob.hi[k])
    dtype = prob.built.params.D.dtype

    def one(zk):
        lo = jnp.asarray(prob.lo, dtype).at[k].set(zk)
        hi = jnp.asarray(prob.hi, dtype).at[k].set(zk)
        z0 = jnp.asarray(z_best, dtype).at[k].set(zk)
        return levenberg_marquardt(prob.residual, z0, lo, hi, max_iter=max_iter)["loss"]

    losses = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(grid, dtype)), float)
    p = prob.free[k]
    values = np.array([float(p.from_z(g)) for g in grid])
    inside = losses - np.nanmin(losses) <= 1.92
    ci = [float(values[inside].min()), float(values[inside].max())] if inside.any() else [math.nan, math.nan]
    return {"values": values, "loss": losses, "ci95": np.array(ci),
            "open": np.array([bool(inside[0]), bool(inside[-1])])}
