"""Model predictions of observations, computed inside the simulation at the data times only.

`Predictor(built, obs)(params)` -> (n,) predictions in the observations' internal units; it
is traced (jit, grad, jacfwd, vmap) in params. Full fields are never stored: at each data time
an observation operator reduces the state to region means, free and total amounts and probe
values, and the rows pick from those. Cells retained come from the survival model's closed
form, so data of cells alone need no PDE solve.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

import solver

from .data import Observations

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


#: the fixed step (s) of fits and sweeps when a scenario asks for error-controlled steps: one
#: program of fixed structure for every member and every forward-mode derivative
FIXED_DT_FALLBACK = 60.0


class Predictor:
    def __init__(self, built, obs: Observations, *, method=None, dt=None, stepper=None):
        self.built, self.obs = built, obs
        model = built.model
        d = built.scenario.data
        R = model.n_regions
        self.times = np.unique(obs.time)
        probes = list(d.get("probes", {}))
        t_idx = np.searchsorted(self.times, obs.time)
        col, fac = [], []
        base = {"concentration": 0, "amount": R + 1, "content": 2 * (R + 1), "percent_dose": 2 * (R + 1)}
        for q, f, w in zip(obs.quantity, obs.factor, obs.where):
            fac.append(0 if f is None else model.factors.index(f))
            if q == "cells":
                col.append(-1)
            elif w in probes:
                col.append(3 * (R + 1) + probes.index(w))
            else:
                col.append(base[q] + (R if w == "tissue" else model.regions.index(w)))
        self.t_idx, self.col, self.fac = np.asarray(t_idx), np.asarray(col), np.asarray(fac)
        self.is_cells = np.array([q == "cells" for q in obs.quantity])
        dose = np.ones(model.n_factors)
        for s, f in enumerate(model.factors):
            injected = sum(m["amount"][f] * len(m["times"]) for m in d["media"])
            dose[s] = injected if injected > 0 else 1.0
        self.scale = np.array([1.0 / dose[s] if q == "percent_dose" else 1.0 for q, s in zip(obs.quantity, self.fac)])
        self.needs_pde = not self.is_cells.all()
        self.dt = float(dt or d["time"]["dt"] or FIXED_DT_FALLBACK)   # fits take fixed steps (jacfwd, vmap)
        self.method = method or d["time"]["method"]
        self.stepper = stepper
        if probes:
            nodes, w = built.disc.locate(np.asarray([d["probes"][p] for p in probes], float))
            self._probe = (jnp.asarray(nodes), jnp.asarray(w))
        else:
            self._probe = None

    def plan(self, params):
        """Fix the stepper (RKL2 stage count) for params: call outside jit, with the largest D a fit may reach."""
        self.stepper = solver.plan(self.built.model, params, dt=self.dt, method=self.method)
        return self.stepper

    def _observer(self, model):
        return Predictions(model.space, *(self._probe or (None, None)))

    def __call__(self, params, model=None):
        """Predictions for params; pass `model` (built.model) as an argument of a jitted caller so that its
        mesh arrays are inputs of the compiled program, not constants baked into it."""
        model = self.built.model if model is None else model
        out = jnp.zeros(len(self.obs), params.D.dtype)
        if self.needs_pde:
            if self.stepper is None:
                raise ValueError("Predictor.plan(params) first (outside jit): it fixes the stepper")
            sol = solver.simulate(model, params, t_end=float(self.times[-1]), dt=self.dt,
                                  save_at=self.times, method=self.stepper, observe=self._observer(model))
            ys = sol.ys                                       # (T, S, K)
            pde = ys[self.t_idx, self.fac, np.maximum(self.col, 0)]
            out = jnp.where(jnp.asarray(self.is_cells), 0.0, pde * jnp.asarray(self.scale, pde.dtype))
        if self.is_cells.any():
            t = jnp.asarray(self.obs.time, params.D.dtype)
            n = jnp.zeros_like(t)
            for k, sites in self.built.cell_sources:
                prof = params.sources[k]
                n = n + sites * jnp.vectorize(prof.cells)(t)
            out = jnp.where(jnp.asarray(self.is_cells), n, out)
        return out
