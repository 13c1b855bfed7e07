"""`fit(problem)`: minimise a `fitting.Problem` by Levenberg-Marquardt (default) or optax,
multi-start batched with vmap, with Laplace/Fisher uncertainty, identifiability warnings and
optional profile likelihoods. The residual and its loss kinds are described in problem.py.
"""

from __future__ import annotations

import dataclasses
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .optimize import CONVERGED, MAXITER, STATUS, levenberg_marquardt, optax_minimize
from .problem import Problem
from .sweep import shard_rows

METHODS = ("lm", "lbfgs", "adam")
Z95 = 1.959963984540054


@dataclasses.dataclass
class FitResult:
    names: list
    units: list
    values: np.ndarray            # natural units (internal: 1/s, s, pg/cell/s, fractions)
    initial: np.ndarray
    intervals: np.ndarray         # (P, 2) 95 % (Laplace, in the log/logit coordinates); NaN where not claimed
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
    observations: object          # what the data are (set by the caller; None here)
    method: str
    loss_kind: str
    profiles: dict = dataclasses.field(default_factory=dict)
    z: np.ndarray | None = None
    problem: object = None
    #: why no intervals are claimed (dof <= 0, or a rank-deficient Jacobian of the data), else None
    intervals_note: str | None = None
    rank: int | None = None       # numerical rank of the data rows of the Jacobian (in z)

    @property
    def dof(self) -> int:
        return self.n_data - len(self.names)

    def value(self, name):
        return float(self.values[self.names.index(name)])

    def to_dict(self) -> dict:
        """JSON-able; intervals, SDs and correlations are null (with `intervals_note` saying why) when the
        data cannot determine the free parameters."""
        claim = self.intervals_note is None

        def num(x):
            return float(x) if claim and math.isfinite(float(x)) else None

        return {"parameters": {n: {"value": float(v), "unit": u, "initial": float(i),
                                   "ci95": [num(a), num(b)] if claim else None, "sd_log": num(s)}
                               for n, u, v, i, (a, b), s in zip(self.names, self.units, self.values, self.initial,
                                                                self.intervals, self.sd_z)},
                "correlation": {"names": self.names,
                                "matrix": np.round(self.correlation, 6).tolist() if claim else None},
                "intervals_note": self.intervals_note, "rank": self.rank,
                "loss": self.loss, "chi2": self.chi2, "n_data": self.n_data, "dof": self.dof,
                "loss_kind": self.loss_kind, "method": self.method, "status": self.status, "converged": self.converged,
                "warnings": self.warnings, "iterations": self.iterations, "n_solves": self.n_solves,
                "n_jacobians": self.n_jacobians, "wall_s": self.wall_s, "compile_s": self.compile_s,
                "loss_history": [float(x) for x in self.loss_history],
                "starts": [{"loss": float(a), "status": b} for a, b in self.starts],
                "profiles": {k: {kk: np.asarray(vv).tolist() for kk, vv in v.items()} for k, v in self.profiles.items()}}


def _starts(problem, zs, method, max_iter, progress, batched, ftol=1e-10):
    """Every start's optimisation, in one program (vmapped over the starts when batched)."""
    def solve(z):
        if method == "lm":
            return levenberg_marquardt(problem.residual, z, problem.lo, problem.hi, max_iter=max_iter,
                                       progress=progress, ftol=ftol)
        return optax_minimize(problem.loss, z, problem.lo, problem.hi, name=method, max_iter=max_iter,
                              progress=progress)

    if batched:
        return jax.vmap(solve)(zs)
    # one start runs unbatched: under vmap, lax.cond evaluates both branches (the Jacobian every iteration)
    return jax.tree.map(lambda a: a[None], solve(zs[0]))


def _at_optimum(problem, z):
    """Forward-mode Jacobian and residual at z, and the predictions there."""
    J, r = jax.jacfwd(lambda x: (lambda r: (r, r))(problem.residual(x)), has_aux=True)(z)
    return J, r, problem.predict(problem.params_at(z))


#: compiled once per problem structure: the Problem is an argument (its arrays are data), so new data,
#: starts or parameter values reuse the program (`fitting.fit.traces()`)
_traced_starts = eqx.debug.assert_max_traces(_starts, max_traces=None)
_traced_optimum = eqx.debug.assert_max_traces(_at_optimum, max_traces=None)
optimise = eqx.filter_jit(_traced_starts)
at_optimum = eqx.filter_jit(_traced_optimum)


#: the one progress callback the compiled programs call (jax.debug.callback) per iteration of a single
#: start; it forwards to `_listener`, set for the duration of one fit, so that a new progress
#: function (a closure per fit) never retraces the program
_listener = [None]


def _report(it, loss, lam, ok):
    fn = _listener[0]
    if fn is not None:
        fn(it, loss, lam, ok)


def traces() -> int:
    """How often the optimisation program has been traced in this process (for no-retrace checks)."""
    return eqx.debug.get_num_traces(_traced_starts)


class compile_clock:
    """Seconds JAX spent tracing, lowering and compiling inside the block (0 on a cache hit)."""

    EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration")

    def __enter__(self):
        self.seconds = 0.0

        def listen(event, duration, **kw):
            if event in self.EVENTS:
                self.seconds += duration

        self._listen = listen
        jax.monitoring.register_event_duration_secs_listener(listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)
        return False


def fit(problem: Problem, *, method: str = "lm", starts: int = 1, seed: int = 0, max_iter: int = 50, profile=(),
        profile_points: int = 11, progress=None, ftol: float = 1e-10) -> FitResult:
    """Minimise problem's loss over its free parameters.

    method: "lm" (Levenberg-Marquardt with forward-mode Jacobians, default), "lbfgs" or "adam"
    (optax, reverse-mode gradients). starts: number of initial guesses (the problem's start, then
    log-uniform within a factor of 10 around it in z), solved together with vmap and spread over
    all local devices. profile: names to profile (likelihood over a grid, the others
    re-optimised). progress: f(iteration, loss, damping, accepted) per iteration of a single start
    (numpy scalars, through one jax.debug.callback compiled into the loop: a new function does not
    retrace). ftol: LM stops when an iteration lowers the loss by less than this fraction (status
    "converged (relative loss change below ftol)").
    The compiled programs are reused when only numbers change (data, starts, parameter values).

    When the data cannot determine the free parameters (dof = data - free <= 0, or a Jacobian of
    the data rows of lower rank than the number of free parameters) a warning says so and no
    intervals are claimed: `intervals` is NaN, `intervals_note` gives the reason, and fit.json
    writes null.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"fit needs a fitting.Problem, got {type(problem).__name__} (scenario files: paracrine.calibrate.fit)")
    if method not in METHODS:
        raise ValueError(f"method {method!r}; allowed: {list(METHODS)}")
    if not isinstance(starts, int) or starts < 1:
        raise ValueError(f"starts = {starts!r}; allowed: an integer >= 1")
    free = problem.free
    P = len(free)
    lo, hi = np.asarray(problem.lo, float), np.asarray(problem.hi, float)
    rng = np.random.default_rng(seed)
    z0 = np.tile(np.asarray(problem.z0, float), (starts, 1))
    if starts > 1:
        z0[1:] += rng.uniform(-math.log(10), math.log(10), size=(starts - 1, P))
    z0 = np.clip(z0, lo, hi)
    dtype = problem.lo.dtype
    zs = shard_rows(z0, dtype, shard=starts > 1)  # starts spread over the local devices
    t0 = time.perf_counter()
    _listener[0] = progress if starts == 1 else None
    try:
        with compile_clock() as clock:
            out = jax.block_until_ready(optimise(problem, zs, method, max_iter, _report if starts == 1 else None,
                                                 starts > 1, float(ftol)))
    finally:
        _listener[0] = None
    compile_s = clock.seconds
    wall = time.perf_counter() - t0 - compile_s
    out = jax.tree.map(lambda a: a[:starts], out)
    losses = np.asarray(out["loss"], float)
    best = int(np.nanargmin(np.where(np.isfinite(losses), losses, np.inf)))
    z = np.asarray(out["z"][best], float)
    status_code = int(out["status"][best])
    iterations = int(out["iterations"][best])
    hist = np.asarray(out["history"][best], float)[: iterations + 1]

    # uncertainty: Fisher information J^T J of the residuals (data and prior rows) at the optimum
    J, r, pred = (np.asarray(a, float) for a in at_optimum(problem, jnp.asarray(z, dtype)))
    cov, warns = _covariance(J, problem.names)
    sd_z = np.sqrt(np.maximum(np.diag(cov), 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.outer(sd_z, sd_z)
    values = np.array([float(p.from_z(v)) for p, v in zip(free, z)])
    # 95 % in the log (logit) coordinates, within the bounds (an unbounded direction spans them)
    ci = np.array([[float(p.from_z(max(v - Z95 * s, a))), float(p.from_z(min(v + Z95 * s, b)))]
                   for p, v, s, a, b in zip(free, z, sd_z, lo, hi)])
    at_bound = [p.name for p, v, a, b in zip(free, z, lo, hi) if v <= a + 1e-9 or v >= b - 1e-9]
    if at_bound:
        warns.append(f"at a bound: {at_bound} (the interval there is not meaningful; widen the bounds)")
    n = int(problem.data.shape[0])
    rank = _rank(J[:n])
    note = None
    if n <= P:
        note = (f"{n} data for {P} free parameters (dof {n - P} <= 0): the data cannot determine them (the fit "
                "interpolates the data at best); no confidence intervals are claimed; fix some parameters, add "
                "priors or more data")
    elif rank < P:
        note = (f"the Jacobian of the {n} data has rank {rank} < {P} free parameters: the data cannot determine "
                "them all (see the combinations named); no confidence intervals are claimed")
    if note is not None:
        warns.insert(0, note)
        ci = np.full_like(ci, np.nan)
    chi2 = float(np.sum(r[:n] ** 2))
    if status_code == MAXITER:
        warns.append(f"stopped after {max_iter} iterations without meeting the tolerances")
    params = problem.params_at(jnp.asarray(z, dtype))
    result = FitResult(names=problem.names, units=[p.unit for p in free], values=values,
                       initial=problem.theta0, intervals=ci, sd_z=sd_z, correlation=corr, cov_z=cov,
                       loss=float(losses[best]), chi2=chi2, n_data=n, loss_history=hist, iterations=iterations,
                       n_solves=int(np.asarray(out["n_residual"][best] + out["n_jacobian"][best]) if "n_residual" in out
                                    else 2 * (iterations + 1)),  # optax: a value and a reverse-mode gradient each
                       n_jacobians=int(out["n_jacobian"][best]) if "n_jacobian" in out else 0,
                       status=STATUS[status_code], converged=status_code in CONVERGED, warnings=warns, wall_s=wall,
                       compile_s=compile_s, starts=[(float(a), STATUS[int(b)]) for a, b in zip(losses, out["status"])],
                       params=params, predictions=pred, observations=None, method=method, loss_kind=problem.loss_kind,
                       intervals_note=note, rank=rank)
    result.z, result.problem = z, problem
    for name in ([profile] if isinstance(profile, str) else list(profile)):
        result.profiles[name] = profile_likelihood(problem, z, sd_z, name, points=profile_points, max_iter=max_iter)
    return result


def _rank(J: np.ndarray) -> int:
    """Numerical rank of J: singular values above 1e-5 of the largest (the Fisher matrix's eigenvalue
    ratio 1e-10 that `_covariance` calls "not at all" determined)."""
    if J.size == 0:
        return 0
    s = np.linalg.svd(J, compute_uv=False)
    top = float(s.max()) if s.size else 0.0
    return int(np.sum(s > 1e-5 * top)) if top > 0 and math.isfinite(top) else 0


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


def _profile(problem, grid, z_best, k, max_iter):
    def one(zk):
        lo, hi = problem.lo.at[k].set(zk), problem.hi.at[k].set(zk)
        return levenberg_marquardt(problem.residual, z_best.at[k].set(zk), lo, hi, max_iter=max_iter)["loss"]

    return jax.vmap(one)(grid)


profile_program = eqx.filter_jit(_profile)


def profile_likelihood(problem: Problem, z_best, sd_z, name: str, *, points: int = 11, max_iter: int = 50) -> dict:
    """Profile of the loss over one parameter (the others re-optimised), batched with vmap; the 95 %
    interval is where the loss rises by less than chi2_1(0.95) / 2 = 1.92."""
    names = problem.names
    if name not in names:
        raise ValueError(f"profile of {name!r}, which is not free; free: {names}")
    k = names.index(name)
    lo, hi = np.asarray(problem.lo, float), np.asarray(problem.hi, float)
    half = min(max(3.0 * float(sd_z[k]), 0.05), 3 * math.log(10))
    grid = np.clip(z_best[k] + np.linspace(-half, half, points), lo[k], hi[k])
    dtype = problem.lo.dtype
    losses = np.asarray(profile_program(problem, jnp.asarray(grid, dtype), jnp.asarray(z_best, dtype), k, max_iter),
                        float)
    p = problem.free[k]
    values = np.array([float(p.from_z(g)) for g in grid])
    inside = losses - np.nanmin(losses) <= 1.92
    ci = [float(values[inside].min()), float(values[inside].max())] if inside.any() else [math.nan, math.nan]
    return {"values": values, "loss": losses, "ci95": np.array(ci),
            "open": np.array([bool(inside[0]), bool(inside[-1])])}
