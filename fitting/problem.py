"""`Problem`: a least-squares calibration over the solver, with no file formats in it.

    prob = fitting.Problem(model, params0, free, observe, times, data, sd, dt=60.0)
    res = fitting.fit(prob)

model, params0: a `solver.Model` and its starting `solver.Params`. free: FreeParameters
(`fitting.parameter`). observe: an `AbstractObservation`, which names the solver observer
evaluated at the save times `times` (s) inside the simulation and maps what it saved to one
prediction per datum (`Pick` picks entries; subclasses add closed forms that need no PDE
solve). data, sd: the measurements and their standard deviations, in the observation's units.

The residual in the optimiser's coordinates z (see FreeParameter.transform) is
r_i = (m_i - y_i) / s_i ("absolute"), with s_i = cv |y_i| for one common coefficient of
variation, the median sd / y ("relative"), or r_i = (log m_i - log y_i) / s_i with
s_i = sqrt(log(1 + (sd_i / y_i)^2)) ("lognormal"); log-normal priors add rows
(z_k - log median_k) / sigma_k. The loss is half the sum of squares.

A Problem is an equinox Module: its arrays (model, params0, data, sd, bounds, priors) are data,
so `fit` compiles once per structure and reuses the program when only numbers change
(`eqx.tree_at` or `Problem.with_data`); times, the step and the free parameters are structure.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from paracrine import solver

LOSSES = ("absolute", "relative", "lognormal")


class AbstractObservation(eqx.Module):
    """What a simulation is compared with: `observer` is evaluated at the save times inside the
    simulation (None: the predictions need no PDE solve); `__call__(ys, params)` maps the saved
    pytree (leading axis: save times) to (n,) predictions."""

    observer: eqx.AbstractVar[object]

    @abc.abstractmethod
    def __call__(self, ys, params): ...


class Pick(AbstractObservation):
    """Prediction i = weight_i * ys[t_idx_i].reshape(-1)[flat_i]: one entry of the saved array per datum."""

    observer: object
    t_idx: jax.Array
    flat: jax.Array
    weight: jax.Array | None = None

    def __call__(self, ys, params):
        out = ys.reshape(ys.shape[0], -1)[self.t_idx, self.flat]
        return out if self.weight is None else out * self.weight.astype(out.dtype)


def _fixed(x):
    return tuple(float(v) for v in np.atleast_1d(np.asarray(x, float)))


class Problem(eqx.Module):
    model: solver.Model
    params0: solver.Params
    observe: AbstractObservation
    data: jax.Array
    sd: jax.Array
    scale: jax.Array                # the residual's divisor per datum
    lo: jax.Array                   # bounds in z
    hi: jax.Array
    prior_mean: jax.Array           # (Q,) in z
    prior_sigma: jax.Array
    stepper: object                 # the planned stepper (a Module) or a method name
    free: tuple = eqx.field(static=True)
    times: tuple = eqx.field(static=True)
    loss_kind: str = eqx.field(static=True)
    prior_index: tuple = eqx.field(static=True)
    dt: float = eqx.field(static=True)

    def __init__(self, model, params0, free, observe: AbstractObservation, times, data, sd=None, *,
                 loss: str = "absolute", priors=None, bounds=None, initial=None, dt: float = 60.0,
                 method="rkl2", plan_params=None, source: str = "data"):
        """priors: {name: (median, sigma of the log or logit)}; bounds: {name: (low, high)} in natural
        units; initial: {name: value} to start from instead of params0's; dt: the fixed step (s)
        (fits take fixed steps: one program of fixed structure for jacfwd and vmap); method: a
        stepper name or instance; an explicit one is planned for the upper bounds of the free
        parameters (and the lower ones: a half-life's lower bound is the fastest decay)."""
        if loss not in LOSSES:
            raise ValueError(f"loss {loss!r}; allowed: {list(LOSSES)}")
        free = tuple(free)
        if not free:
            raise ValueError("no free parameters given")
        names = [p.name for p in free]
        if len(set(names)) != len(names):
            raise ValueError(f"free parameters named twice: {names}")
        for what, table in (("initial value", initial), ("bounds", bounds), ("prior", priors)):
            for n in table or {}:
                if n not in names:
                    raise ValueError(f"{what} for {n!r}, which is not free; free: {names}")
        dtype = params0.D.dtype
        initial, bounds, priors = dict(initial or {}), dict(bounds or {}), dict(priors or {})
        for p in free:
            if p.name in initial:
                params0 = p.set(params0, jnp.asarray(initial[p.name], dtype))
        theta0 = [float(p.get(params0)) for p in free]
        lo, hi = [], []
        for p, v in zip(free, theta0):
            if not p.transform.allowed(v):
                raise ValueError(f"free parameter {p.name} starts at {v!r}; allowed: {p.transform.domain} (set it in "
                                 "the model's parameters or give an initial value)")
            a, b = p.box(v, bounds.get(p.name))
            lo.append(float(p.to_z(a)))
            hi.append(float(p.to_z(b)))
        pk, pm, ps = [], [], []
        for n, (median, sigma) in priors.items():
            p = free[names.index(n)]
            if not (p.transform.allowed(float(median)) and float(sigma) > 0):
                raise ValueError(f"prior for {n}: median {median}, sigma {sigma}; allowed: median {p.transform.domain}, "
                                 "sigma > 0 (in the parameter's log or logit coordinate)")
            pk.append(names.index(n)), pm.append(float(p.to_z(median))), ps.append(float(sigma))
        y = np.asarray(data, float).reshape(-1)
        sd = np.ones_like(y) if sd is None else np.broadcast_to(np.asarray(sd, float), y.shape).copy()
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(sd)) and np.all(sd > 0)):
            k = int(np.argmax(~(np.isfinite(y) & np.isfinite(sd) & (sd > 0))))
            raise ValueError(f"{source}: datum {k}: value {float(y[k])!r}, sd {float(sd[k])!r}; allowed: finite values, sd > 0")
        if loss == "lognormal":
            if np.any(y <= 0):
                k = int(np.argmax(y <= 0))
                raise ValueError(f"{source}: datum {k}: value {y[k]}; the lognormal loss needs values > 0")
            scale = np.sqrt(np.log1p((sd / y) ** 2))
        elif loss == "relative":
            cv = float(np.median(sd / np.where(y > 0, y, np.inf)))
            scale = np.maximum(cv * np.abs(y), 1e-300)
        else:
            scale = sd
        times = _fixed(times) if observe.observer is not None else ()
        if times and (np.any(np.diff(times) <= 0) or times[0] <= 0):
            raise ValueError(f"save times {list(times)}; allowed: increasing and > 0 (s)")
        if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
            raise ValueError(f"dt = {dt!r}; allowed: a fixed step > 0 (s)")
        if isinstance(method, str) and times:
            method = _plan(model, params0 if plan_params is None else plan_params, dt, method)
        self.model, self.params0, self.observe = model, params0, observe
        self.data, self.sd, self.scale = (jnp.asarray(a, dtype) for a in (y, sd, scale))
        self.lo, self.hi = jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)
        self.prior_mean, self.prior_sigma = jnp.asarray(pm, dtype), jnp.asarray(ps, dtype)
        self.prior_index = tuple(pk)
        self.stepper, self.free, self.times, self.loss_kind, self.dt = method, free, times, loss, float(dt)

    @property
    def names(self) -> list:
        return [p.name for p in self.free]

    @property
    def z0(self):
        return jnp.stack([p.to_z(p.get(self.params0)) for p in self.free]).astype(self.lo.dtype)

    @property
    def theta0(self) -> np.ndarray:
        return np.array([float(p.get(self.params0)) for p in self.free])

    def with_data(self, data, sd=None) -> "Problem":
        """The same problem (same program) for other data values (and SDs) at the same rows."""
        y = jnp.asarray(data, self.data.dtype).reshape(self.data.shape)
        sd = self.sd if sd is None else jnp.broadcast_to(jnp.asarray(sd, self.sd.dtype), y.shape)
        if self.loss_kind == "lognormal":
            scale = jnp.sqrt(jnp.log1p((sd / y) ** 2))
        elif self.loss_kind == "relative":
            scale = jnp.maximum(jnp.median(sd / jnp.where(y > 0, y, jnp.inf)) * jnp.abs(y), 1e-300)
        else:
            scale = sd
        return eqx.tree_at(lambda p: (p.data, p.sd, p.scale), self, (y, sd, scale))

    def params_at(self, z):
        params = self.params0
        for k, p in enumerate(self.free):
            params = p.set(params, p.from_z(z[k]).astype(params.D.dtype))
        return params

    def predict(self, params):
        """(n,) predictions for params."""
        ys = None
        if self.observe.observer is not None:
            sol = solver.simulate(self.model, params, t_end=self.times[-1], dt=self.dt, save_at=np.asarray(self.times),
                                  method=self.stepper, observe=self.observe.observer)
            ys = sol.ys
            pred = self.observe(ys, params)
            if hasattr(self.stepper, "limit"):   # an explicit step the plan cannot take stably: NaN
                rho = jnp.max(solver.spectral_bound(self.model, params))
                pred = jnp.where(self.dt > self.stepper.limit(rho) * (1 + 1e-6), jnp.nan, pred)
            return pred
        return self.observe(ys, params)

    def residual(self, z):
        pred = self.predict(self.params_at(z))
        y, scale = self.data.astype(pred.dtype), self.scale.astype(pred.dtype)
        if self.loss_kind == "lognormal":
            r = (jnp.log(jnp.maximum(pred, 1e-300)) - jnp.log(y)) / scale
        else:
            r = (pred - y) / scale
        if self.prior_index:
            zk = z[jnp.asarray(self.prior_index)]
            r = jnp.concatenate([r, (zk - self.prior_mean.astype(r.dtype)) / self.prior_sigma.astype(r.dtype)])
        return r

    def loss(self, z):
        r = self.residual(z)
        return 0.5 * jnp.sum(r * r)


def _plan(model, params, dt, method):
    from paracrine.solver.steppers import make_stepper

    return make_stepper(method).plan(float(jnp.max(solver.spectral_bound(model, params))), float(dt))
