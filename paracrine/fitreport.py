"""What `paracrine fit` writes: fit.json, the fitted scenario (TOML) and figures of data, model and band.

Values are kept in internal units (pg/cell/s, 1/s, s) and shown beside them as a biologist reads
them (`readable`): secretion per 1e6 cells per day, rates as half-lives (ln 2 / k), times in hours.
fitted.toml is the user's scenario document edited in place with tomlkit: comments, key order and
layout are kept, each changed value gets a comment saying it was fitted (and its readable value).
"""

from __future__ import annotations

import json
import math
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


def _per_volume(obs) -> np.ndarray:
    return np.zeros(len(obs), bool) if obs.per_volume is None else np.asarray(obs.per_volume, bool)


def curves(res: FitResult, points: int = 80) -> dict:
    """Model curves on a fine time grid per data series, with a 95 % band from the Laplace covariance
    (delta method through a forward-mode Jacobian)."""
    prob, obs = res.problem, res.observations
    keys = series(obs)
    t = np.linspace(0.0, float(obs.time.max()), points + 1)[1:]
    n = len(t)
    pv = _per_volume(obs)
    first = {key: k for k, key in reversed(list(enumerate(zip(obs.quantity, obs.factor, obs.where))))}
    fine = Observations(np.tile(t, len(keys)), [k[0] for k in keys for _ in t], [k[1] for k in keys for _ in t],
                        [k[2] for k in keys for _ in t], np.ones(n * len(keys)), np.ones(n * len(keys)), obs.source,
                        per_volume=np.repeat([bool(pv[first[k]]) for k in keys], n))
    from .calibrate import problem

    dense = problem(res.built, fine, prob.free, dt=prob.dt, method=prob.stepper, params=prob.params0)
    z = jnp.asarray(res.z, prob.params0.D.dtype)
    y, J = _values_and_jacobian(dense, z)
    y, J = np.asarray(y, float), np.asarray(J, float)
    sd = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", J, res.cov_z, J), 0.0))
    if res.intervals_note is not None:   # the data do not determine the parameters: no band claimed
        sd = np.zeros_like(sd)
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
        m = np.array([(qq, ff, ww) == key for qq, ff, ww in zip(obs.quantity, obs.factor, obs.where)])
        scale, unit = DISPLAY["concentration"] if _per_volume(obs)[m].any() else DISPLAY[q]
        c = cur[key]
        if res.intervals_note is None:
            ax.fill_between(c["t"] / HOUR, c["lo"] * scale, c["hi"] * scale, alpha=0.25, label="95 % band")
        ax.plot(c["t"] / HOUR, c["y"] * scale, label="fitted model")
        ax.errorbar(obs.time[m] / HOUR, obs.value[m] * scale, yerr=obs.sd[m] * scale, fmt="o", color="k", ms=4,
                    capsize=3, label="data (mean, SD)")
        ax.set_xlabel("time (h)")
        ax.set_ylabel(f"{q} ({unit})")
        ax.set_title(f"{f + ' ' if f else ''}{q}, {w}" + ("" if res.intervals_note is None else
                                                         " (no band: not determined)"), fontsize=10)
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


CELLS_DAY = 1e6 * 86400.0     # pg/cell/s -> pg/(1e6 cells)/day


def readable(unit: str, value: float, lo=None, hi=None) -> dict | None:
    """The value (and interval) in the units a biologist reads, or None where the internal unit is
    that already: pg/cell/s -> pg/1e6 cells/day; 1/s -> half-life ln 2 / k in h; s -> h."""
    def ok(x):
        return x is not None and math.isfinite(float(x))

    if unit == "pg/cell/s":
        f, name, out_unit = (lambda x: x * CELLS_DAY), "secretion", "pg/1e6 cells/day"
    elif unit == "1/s":
        f, name, out_unit = (lambda x: math.log(2) / x / 3600.0 if x > 0 else math.inf), "half_life", "h"
    elif unit == "s":
        f, name, out_unit = (lambda x: x / 3600.0), "time", "h"
    else:
        return None
    ci = None
    if ok(lo) and ok(hi):
        a, b = f(float(lo)), f(float(hi))
        ci = [min(a, b), max(a, b)]   # a half-life's interval runs the other way
    return {"as": name, "value": f(float(value)), "unit": out_unit, "ci95": ci}


def describe(name: str, unit: str, value: float, lo=None, hi=None) -> str:
    """'2160 pg/1e6 cells/day' or 't1/2 0.193 h' (with the interval when given), '' when none."""
    r = readable(unit, value, lo, hi)
    if r is None:
        return ""
    label = "t1/2 " if r["as"] == "half_life" else ""
    ci = f", 95 % [{r['ci95'][0]:.4g}, {r['ci95'][1]:.4g}] {r['unit']}" if r["ci95"] else ""
    return f"{label}{r['value']:.4g} {r['unit']}{ci}"


def _changed(doc, before, note) -> None:
    """Comment every value of the tomlkit document `doc` that differs from the plain `before` (an
    inline table or array is commented as a whole)."""
    import tomlkit.items as ti

    def walk(node, old, path):
        if isinstance(node, dict):
            keys = list(node.keys())
            for k in keys:
                item = node[k]
                o = old.get(k) if isinstance(old, dict) else None
                if _plain(item) == o:
                    continue
                if isinstance(item, (ti.Table, ti.AoT)) or (isinstance(item, dict) and not isinstance(item, ti.InlineTable)):
                    walk(item, o, path + [k])
                elif hasattr(item, "comment"):
                    before_comment = (getattr(getattr(item, "trivia", None), "comment", "") or "").lstrip("# ").strip()
                    if before_comment.startswith("fitted by paracrine fit"):
                        before_comment = ""   # a fitted scenario fitted again
                    text = note(path + [k], o, _plain(item))
                    item.comment(text + (f"; before: {before_comment}" if before_comment else ""))
        elif isinstance(node, (list, ti.AoT)):
            for i, item in enumerate(node):
                walk(item, old[i] if isinstance(old, list) and i < len(old) else None, path + [str(i)])

    walk(doc, before, [])


def _note(path, old, new) -> str:
    """'fitted by paracrine fit (was 0.5)'; for a table, the keys that changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        was = ", ".join(f"{k} = {old[k]}" for k in old if new.get(k) != old[k])
    elif isinstance(old, (str, int, float)) and not isinstance(old, bool):
        was = str(old)
    else:
        was = ""
    return "fitted by paracrine fit" + (f" (was {was})" if was else "")


def _plain(item):
    return item.unwrap() if hasattr(item, "unwrap") else item


def fitted_scenario_text(res: FitResult, scenario) -> str:
    """The scenario document with the fitted values written in (tomlkit: the user's comments, key order
    and layout kept), loadable by `paracrine run`."""
    import tomlkit

    doc = tomlkit.parse(scenario.text)
    before = tomllib.loads(scenario.text)
    base = Path(scenario.source).parent if Path(scenario.source).is_file() else Path.cwd()
    geo = doc.get("geometry", {})
    for key in ("file", "labels"):  # the fitted file lives elsewhere: keep its geometry reachable
        if key in geo and not Path(str(geo[key])).is_absolute():
            geo[key] = str((base / str(geo[key])).resolve())
    for p, v in zip(res.problem.free, res.values):
        p.toml(doc, float(v))
    _changed(doc, before, _note)
    head = [f"# fitted by paracrine fit to {res.observations.source}:"]
    for n, v, u, (lo, hi) in zip(res.names, res.values, res.units, res.intervals):
        ci = f", 95 % [{lo:.4g}, {hi:.4g}]" if res.intervals_note is None and math.isfinite(lo) else ""
        extra = describe(n, u, v, lo if ci else None, hi if ci else None)
        head.append(f"#   {n} = {v:.4g} {u}{ci}" + (f"  ({extra})" if extra else ""))
    if res.intervals_note:
        head.append(f"#   no confidence intervals: {res.intervals_note}")
    return "\n".join(head) + "\n" + tomlkit.dumps(doc)


def write(res: FitResult, scenario, folder: Path, *, figures: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    out = res.to_dict()
    obs = res.observations
    out["data"] = [{"line": (obs.lines[k] if obs.lines else None), "time_h": float(obs.time[k] / HOUR),
                    "quantity": obs.quantity[k], "factor": obs.factor[k], "where": obs.where[k],
                    "value": float(obs.value[k]), "sd": float(obs.sd[k]), "model": float(res.predictions[k])}
                   for k in range(len(obs))]
    for n, u, v, (lo, hi) in zip(res.names, res.units, res.values, res.intervals):
        claim = res.intervals_note is None
        r = readable(u, float(v), lo if claim else None, hi if claim else None)
        if r is not None:
            out["parameters"][n]["readable"] = r
    if obs.units:
        for k, row in enumerate(out["data"]):
            row["unit_in_file"] = obs.units[k]
    out["data_units"] = "internal: concentration pg/mm^3 (x 1e3 for pg/mL), amount and content pg, percent_dose a fraction"
    out["conversions"] = obs.conversions
    out["scenario"], out["data_file"] = scenario.source, obs.source
    for name, text in (("fit.json", json.dumps(out, indent=1)), ("fitted.toml", fitted_scenario_text(res, scenario))):
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
    if figures:
        plot(res, folder)
