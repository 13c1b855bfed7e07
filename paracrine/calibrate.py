"""Calibration and sweeps of a scenario: its data (CSV with units), its named free parameters and
its observations, turned into the generic `fitting` objects.

    built = paracrine.build.build(paracrine.scenario.load("my.toml"))
    obs = paracrine.data.read_csv("data.csv", built.scenario)
    res = paracrine.calibrate.fit(built, obs, ["VEGF.secretion", "VEGF.uptake.border"])
    table = paracrine.calibrate.sweep(built, {"cells.dose": [1e5, 1e6, 1e7]})

Predictions are computed inside the simulation at the data times only: at each data time an
observer (`Predictions`) reduces the state to region means, free and total amounts and probe
values, and each datum picks from those. Cells retained come from the survival model's closed
form, so data of cells alone need no PDE solve.
"""

from __future__ import annotations

import csv
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from paracrine import fitting
from paracrine import solver

from .catalogue import available, resolve
from .data import Observations

__all__ = ["FIXED_DT_FALLBACK", "Predictions", "ScenarioObservation", "available", "fit", "member_metrics",
           "observation", "predict", "problem", "resolve", "sweep", "write_table"]

#: the fixed step (s) of fits and sweeps when a scenario asks for error-controlled steps: one
#: program of fixed structure for every member and every forward-mode derivative
FIXED_DT_FALLBACK = 60.0
PG_PER_ML = 1e3


class Predictions(solver.AbstractObserver):
    """Per factor at a save time: region means, the tissue mean, region and tissue amounts, free + bound
    contents, and probe values; the probes' nodes and weights are data (no retrace for new probes)."""

    space: object
    nodes: object = None
    weights: object = None

    def __call__(self, t, state, params):
        space, c, b = self.space, state.c, state.b
        vol = space.region_volumes().astype(c.dtype)
        free = space.region_amounts(c)                      # (S, R)
        total = free if b is None else space.region_amounts(c + b)
        mean = free / jnp.where(vol > 0, vol, 1.0)
        cols = [mean, (free.sum(-1) / vol.sum())[:, None], free, free.sum(-1, keepdims=True),
                total, total.sum(-1, keepdims=True)]
        if self.nodes is not None:
            flat = c.reshape(c.shape[0], -1)
            cols.append(jnp.sum(flat[:, self.nodes] * self.weights[None].astype(c.dtype), axis=-1))
        return jnp.concatenate(cols, axis=-1)                # (S, 3 (R + 1) + P)


class ScenarioObservation(fitting.AbstractObservation):
    """The data rows of a scenario: PDE quantities picked from `Predictions` (times x factor x column,
    scaled for percent_dose) and retained cells from the survival model's closed form."""

    observer: object          # Predictions, or None when every row counts cells
    t_idx: jax.Array
    flat: jax.Array           # factor * K + column
    scale: jax.Array
    is_cells: jax.Array
    time: jax.Array           # (n,) s, for the closed form
    cell_sources: tuple = eqx.field(static=True)   # ((profile index, sites), ...)

    def __call__(self, ys, params):
        n = self.time.shape[0]
        dtype = params.D.dtype
        out = jnp.zeros(n, dtype)
        if self.observer is not None:
            pde = ys.reshape(ys.shape[0], -1)[self.t_idx, self.flat]
            out = jnp.where(self.is_cells, 0.0, pde * self.scale.astype(pde.dtype))
        if self.cell_sources:
            t = self.time.astype(dtype)
            cells = jnp.zeros_like(t)
            for k, sites in self.cell_sources:
                cells = cells + sites * jnp.vectorize(params.sources[k].cells)(t)
            out = jnp.where(self.is_cells, cells, out)
        return out


def observation(built, obs: Observations) -> tuple[ScenarioObservation, np.ndarray]:
    """The observation of obs's rows and the save times it needs (s)."""
    model = built.model
    d = built.scenario.data
    R = model.n_regions
    times = np.unique(obs.time)
    probes = list(d.get("probes", {}))
    K = 3 * (R + 1) + len(probes)
    base = {"concentration": 0, "amount": R + 1, "content": 2 * (R + 1), "percent_dose": 2 * (R + 1)}
    col, fac = [], []
    for q, f, w in zip(obs.quantity, obs.factor, obs.where):
        fac.append(0 if f is None else model.factors.index(f))
        if q == "cells":
            col.append(0)
        elif w in probes:
            col.append(3 * (R + 1) + probes.index(w))
        else:
            col.append(base[q] + (R if w == "tissue" else model.regions.index(w)))
    is_cells = np.array([q == "cells" for q in obs.quantity])
    dose = np.ones(model.n_factors)
    for s, f in enumerate(model.factors):
        injected = sum(m["amount"][f] * len(m["times"]) for m in d["media"])
        dose[s] = injected if injected > 0 else 1.0
    scale = np.array([1.0 / dose[s] if q == "percent_dose" else 1.0 for q, s in zip(obs.quantity, fac)])
    if obs.per_volume is not None and np.any(obs.per_volume):
        # amounts and contents per tissue volume (ELISA data per mg tissue or protein): / the region's volume
        vol = np.asarray(model.space.region_volumes(), float)
        for k in np.flatnonzero(obs.per_volume):
            w = obs.where[k]
            scale[k] = 1.0 / (vol.sum() if w == "tissue" else vol[model.regions.index(w)])
    needs_pde = not is_cells.all()
    observer = None
    if needs_pde:
        nodes = w = None
        if probes:
            nodes, w = built.disc.locate(np.asarray([d["probes"][p] for p in probes], float))
            nodes, w = jnp.asarray(nodes), jnp.asarray(w)
        observer = Predictions(model.space, nodes, w)
    dtype = built.params.D.dtype
    cell_sources = tuple((int(k), float(n)) for k, n in built.cell_sources) if is_cells.any() else ()
    ob = ScenarioObservation(observer=observer, t_idx=jnp.asarray(np.searchsorted(times, obs.time)),
                             flat=jnp.asarray(np.asarray(fac) * K + np.asarray(col)), scale=jnp.asarray(scale, dtype),
                             is_cells=jnp.asarray(is_cells), time=jnp.asarray(obs.time, dtype),
                             cell_sources=cell_sources)
    return ob, times


def fixed_step(built, dt=None) -> float:
    d = built.scenario.data
    return float(dt or d["time"]["dt"] or FIXED_DT_FALLBACK)   # fits take fixed steps (jacfwd, vmap)


def problem(built, obs: Observations, free, *, loss="absolute", priors=None, bounds=None, initial=None, dt=None,
            method=None, params=None) -> fitting.Problem:
    """The `fitting.Problem` of fitting the named free parameters of `built` to obs."""
    free = resolve(built, list(free)) if not all(isinstance(p, fitting.FreeParameter) for p in free) else list(free)
    ob, times = observation(built, obs)
    params = built.params if params is None else params
    stiff = params   # an explicit stepper is planned for the start and the largest diffusivity the fit may try
    for p in free:
        if p.name in (initial or {}):
            stiff = p.set(stiff, jnp.asarray(initial[p.name], params.D.dtype))
    for p in free:
        if p.name.split(".")[1:2] == ["D"]:
            start = float((initial or {}).get(p.name, p.get(params)))
            hi = p.box(start, (bounds or {}).get(p.name))[1]
            stiff = p.set(stiff, jnp.asarray(hi, params.D.dtype))
    return fitting.Problem(built.model, params, free, ob, times, obs.value, obs.sd, loss=loss, priors=priors,
                           bounds=bounds, initial=initial, dt=fixed_step(built, dt), plan_params=stiff,
                           method=method or built.scenario.data["time"]["method"], source=obs.source)


def predict(built, obs: Observations, params=None, *, dt=None, method=None) -> np.ndarray:
    """Model values at obs's rows for params (default: the scenario's), in the data's internal units."""
    params = built.params if params is None else params
    ob, times = observation(built, obs)
    dt = fixed_step(built, dt)
    stepper = solver.plan(built.model, params, dt=dt, method=method or built.scenario.data["time"]["method"])
    return np.asarray(_predict(built.model, params, ob, tuple(float(t) for t in times), dt, stepper), float)


@eqx.filter_jit
def _predict(model, params, ob, times, dt, stepper):
    ys = None
    if ob.observer is not None:
        ys = solver.simulate(model, params, t_end=times[-1], dt=dt, save_at=np.asarray(times), method=stepper,
                             observe=ob.observer).ys
    return ob(ys, params)


def fit(built, obs: Observations, free, *, method: str = "lm", loss: str = "absolute", priors=None, bounds=None,
        initial=None, starts: int = 1, seed: int = 0, max_iter: int = 50, profile=(), profile_points: int = 11,
        dt=None, progress=None, ftol: float = 1e-10) -> fitting.FitResult:
    """Fit the named free parameters (see paracrine.catalogue) of `built` to obs; see fitting.fit."""
    prob = problem(built, obs, free, loss=loss, priors=priors, bounds=bounds, initial=initial, dt=dt)
    res = fitting.fit(prob, method=method, starts=starts, seed=seed, max_iter=max_iter, profile=profile,
                      profile_points=profile_points, progress=progress, ftol=ftol)
    res.observations, res.built = obs, built
    return res


def sweep(built, vary: dict, *, zip_values: bool = False, shard: bool = True, dt=None) -> dict:
    """Run every member; returns {"names", "units", "values" (M, V), "ts", "means" (M, T, S, R) pg/mm^3,
    "secreted" (M, S), "status", "metrics": list of dicts per member, "devices"}."""
    from .scenario import save_times

    free = resolve(built, list(vary))
    grid = fitting.members(vary, zip_values=zip_values)
    model, params0 = built.model, built.params
    d = built.scenario.data
    ts = save_times(built.scenario)
    thresholds = [np.inf if d["factors"][f]["threshold"] is None else d["factors"][f]["threshold"]
                  for f in model.factors]
    out = fitting.ensemble(model, params0, free, grid, times=ts, dt=fixed_step(built, dt), method=d["time"]["method"],
                           observe=solver.observe.region_means(model),
                           metrics=solver.Exposure.of(model, thresholds, dtype=params0.D.dtype), shard=shard)
    secreted, acc = out["budget"]["secreted"], out["metrics"]
    return {"names": [p.name for p in free], "units": [p.unit for p in free], "values": grid, "ts": ts,
            "means": out["ys"], "secreted": secreted, "status": out["status"], "devices": out["devices"],
            "metrics": [member_metrics(built, {k: v[m] for k, v in acc.items()}, secreted[m]) for m in range(len(grid))]}


def member_metrics(built, acc, secreted) -> dict:
    """Per factor: border-zone (or tissue) AUC, peak mean and its time, hours above threshold, from the
    per-step accumulator `acc` (solver.Exposure: arrays (S, R) in internal units); secreted."""
    d = built.scenario.data
    model = built.model
    r = model.regions.index("border") if "border" in model.regions else 0
    share = None
    if "above_node" in acc:   # once per member, not per factor
        from paracrine.solver.metrics import exposed_share

        from .build import region_volumes

        share = np.asarray(exposed_share(np.asarray(acc["above_node"]), region_volumes(built.disc),
                                         d["output"]["exposure"]))
    out = {}
    for s, f in enumerate(model.factors):
        row = {f"{f}.auc_pg_per_mL_h": float(acc["auc"][s, r]) * PG_PER_ML / 3600.0,
               f"{f}.peak_pg_per_mL": float(acc["peak_mean"][s, r]) * PG_PER_ML,
               f"{f}.peak_time_h": float(acc["peak_mean_time"][s, r]) / 3600.0, f"{f}.secreted_pg": float(secreted[s])}
        if d["factors"][f]["threshold"] is not None:
            row[f"{f}.hours_above_threshold"] = float(acc["above_mean"][s, r]) / 3600.0
            if share is not None:   # the share of the region's volume above it for output.exposure, as `run`
                row[f"{f}.exposed_volume_fraction"] = float(share[s, r])
        out.update(row)
    return out


def write_table(path, result: dict) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    keys = list(result["metrics"][0])
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"{n} [{u}]" for n, u in zip(result["names"], result["units"])] + ["status"] + keys)
        for v, st, m in zip(result["values"], result["status"], result["metrics"]):
            w.writerow([f"{x:.6g}" for x in v] + [solver.STATUS_MESSAGES[int(st)]] + [f"{m[k]:.6g}" for k in keys])
    os.replace(tmp, path)
