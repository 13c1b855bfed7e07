"""Ensembles: one scenario run for many parameter values at once (dose-response, schedules, virtual
cohorts), batched with `vmap` and spread over all local devices with `jax.sharding`.

    table = fitting.sweep(built, {"cells.dose": [1e5, 1e6, 1e7], "VEGF.uptake.border": [1e-4, 1e-3]})

Members are the Cartesian product of the values (or `zip=True`: the i-th value of each). The member
axis is sharded over a 1-D device mesh (padded to a multiple of the device count); each member
saves region means at the scenario's output interval (for the table's courses) and accumulates its
exposure metrics at every step inside the loop (`solver.Exposure`), so they do not depend on the
output interval.
Several hosts: call `jax.distributed.initialize()` first (see the README); the mesh then spans
every process's devices.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

import solver

from .model import FIXED_DT_FALLBACK
from .parameters import resolve

PG_PER_ML = 1e3


def shard_rows(rows: np.ndarray, dtype, *, shard: bool = True):
    """rows (M, ...) as a device array split along M over all devices (a 1-D mesh with an Auto axis),
    padded with copies of the last row to a multiple of the device count; the caller drops the pad."""
    n_dev = jax.device_count() if shard else 1
    pad = (-len(rows)) % n_dev
    x = jnp.asarray(np.concatenate([rows, np.repeat(rows[-1:], pad, axis=0)]), dtype)
    if n_dev > 1:
        from jax.sharding import AxisType, NamedSharding, PartitionSpec

        mesh = jax.make_mesh((n_dev,), ("members",), axis_types=(AxisType.Auto,))
        x = jax.device_put(x, NamedSharding(mesh, PartitionSpec("members", *([None] * (x.ndim - 1)))))
    return x


def members(vary: dict, *, zip_values: bool = False) -> np.ndarray:
    names = list(vary)
    vals = [np.atleast_1d(np.asarray(vary[n], float)) for n in names]
    for n, v in zip(names, vals):
        if v.ndim != 1 or v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"sweep values of {n}: {v.tolist()}; allowed: a non-empty list of finite numbers")
    if zip_values:
        if len({len(v) for v in vals}) != 1:
            raise ValueError(f"zip needs equally many values per name, got {[len(v) for v in vals]}")
        return np.stack(vals, axis=1)
    return np.array(list(itertools.product(*vals)), float).reshape(-1, len(names))


def sweep(built, vary: dict, *, zip_values: bool = False, shard: bool = True, dt=None) -> dict:
    """Run every member; returns {"names", "values" (M, V), "ts", "means" (M, T, S, R) pg/mm^3,
    "metrics": list of dicts per member, "devices"}."""
    free = resolve(built, list(vary))
    grid = members(vary, zip_values=zip_values)
    for p, col in zip(free, grid.T):
        bad = col[(col <= 0) if p.kind == "positive" else ((col < 0) | (col > 1))]
        if bad.size:
            raise ValueError(f"sweep value {float(bad[0])!r} for {p.name}; allowed: "
                             f"{'> 0' if p.kind == 'positive' else 'a fraction in [0, 1]'} ({p.unit})")
    model, params0 = built.model, built.params
    d = built.scenario.data
    from paracrine.scenario import save_times

    ts = save_times(built.scenario)
    dt = float(dt or d["time"]["dt"] or FIXED_DT_FALLBACK)   # one fixed-step program for every member
    hi = params0
    for p, col in zip(free, grid.T):  # plan the explicit stepper for the largest D in the sweep
        if p.name.split(".")[1:2] == ["D"]:
            hi = p.set(hi, jnp.asarray(col.max(), params0.D.dtype))
    stepper = solver.plan(model, hi, dt=dt, method=d["time"]["method"])
    observe = solver.observe.region_means(model)
    thresholds = [np.inf if d["factors"][f]["threshold"] is None else d["factors"][f]["threshold"]
                  for f in model.factors]
    exposure = solver.Exposure.of(model, thresholds, dtype=params0.D.dtype)

    def one(v):
        params = params0
        for k, p in enumerate(free):
            params = p.set(params, v[k].astype(params0.D.dtype))
        sol = solver.simulate(model, params, t_end=float(ts[-1]), dt=dt, save_at=ts, method=stepper, observe=observe,
                              budget=True, metrics=exposure)
        acc = {k: sol.metrics[k] for k in ("auc", "peak_mean", "peak_mean_time", "above_mean")}
        return sol.ys, sol.budget["secreted"], sol.status, acc

    M = len(grid)
    x = shard_rows(grid, params0.D.dtype, shard=shard)
    means, secreted, status, acc = jax.jit(jax.vmap(one))(x)
    spread = len(means.sharding.device_set)
    means, secreted, status = (np.asarray(a)[:M] for a in (means, secreted, status))
    acc = {k: np.asarray(v)[:M] for k, v in acc.items()}
    return {"names": [p.name for p in free], "units": [p.unit for p in free], "values": grid, "ts": ts,
            "means": means, "secreted": secreted, "status": status, "devices": spread,
            "metrics": [member_metrics(built, {k: v[m] for k, v in acc.items()}, secreted[m]) for m in range(M)]}


def member_metrics(built, acc, secreted) -> dict:
    """Per factor: border-zone (or tissue) AUC, peak mean and its time, hours above threshold, from the
    per-step accumulator `acc` (solver.Exposure: arrays (S, R) in internal units); secreted."""
    d = built.scenario.data
    model = built.model
    r = model.regions.index("border") if "border" in model.regions else 0
    out = {}
    for s, f in enumerate(model.factors):
        row = {f"{f}.auc_pg_per_mL_h": float(acc["auc"][s, r]) * PG_PER_ML / 3600.0,
               f"{f}.peak_pg_per_mL": float(acc["peak_mean"][s, r]) * PG_PER_ML,
               f"{f}.peak_time_h": float(acc["peak_mean_time"][s, r]) / 3600.0, f"{f}.secreted_pg": float(secreted[s])}
        if d["factors"][f]["threshold"] is not None:
            row[f"{f}.hours_above_threshold"] = float(acc["above_mean"][s, r]) / 3600.0
        out.update(row)
    return out


def write_table(path, result: dict) -> None:
    import csv
    import os

    tmp = path.with_name("." + path.name + ".tmp")
    keys = list(result["metrics"][0])
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"{n} [{u}]" for n, u in zip(result["names"], result["units"])] + ["status"] + keys)
        for v, st, m in zip(result["values"], result["status"], result["metrics"]):
            w.writerow([f"{x:.6g}" for x in v] + [solver.STATUS_MESSAGES[int(st)]] + [f"{m[k]:.6g}" for k in keys])
    os.replace(tmp, path)


