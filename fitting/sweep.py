"""Ensembles: one model run for many parameter values at once (dose-response, schedules, virtual
cohorts), batched with `vmap` and spread over all local devices with `jax.sharding`.

    out = fitting.ensemble(model, params0, free, values, times=ts, dt=60.0,
                           observe=solver.observe.region_means(model), metrics=solver.Exposure.of(model, thr))

values (M, P): one row per member, one column per FreeParameter (natural units). The member axis
is sharded over a 1-D device mesh (padded to a multiple of the device count); each member saves
what `observe` gives at the save times and, with `metrics`, accumulates its exposure metrics at
every step inside the loop (`solver.Exposure`), so they do not depend on the output interval.
Several hosts: call `jax.distributed.initialize()` first (see the README); the mesh then spans
every process's devices.
"""

from __future__ import annotations

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from paracrine import solver


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


def to_host(a) -> np.ndarray:
    """A (possibly sharded) result as one NumPy array on this process. Under `jax.distributed` the
    member axis spans every process's devices, so each process gathers the other processes' shards
    (a collective: every process must call it, as every process runs the same program)."""
    a = jnp.asarray(a) if not isinstance(a, jax.Array) else a
    if a.is_fully_addressable:
        return np.asarray(a)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


def members(vary: dict, *, zip_values: bool = False) -> np.ndarray:
    """The (M, V) member table of {name: values}: the Cartesian product, or the i-th values together."""
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


def _members(model, params0, free, x, observe, metrics, times, dt, stepper):
    def one(v):
        params = params0
        for k, p in enumerate(free):
            params = p.set(params, v[k].astype(params0.D.dtype))
        sol = solver.simulate(model, params, t_end=times[-1], dt=dt, save_at=np.asarray(times), method=stepper,
                              observe=observe, budget=True, metrics=metrics)
        return sol.ys, sol.budget, sol.status, sol.metrics

    return jax.vmap(one)(x)


_program = eqx.filter_jit(_members)


def ensemble(model, params0, free, values, *, times, dt: float, method="rkl2", observe=None, metrics=None,
             shard: bool = True) -> dict:
    """Run every member (a row of values) with fixed steps dt; returns {"ys" (M, T, ...), "budget"
    {name: (M, S)}, "status" (M,), "metrics" {name: (M, ...)} or None, "devices"}."""
    free = tuple(free)
    grid = np.asarray(values, float).reshape(len(values), -1)
    if grid.shape[1] != len(free):
        raise ValueError(f"values have {grid.shape[1]} columns for {len(free)} free parameters {[p.name for p in free]}")
    for p, col in zip(free, grid.T):
        bad = [v for v in col if not (p.transform.allowed(float(v)) or (p.kind == "fraction" and 0.0 <= v <= 1.0))]
        if bad:
            raise ValueError(f"sweep value {float(bad[0])!r} for {p.name}; allowed: {p.transform.domain} ({p.unit})")
    times = tuple(float(t) for t in np.atleast_1d(np.asarray(times, float)))
    stepper = method
    if isinstance(method, str):
        hi = params0
        for p, col in zip(free, grid.T):  # plan an explicit stepper for the stiffest member
            hi = max((p.set(hi, jnp.asarray(v, params0.D.dtype)) for v in (col.min(), col.max())),
                     key=lambda q: float(jnp.max(solver.spectral_bound(model, q))))
        stepper = solver.plan(model, hi, dt=dt, method=method)
    M = len(grid)
    x = shard_rows(grid, params0.D.dtype, shard=shard)
    ys, budget, status, acc = _program(model, params0, free, x, observe, metrics, times, float(dt), stepper)
    spread = len(status.sharding.device_set)
    cut = lambda a: to_host(a)[:M]  # noqa: E731 - drop the padding
    return {"ys": jax.tree.map(cut, ys), "budget": {k: cut(v) for k, v in budget.items()}, "status": cut(status),
            "metrics": None if acc is None else {k: cut(v) for k, v in acc.items()}, "devices": spread}
