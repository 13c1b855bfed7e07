"""Sweeps over any scenario key by its path: `injection[0].repeat.every`, `injection[0].route`,
`medium[0].volume`, `geometry.mesh_size`, counts, doses.

Each member is the scenario file with those keys set, loaded and checked like a file of its own
(an error names the key, the value and the member). Members are grouped by structure: members
whose model (mesh, placements, factors, reactions) and parameter shapes are equal differ only in
numbers, so each such group runs as one vmapped program (`jax.vmap` over the stacked parameters)
and compiles once; members that change the structure (a route, a number of doses, a mesh) form
groups of their own, compiled apart. Every member gets the metrics of `paracrine run` for the
border zone (or the tissue): AUC, peak mean and its time, hours above the threshold, the exposed
volume share, the secreted amount and the budget closure.
"""

from __future__ import annotations

import copy
import itertools
import tomllib

import numpy as np

PG_PER_ML = 1e3
#: top-level tables of a scenario file: a --vary name starting with one of them (or holding an index) is a
#: key path; `cells.*` names stay free parameters (cells.dose, cells.washout, ...), as factor names do
TABLES = ("title", "geometry", "time", "output", "factors", "injection", "medium", "data")


def is_key_path(name: str) -> bool:
    head = name.split(".", 1)[0].split("[", 1)[0]
    return "[" in name or head in TABLES


def parse_path(path: str) -> list:
    """'injection[0].repeat.every' -> ['injection', 0, 'repeat', 'every'] (checked before any work; the
    parts are the ones `design.set_key` walks)."""
    from .design import _PART

    out = []
    for part in path.split("."):
        m = _PART.match(part)
        if not m:
            raise ValueError(f"--vary {path}: {part!r} is not a key or key[index]; allowed: e.g. "
                             "injection[0].repeat.every, medium[0].volume, geometry.mesh_size")
        out += [m.group(1)] + ([int(m.group(2))] if m.group(2) is not None else [])
    return out


def parse_value(text: str):
    """A value as it would be written in TOML: a number, true/false, or a string ('1 d', 'intracoronary')."""
    from .design import typed

    return typed(text)


def members(text: str, vary: dict, *, zip_values: bool = False) -> list[dict]:
    """[{key: value}] of every member (Cartesian product, or the i-th values together)."""
    keys = list(vary)
    vals = [vary[k] for k in keys]
    if zip_values:
        if len({len(v) for v in vals}) != 1:
            raise ValueError(f"--zip needs equally many values per key, got {[len(v) for v in vals]}")
        rows = list(zip(*vals))
    else:
        rows = list(itertools.product(*vals))
    return [dict(zip(keys, r)) for r in rows]


def scenarios(text: str, source: str, rows: list[dict]):
    """The scenario of each member, loaded and checked (a ScenarioError names the member and the key)."""
    import tomli_w

    from . import scenario as sc
    from .design import set_keys

    out = []
    base = tomllib.loads(text)
    for m, row in enumerate(rows):
        raw = copy.deepcopy(base)
        set_keys(raw, row.items(), option="--vary")   # the one key-path mechanism, shared with design --choose
        label = ", ".join(f"{k} = {v!r}" for k, v in row.items())
        out.append(sc.loads(tomli_w.dumps(raw), source=f"{source} (sweep member {m}: {label})"))
    return out


def _structure(built, ts):
    """What must be equal for two members to share one vmapped program."""
    import equinox as eqx
    import jax

    arrays, static = eqx.partition(built.model, eqx.is_array)
    leaves = jax.tree.leaves(built.params)
    return (static, tuple(ts), jax.tree.structure(built.params),
            tuple((np.shape(x), np.asarray(x).dtype.str) for x in leaves), arrays)


def _same(a, b) -> bool:
    import equinox as eqx

    return (a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[3] == b[3]
            and bool(eqx.tree_equal(a[4], b[4])))


def groups(builts, times) -> list[list[int]]:
    """Member indices grouped by equal structure (in order of first appearance)."""
    keys, out = [], []
    for m, (b, ts) in enumerate(zip(builts, times)):
        k = _structure(b, ts)
        for g, kk in enumerate(keys):
            if _same(k, kk):
                out[g].append(m)
                break
        else:
            keys.append(k)
            out.append([m])
    return out


def run_group(builts, ts, *, dt=None):
    """One vmapped program over the members of a group: (means (M, T, S, R), budget {k: (M, S)}, acc, status)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from paracrine import solver

    from .calibrate import fixed_step

    b0 = builts[0]
    d = b0.scenario.data
    model = b0.model
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *[b.params for b in builts])
    stiffest = max(builts, key=lambda b: float(jnp.max(solver.spectral_bound(model, b.params))))
    h = fixed_step(b0, dt)
    stepper = solver.plan(model, stiffest.params, dt=h, method=d["time"]["method"])
    thresholds = [np.inf if d["factors"][f]["threshold"] is None else d["factors"][f]["threshold"] for f in model.factors]
    metrics = solver.Exposure.of(model, thresholds, dtype=b0.params.D.dtype)
    observe = solver.observe.region_means(model)

    @eqx.filter_jit
    def program(model, params):
        def one(p):
            sol = solver.simulate(model, p, t_end=float(ts[-1]), dt=h, save_at=np.asarray(ts), method=stepper,
                                  observe=observe, budget=True, metrics=metrics)
            return sol.ys, sol.budget, sol.metrics, sol.status, sol.final, sol.bound
        return jax.vmap(one)(params)

    ys, budget, acc, status, final, bound = program(model, params)
    return (np.asarray(ys), {k: np.asarray(v) for k, v in budget.items()}, {k: np.asarray(v) for k, v in acc.items()},
            np.asarray(status), np.asarray(final), None if bound is None else np.asarray(bound))


def member_row(built, acc, budget, status, final, bound) -> dict:
    """The run's border-zone (or tissue) metrics of one member, names with units."""
    from paracrine import solver
    from paracrine.solver.metrics import exposed_share

    from .build import region_volumes

    d = built.scenario.data
    model = built.model
    r = model.regions.index("border") if "border" in model.regions else 0
    W = region_volumes(built.disc)
    vol = W.sum(axis=1)
    share = np.asarray(exposed_share(acc["above_node"], W, d["output"]["exposure"]))
    row = {"status": solver.STATUS_MESSAGES[int(status)]}
    for s, f in enumerate(model.factors):
        row[f"{f}.auc_pg_per_mL_h"] = float(acc["auc"][s, r]) * PG_PER_ML / 3600.0
        row[f"{f}.peak_mean_pg_per_mL"] = float(acc["peak_mean"][s, r]) * PG_PER_ML
        row[f"{f}.peak_mean_time_h"] = float(acc["peak_mean_time"][s, r]) / 3600.0
        if d["factors"][f]["threshold"] is not None:
            row[f"{f}.mean_above_threshold_h"] = float(acc["above_mean"][s, r]) / 3600.0
            row[f"{f}.exposed_volume_fraction"] = float(share[s, r])
        secreted = float(budget["secreted"][s])
        removed = sum(float(v[s]) for k, v in budget.items() if k != "secreted")
        left = float(vol @ final[s].reshape(-1)) + (0.0 if bound is None else float(vol @ bound[s].reshape(-1)))
        row[f"{f}.secreted_pg"] = secreted
        row[f"{f}.budget_closure_fraction"] = abs(secreted - removed - left) / secreted if secreted > 0 else 0.0
    return row


def sweep(text: str, source: str, vary: dict, *, zip_values: bool = False, progress=None, dt=None) -> dict:
    """Run every member of a key-path sweep: {"keys", "rows" [{key: value}], "metrics" [dict], "groups"
    [[member]], "ts"}; progress(i, n) after each group."""
    from .build import build
    from .scenario import save_times

    rows = members(text, vary, zip_values=zip_values)
    scens = scenarios(text, source, rows)
    builts = [build(s) for s in scens]
    times = [tuple(float(t) for t in save_times(s)) for s in scens]
    grouped = groups(builts, times)
    metrics = [None] * len(rows)
    for gi, g in enumerate(grouped):
        _, budget, acc, status, final, bound = run_group([builts[m] for m in g], times[g[0]], dt=dt)
        for k, m in enumerate(g):
            metrics[m] = member_row(builts[m], {n: v[k] for n, v in acc.items()}, {n: v[k] for n, v in budget.items()},
                                    status[k], final[k], None if bound is None else bound[k])
        if progress is not None:
            progress(gi + 1, len(grouped), len(g))
    return {"keys": list(vary), "rows": rows, "metrics": metrics, "groups": grouped, "ts": times}


def write(folder, res: dict, *, source: str = "") -> None:
    """sweep.csv (one row per member: the keys' values, then the metrics) and figures/sweep.png."""
    import csv
    import os
    from pathlib import Path

    folder = Path(folder)
    keys = res["keys"]
    names = list(res["metrics"][0])
    tmp = folder / ".sweep.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys + ["group"] + names)
        group_of = {m: g for g, ms in enumerate(res["groups"]) for m in ms}
        for m, (row, met) in enumerate(zip(res["rows"], res["metrics"])):
            w.writerow([row[k] for k in keys] + [group_of[m]]
                       + [f"{met[n]:.6g}" if isinstance(met[n], float) else met[n] for n in names])
    os.replace(tmp, folder / "sweep.csv")
    (folder / "figures").mkdir(exist_ok=True)
    plot(folder / "figures" / "sweep.png", res)


def plot(path, res: dict) -> None:
    """The border-zone AUC and the exposed volume share (first factor with a threshold) against the
    first key: a dose-response curve for numbers, bars for choices; one series per value of the others."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys, rows, mets = res["keys"], res["rows"], res["metrics"]
    first = keys[0]
    factors = [n.split(".")[0] for n in mets[0] if n.endswith(".auc_pg_per_mL_h")]
    shown = [f"{factors[0]}.auc_pg_per_mL_h"]
    exposed = [n for n in mets[0] if n.endswith(".exposed_volume_fraction")]
    shown += exposed[:1]
    xs = list(dict.fromkeys(r[first] for r in rows))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    others = list(dict.fromkeys(tuple((k, r[k]) for k in keys[1:]) for r in rows))
    fig, axes = plt.subplots(1, len(shown), figsize=(4.6 * len(shown) + 1.5, 3.6), squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], shown):
        for j, rest in enumerate(others):
            sel = [(r[first], m[name]) for r, m in zip(rows, mets) if tuple((k, r[k]) for k in keys[1:]) == rest]
            label = ", ".join(f"{k} = {v}" for k, v in rest) or None
            if numeric:
                sel.sort()
                ax.plot([a for a, _ in sel], [b for _, b in sel], "o-", label=label)
            else:
                width = 0.8 / max(len(others), 1)
                pos = {x: i for i, x in enumerate(xs)}
                ax.bar([pos[a] + (j - (len(others) - 1) / 2) * width for a, _ in sel], [b for _, b in sel], width,
                       label=label)
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs)), [str(x) for x in xs], rotation=20, fontsize=8)
        ax.set_xlabel(first)
        unit = "pg/mL h" if name.endswith("auc_pg_per_mL_h") else "share"
        ax.set_ylabel(f"{name.split('.')[0]} {'AUC' if 'auc' in name else 'exposed volume'} ({unit})")
        ax.grid(alpha=0.3)
    if any(label for label in [", ".join(f"{k} = {v}" for k, v in rest) for rest in others]):
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
    fig.suptitle("border zone, by sweep member", fontsize=10, y=1.02)
    fig.savefig(path, dpi=110)
    plt.close(fig)
