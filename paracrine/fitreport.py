"""What `paracrine fit` writes: fit.json, the fitted scenario (TOML) and figures of data, model and band."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from paracrine.fitting.fit import Z95, FitResult

from .data import Observations

HOUR = 3600.0
DISPLAY = {"concentration": (1e3, "pg/mL"), "amount": (1.0, "pg"), "content": (1.0, "pg"),
           "percent_dose": (100.0, "% of dose"), "cells": (1.0, "cells")}


def series(obs: Observations) -> list[tuple]:
    """The distinct (quantity, factor, where) of the data, in order of appearance."""
    out = []
    for key in zip(obs.quantity, obs.factor, obs.where):
        if key not in out:
            out.append(key)
    return out


def curves(res: FitResult, points: int = 80) -> dict:
    """Model curves on a fine time grid per data series, with a 95 % band from the Laplace covariance
    (delta method through a forward-mode Jacobian)."""
    prob, obs = res.problem, res.observations
    keys = series(obs)
    t = np.linspace(0.0, float(obs.time.max()), points + 1)[1:]
    n = len(t)
    fine = Observations(np.tile(t, len(keys)), [k[0] for k in keys for _ in t], [k[1] for k in keys for _ in t],
                        [k[2] for k in keys for _ in t], np.ones(n * len(keys)), np.ones(n * len(keys)), obs.source)
    from .calibrate import problem

    dense = problem(res.built, fine, prob.free, dt=prob.dt, method=prob.stepper, params=prob.params0)
    z = jnp.asarray(res.z, prob.params0.D.dtype)
    y, J = _values_and_jacobian(dense, z)
    y, J = np.asarray(y, float), np.asarray(J, float)
    sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", J, res.cov_z, J), 0.0))
    out = {}
    for k, key in enumerate(keys):
        sl = slice(k * n, (k + 1) * n)
        out[key] = {"t": t, "y": y[sl], "lo": np.maximum(y[sl] - Z95 * sd[sl], 0.0), "hi": y[sl] + Z95 * sd[sl]}
    return out


@eqx.filter_jit
def _values_and_jacobian(prob, z):
    f = lambda x: prob.predict(prob.params_at(x))  # noqa: E731
    return f(z), jax.jacfwd(f)(z)


def plot(res: FitResult, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    obs = res.observations
    cur = curves(res)
    keys = list(cur)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        q, f, w = key
        scale, unit = DISPLAY[q]
        c = cur[key]
        ax.fill_between(c["t"] / HOUR, c["lo"] * scale, c["hi"] * scale, alpha=0.25, label="95 % band")
        ax.plot(c["t"] / HOUR, c["y"] * scale, label="fitted model")
        m = np.array([(qq, ff, ww) == key for qq, ff, ww in zip(obs.quantity, obs.factor, obs.where)])
        ax.errorbar(obs.time[m] / HOUR, obs.value[m] * scale, yerr=obs.sd[m] * scale, fmt="o", color="k", ms=4,
                    capsize=3, label="data (mean, SD)")
        ax.set_xlabel("time (h)")
        ax.set_ylabel(f"{q} ({unit})")
        ax.set_title(f"{f + ' ' if f else ''}{q}, {w}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths = [folder / "fit.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.semilogy(np.arange(len(res.loss_history)), np.maximum(res.loss_history, 1e-300), "o-")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(f"convergence ({res.method}): {res.status}", fontsize=8)
    fig.tight_layout()
    paths.append(folder / "convergence.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def fitted_scenario_text(res: FitResult, scenario) -> str:
    """The scenario with the fitted values written in (TOML through tomli_w), loadable by `paracrine run`."""
    import tomli_w

    raw = tomllib.loads(scenario.text)
    base = Path(scenario.source).parent if Path(scenario.source).is_file() else Path.cwd()
    geo = raw.get("geometry", {})
    for key in ("file", "labels"):  # the fitted file lives elsewhere: keep its geometry reachable
        if key in geo and not Path(geo[key]).is_absolute():
            geo[key] = str((base / geo[key]).resolve())
    for p, v in zip(res.problem.free, res.values):
        p.toml(raw, float(v))
    names = ", ".join(f"{n} = {v:.4g} {u}" for n, v, u in zip(res.names, res.values, res.units))
    return f"# fitted by paracrine fit to {res.observations.source}: {names}\n" + tomli_w.dumps(raw)


def write(res: FitResult, scenario, folder: Path, *, figures: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    out = res.to_dict()
    obs = res.observations
    out["data"] = [{"line": (obs.lines[k] if obs.lines else None), "time_h": float(obs.time[k] / HOUR),
                    "quantity": obs.quantity[k], "factor": obs.factor[k], "where": obs.where[k],
                    "value": float(obs.value[k]), "sd": float(obs.sd[k]), "model": float(res.predictions[k])}
                   for k in range(len(obs))]
    out["scenario"], out["data_file"] = scenario.source, obs.source
    for name, text in (("fit.json", json.dumps(out, indent=1)), ("fitted.toml", fitted_scenario_text(res, scenario))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
    if figures:
        plot(res, folder)
