"""Therapy design for a scenario: which dose, timing, schedule (and, enumerated, which route,
number of doses, product) reaches the target best within the limits.

    spec = paracrine.design.Spec(objectives=["hours_above:VEGF"], controls={"injection[0].dose": (1e5, 2e6),
                                 "injection[0].time": (0, 7 * 86400.0)}, budget=1e6)
    out = paracrine.design.design([scenario], spec)          # out["ranked"][0] is the best alternative

Objectives (maximised; several at once: a smooth minimum of each over its value at the start):

    hours_above:F[@REGION]        hours the region mean of factor F stays above F's threshold
    exposed:F[:DURATION][@REGION] volume share of the region above F's threshold for at least DURATION
                                  (default: the scenario's output.exposure)
    auc:F[@REGION]                time integral of the region mean
    trough:F[:TIME][@REGION]      the region mean at TIME (default: the end)

REGION defaults to the border zone. The optimiser works on smooth surrogates (time above
threshold through a logistic of width `width` x threshold, the exposed share through a logistic
in the time above), on fixed steps of `dt`; the reported numbers at the optimum (and at the
start) are the exact metrics of a run at the scenario's own time settings.

Constraints: `budget` (total cells over all injections: dose x number of doses), `medium_budget`
(total medium volume), `max_volume` (medium volume per procedure), `max_site_volume` (per
site), `peak_ceiling` {factor: largest local concentration anywhere in the tissue}, and
`procedures` (the most procedures an alternative may use; alternatives with more are skipped).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
import tomllib
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from paracrine import fitting
from paracrine import solver
from paracrine.fitting import design as fd

from .calibrate import PG_PER_ML, fixed_step, member_metrics
from .catalogue import available, delivery_profiles
from .scenario import POINT_ROUTES, ScenarioError, loads, save_times
from .units import suggest

DAY, HOUR = 86400.0, 3600.0
KINDS = ("hours_above", "exposed", "auc", "trough")


@dataclasses.dataclass
class Spec:
    objectives: list                      # objective strings (see the module docstring)
    controls: dict                        # {name: (low, high)} natural (internal) units
    initial: dict = dataclasses.field(default_factory=dict)
    budget: float | None = None           # cells
    medium_budget: float | None = None    # mm^3
    max_volume: float | None = None       # mm^3 per procedure
    max_site_volume: float | None = None  # mm^3 per site
    peak_ceiling: dict = dataclasses.field(default_factory=dict)   # {factor: pg/mm^3}
    procedures: int | None = None
    choose: dict = dataclasses.field(default_factory=dict)         # {scenario key path: [values]}
    dt: float | None = None               # s, the optimiser's fixed step
    width: float = 0.1
    starts: int = 1                       # optimisations per alternative: the scenario's start, then random ones
    seed: int = 0
    max_outer: int = 12
    max_inner: int = 60
    tol: float = 1e-3


# ---------------------------------------------------------------- scenario keys by path

_PART = re.compile(r"^([A-Za-z_][A-Za-z_0-9]*)(?:\[(\d+)\])?$")


def set_key(raw: dict, path: str, value, *, option: str = "--choose") -> None:
    """raw[path] = value for a dotted path with list indices, e.g. `injection[0].repeat.count`;
    `injection[0].repeat.count = 1` removes the repeat (one dose). Shared by `paracrine design
    --choose` and `paracrine sweep --vary` (`option` names the one in messages)."""
    parts = path.split(".")
    node = raw
    for i, part in enumerate(parts):
        m = _PART.match(part)
        if not m:
            raise ScenarioError(f"{option} {path}: {part!r} is not a key or key[index]; allowed: e.g. "
                                "injection[0].repeat.every, medium[0].volume, geometry.mesh_size")
        key, idx = m.group(1), m.group(2)
        last = i == len(parts) - 1
        if idx is not None:
            lst = node.get(key)
            if not isinstance(lst, list) or int(idx) >= len(lst):
                n = len(lst) if isinstance(lst, list) else 0
                raise ScenarioError(f"{option} {path}: the scenario has no {key}[{idx}] ({n} given); allowed index "
                                    f"0 to {n - 1}" if n else f"{option} {path}: the scenario has no [[{key}]] table")
            if last:
                lst[int(idx)] = value
                return
            node = lst[int(idx)]
            continue
        if last:
            if key == "count" and parts[-2] == "repeat" and value == 1:
                owner = _walk(raw, parts[:-2])
                owner.pop("repeat", None)
                return
            if key == "count" and parts[-2] == "repeat":
                node.setdefault("every", "1 d")
            node[key] = value
            return
        if key == "repeat" and key not in node:
            node[key] = {}
        if not isinstance(node.get(key), dict):
            raise ScenarioError(f"{option} {path}: the scenario has no table {'.'.join(parts[:i + 1])}")
        node = node[key]


def set_keys(raw: dict, items, *, option: str = "--choose") -> None:
    """set_key for each (path, value); a `repeat.count` goes after the other keys (a count of 1 removes
    the repeat table, which another key of it would otherwise bring back without its count)."""
    for path, value in sorted(items, key=lambda kv: kv[0].endswith("repeat.count")):
        set_key(raw, path, value, option=option)


def _walk(raw, parts):
    node = raw
    for part in parts:
        m = _PART.match(part)
        key, idx = m.group(1), m.group(2)
        node = node.setdefault(key, {}) if idx is None else node[key][int(idx)]
    return node


def typed(text: str):
    """A --choose or --vary value as TOML would read it (a number, true/false, or a string)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def alternatives(scenario_text: str, source: str, choose: dict, base=None) -> list[tuple[str, str, dict]]:
    """(label, TOML text, raw) for every combination of the --choose values."""
    import itertools

    import tomli_w

    raw0 = tomllib.loads(scenario_text)
    keys = list(choose)
    out = []
    for combo in itertools.product(*[choose[k] for k in keys]) if keys else [()]:
        raw = copy.deepcopy(raw0)
        set_keys(raw, [(k, typed(v) if isinstance(v, str) else v) for k, v in zip(keys, combo)])
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, combo)) or Path(source).stem
        out.append((label, tomli_w.dumps(raw), raw))
    return out


# ---------------------------------------------------------------- objectives and constraints

def _region(built, name, what):
    regions = list(built.model.regions)
    if name is None:
        return regions.index("border") if "border" in regions else 0
    if name not in regions:
        raise ScenarioError(f"{what}: unknown region {name!r}{suggest(name, regions)} allowed: {regions}")
    return regions.index(name)


def _duration(text, what):
    from .units import parse

    try:
        return float(parse(text, "time", what))
    except ValueError as err:
        raise ScenarioError(f"{what}: {err}") from None


def parse_objective(built, text: str, weights, *, smooth: bool, width: float, t_index: dict):
    """(quantity, label, unit, to_reported) of one objective string."""
    d = built.scenario.data
    what = f"--objective {text!r}"
    body, _, reg = text.partition("@")
    parts = body.split(":")
    kind = parts[0]
    if kind not in KINDS:
        raise ScenarioError(f"{what}: unknown objective {kind!r}{suggest(kind, KINDS)} allowed: {list(KINDS)} "
                            "(e.g. hours_above:VEGF, exposed:VEGF:24h, auc:HGF@border, trough:VEGF:7d)")
    if len(parts) < 2 or not parts[1]:
        raise ScenarioError(f"{what}: name the factor, e.g. {kind}:{built.model.factors[0]}")
    f = parts[1]
    factors = list(built.model.factors)
    if f not in factors:
        raise ScenarioError(f"{what}: unknown factor {f!r}{suggest(f, factors)} allowed: {factors}")
    s, r = factors.index(f), _region(built, reg or None, what)
    rname = built.model.regions[r]
    extra = parts[2] if len(parts) > 2 else None
    if len(parts) > 3:
        raise ScenarioError(f"{what}: too many ':' parts; allowed: KIND:FACTOR[:VALUE][@REGION]")
    if kind in ("hours_above", "exposed") and d["factors"][f]["threshold"] is None:
        raise ScenarioError(f"{what}: factor {f} has no threshold; set factors.{f}.threshold in the scenario")
    if kind == "hours_above":
        if extra is not None:
            raise ScenarioError(f"{what}: hours_above takes no value; allowed: hours_above:{f}[@REGION]")
        return fd.Accumulated("above_mean", s, r), f"hours {f} above threshold ({rname})", "h", 1 / HOUR
    if kind == "auc":
        if extra is not None:
            raise ScenarioError(f"{what}: auc takes no value; allowed: auc:{f}[@REGION]")
        return fd.Accumulated("auc", s, r), f"AUC of {f} ({rname})", "pg h/mL", PG_PER_ML / HOUR
    if kind == "exposed":
        dur = d["output"]["exposure"] if extra is None else _duration(extra, what)
        if not 0 < dur <= d["time"]["end"]:
            raise ScenarioError(f"{what}: duration {dur / HOUR:g} h; allowed: (0, time.end]")
        q = fd.ExposedShare(jnp.asarray(weights), s, r, float(dur), width if smooth else 0.0)
        return q, f"share of {rname} with {f} above threshold for {dur / HOUR:g} h", "1", 1.0
    t = d["time"]["end"] if extra is None else _duration(extra, what)
    if not 0 < t <= d["time"]["end"]:
        raise ScenarioError(f"{what}: time {t / DAY:g} d; allowed: (0, time.end]")
    t_index.setdefault(t, len(t_index))
    return fd.Saved(t_index[t], (s, r)), f"{f} mean at {t / DAY:g} d ({rname})", "pg/mL", PG_PER_ML


def _weights(built) -> np.ndarray:
    return np.asarray(solver.Exposure.of(built.model).weights, float)


def quantities(built, spec: Spec, controls, *, smooth: bool, scales=None):
    """The objective, the constraints and the save times the quantities need, for one alternative."""
    W = _weights(built)
    t_index: dict = {}
    terms = [parse_objective(built, o, W, smooth=smooth, width=spec.width, t_index=t_index) for o in spec.objectives]
    if len(terms) == 1:
        objective = terms[0][0]
    else:
        objective = fd.SoftMin(tuple(q for q, *_ in terms), tuple(scales or [1.0] * len(terms)))
    cons = constraints(built, spec, controls)
    saves = tuple(sorted(t_index, key=t_index.get))
    return objective, terms, cons, saves


def constraints(built, spec: Spec, controls) -> list:
    d = built.scenario.data
    names = [c.name for c in controls]
    out = []
    if spec.budget is not None:
        w, fixed = np.zeros(len(names)), 0.0
        for k, inj in enumerate(d["injections"]):
            n = len(inj["times"])
            key = f"injection[{k}].dose"
            if key in names:
                w[names.index(key)] = n
            else:
                fixed += inj["dose"] * n
        if not w.any():
            raise ScenarioError(f"--budget {spec.budget:g} cells: no injection dose is a control; add --control "
                                "injection[0].dose=LOW,HIGH")
        if fixed >= spec.budget:
            raise ScenarioError(f"--budget {spec.budget:g} cells: the doses that are not controls already use "
                                f"{fixed:g} cells; the budget is infeasible")
        out.append(fd.Constraint(fd.ControlSum(w), upper=spec.budget - fixed, name="cell budget", unit="cells"))
    vol_keys = [(k, m) for k, m in enumerate(d["media"])]
    if spec.medium_budget is not None:
        w, fixed = np.zeros(len(names)), 0.0
        for k, m in vol_keys:
            key = f"medium[{k}].volume"
            if key in names:
                w[names.index(key)] = len(m["times"])
            else:
                fixed += m.get("volume", 0.0) * len(m["times"])
        if not w.any():
            raise ScenarioError("--medium-budget: no medium volume is a control; add --control medium[0].volume=LOW,HIGH")
        if fixed >= spec.medium_budget:
            raise ScenarioError(f"--medium-budget {spec.medium_budget:g} mm^3: the fixed volumes already use "
                                f"{fixed:g} mm^3; the budget is infeasible")
        out.append(fd.Constraint(fd.ControlSum(w), upper=spec.medium_budget - fixed, name="medium budget",
                                 unit="mm^3"))
    for limit, per_site, label in ((spec.max_volume, False, "volume per procedure"),
                                   (spec.max_site_volume, True, "volume per site")):
        if limit is None:
            continue
        for k, m in vol_keys:
            sites = (m["sites"].get("n") or len(m["sites"].get("points", []))) if m["route"] in POINT_ROUTES else 1
            div = sites if per_site else 1
            key = f"medium[{k}].volume"
            if key in names:
                w = np.zeros(len(names))
                w[names.index(key)] = 1.0 / div
                out.append(fd.Constraint(fd.ControlSum(w), upper=limit, name=f"medium[{k}] {label}", unit="mm^3"))
            elif m.get("volume", 0.0) / div > limit:
                raise ScenarioError(f"--max{'-site' if per_site else ''}-volume {limit:g} mm^3: medium[{k}] has "
                                    f"{m['volume'] / div:g} mm^3 {label} and its volume is not a control; infeasible")
    # a schedule whose controls move doses stays within the run: t0 + (J - 1) every <= end
    end = d["time"]["end"]
    for what, lst in (("injection", d["injections"]), ("medium", d["media"])):
        for k, x in enumerate(lst):
            J, tk, ek = len(x["times"]), f"{what}[{k}].time", f"{what}[{k}].every"
            if tk not in names and ek not in names:
                continue
            w, fixed = np.zeros(len(names)), 0.0
            if tk in names:
                w[names.index(tk)] = 1.0
            else:
                fixed += x["times"][0]
            if J > 1:
                if ek in names:
                    w[names.index(ek)] = J - 1
                else:
                    fixed += x["times"][-1] - x["times"][0]
            last = end - x.get("duration", 0.0) - 60.0
            if not w.any() or np.all(w[np.asarray([n in (tk, ek) for n in names])] == 0):
                continue
            if fixed >= last:
                raise ScenarioError(f"--control {tk}: the fixed part of the schedule already ends at "
                                    f"{fixed / HOUR:g} h, after time.end; infeasible")
            hi = sum(spec.controls[n][1] * w[names.index(n)] for n in (tk, ek) if n in names) + fixed
            if hi > last:
                out.append(fd.Constraint(fd.ControlSum(w), upper=last - fixed, name=f"{what}[{k}] last dose before the end",
                                         unit="s"))
    for c in out:   # a limit on controls that their lower bounds already break
        w = np.asarray(c.quantity.weights, float)
        least = sum(wk * spec.controls[n][0] for wk, n in zip(w, names) if wk > 0)
        if np.all(w >= 0) and least > c.upper * (1 + 1e-12):
            raise ScenarioError(f"{c.name}: the lower bounds of the controls already give {least:g} {c.unit} > the "
                                f"limit {c.upper:g} {c.unit}; infeasible (lower the bounds or raise the limit)")
    W = _weights(built)
    for f, ceiling in spec.peak_ceiling.items():
        factors = list(built.model.factors)
        if f not in factors:
            raise ScenarioError(f"--peak-ceiling {f}: unknown factor{suggest(f, factors)} allowed: {factors}")
        s = factors.index(f)
        for r, reg in enumerate(built.model.regions):
            if W[:, r].sum() > 0:
                out.append(fd.Constraint(fd.Accumulated("peak_max", s, r), upper=float(ceiling),
                                         name=f"{f} peak in {reg}", unit="pg/mm^3"))
    return out


def procedures(built) -> int:
    d = built.scenario.data
    return sum(len(x["times"]) for x in d["injections"] + d["media"])


# ---------------------------------------------------------------- site positions

_SITE = re.compile(r"^(injection|medium)\[(\d+)\]\.site\[(\d+)\]\.([xyz])$")


@dataclasses.dataclass(frozen=True, eq=False)
class SiteControl(fitting.ModelControl):
    toml: object = None
    where: tuple = ()        # (what, k, site p, source index i, row of the site in source i)
    site_rows: tuple = ()    # the site p of every row of source i


def _delivery_index(built, what, k):
    return k if what == "injection" else len(built.scenario.data["injections"]) + k


def site_controls(built, names, model):
    """ModelControls for `injection[k].site[p].x|y|z` names (mm), and the model whose point sources of
    those deliveries are `solver.MovableSource`s (P1 weights from traced positions: differentiable in them)."""
    import equinox as eqx

    d = built.scenario.data
    disc = built.disc
    wanted = {}
    for n in names:
        m = _SITE.match(n)
        if m:
            what, k, p, axis = m.group(1), int(m.group(2)), int(m.group(3)), "xyz".index(m.group(4))
            wanted.setdefault((what, k), []).append((n, p, axis))
    if not wanted:
        return {}, model
    profiles = delivery_profiles(built)
    sources = list(model.sources)
    where = {}    # (what, k, p) -> (source index, row)
    for (what, k), items in wanted.items():
        lst = d["injections" if what == "injection" else "media"]
        if k >= len(lst) or lst[k]["route"] not in POINT_ROUTES:
            raise ScenarioError(f"--control {items[0][0]}: {what}[{k}] is not a delivery to point sites "
                                f"(routes {list(POINT_ROUTES)})")
        pts = np.asarray(built.sites[_delivery_index(built, what, k)], float)
        for n, p, axis in items:
            if axis >= pts.shape[1]:
                raise ScenarioError(f"--control {n}: the geometry is {pts.shape[1]}-D; allowed axes "
                                    f"{list('xyz'[:pts.shape[1]])}")
            if p >= len(pts):
                raise ScenarioError(f"--control {n}: {what}[{k}] has {len(pts)} sites; allowed site[0] to "
                                    f"site[{len(pts) - 1}]")
        loc_nodes = disc.locate(pts)[0]
        for i in profiles[(what, k)]:
            src = sources[i]
            rows = [int(np.flatnonzero([set(map(int, r)) == set(map(int, q)) for q in np.asarray(src.nodes)])[0])
                    if any(set(map(int, r)) == set(map(int, q)) for q in np.asarray(src.nodes)) else -1
                    for r in loc_nodes]
            mine = [p for p, r in enumerate(rows) if r >= 0]
            order = np.argsort([rows[p] for p in mine])
            mine = [mine[j] for j in order]
            # candidates of any region: on a coarse mesh a border-zone site's containing cell may be a
            # neighbour's (build assigns such sites to their region), and it must be among them
            movable = solver.MovableSource if disc.kind == "mesh" else solver.MovableGridSource
            sources[i] = movable.around(disc, pts[mine], name=src.name, dtype=built.params.D.dtype)
            for row, p in enumerate(mine):
                where[(what, k, p)] = (i, row, tuple(mine))
    model = eqx.tree_at(lambda m: m.sources, model, tuple(sources))
    out = {}
    for (what, k), items in wanted.items():
        for n, p, axis in items:
            i, row, rows = where[(what, k, p)]

            def get(m, i=i, row=row, axis=axis):
                return m.sources[i].x[row, axis]

            def set_(m, v, i=i, row=row, axis=axis):
                return eqx.tree_at(lambda q: q.sources[i].x, m, m.sources[i].x.at[row, axis].set(v))

            out[n] = SiteControl(n, get, set_, fitting.Identity(), None, "mm", None, (what, k, p, i, row), rows)
    return out, model


def delivered_sites(built, src) -> np.ndarray:
    """Where a MovableSource's sites deliver (inside the tissue): `MovableSource.placed`."""
    return np.asarray(src.placed(), float)


def site_positions(built, model, controls) -> dict:
    """{(what, k): (P, 3) sites} of the deliveries with moved sites: the moved ones where they
    delivers (`delivered_sites`), the others where the scenario put them."""
    out = {}
    for c in controls:
        if not isinstance(c, SiteControl):
            continue
        what, k, p, i, row = c.where
        key = (what, k)
        if key not in out:
            out[key] = np.array(built.sites[_delivery_index(built, what, k)], float)
        out[key][p] = delivered_sites(built, model.sources[i])[row]
    return out


def p1_model(built, model, controls):
    """The model with every MovableSource back to P1 point weights, at `site_positions`."""
    import equinox as eqx

    pos = site_positions(built, model, controls)
    srcs = list(model.sources)
    for c in controls:
        if isinstance(c, SiteControl):
            what, k, p, i, row = c.where
            srcs[i] = solver.PointSource.at(built.disc, pos[(what, k)][list(c.site_rows)], name=srcs[i].name)
    # (on a grid, PointSource.at and MovableGridSource share the trilinear rule)
    return eqx.tree_at(lambda m: m.sources, model, tuple(srcs))


# ---------------------------------------------------------------- exact evaluation

def exact_run(built, params, spec: Spec, controls, theta=None, model=None):
    """The exact metrics at params (the scenario's own time settings, exact exposure, P1 point sources):
    a dict with the objective terms, the constraint values, the run metrics and the border-zone course."""
    d = built.scenario.data
    model = built.model if model is None else p1_model(built, model, controls)
    objective, terms, cons, saves = quantities(built, spec, controls, smooth=False)
    ts = save_times(built.scenario)
    extra = [t for t in saves if not np.any(np.isclose(ts, t))]
    ts_all = np.unique(np.concatenate([ts, extra]))
    thresholds = [np.inf if d["factors"][f]["threshold"] is None else d["factors"][f]["threshold"] for f in model.factors]
    ex = solver.Exposure.of(model, thresholds, dtype=params.D.dtype)
    kw = dict(dt=d["time"]["dt"]) if d["time"]["dt"] is not None else dict(rtol=d["time"]["rtol"])
    method = d["time"]["method"]
    sol = solver.simulate(model, params, t_end=float(ts_all[-1]), save_at=ts_all, method=method,
                          observe=solver.observe.region_means(model), metrics=ex, budget=True, **kw)
    means = np.asarray(sol.ys, float)            # (T, S, R)
    idx = [int(np.argmin(np.abs(ts_all - t))) for t in saves]
    ys = jnp.asarray(means[idx]) if idx else None
    th = jnp.asarray(np.zeros(len(controls)) if theta is None else theta)
    out = fd.Outcome({k: v for k, v in sol.metrics.items()}, ys, th)
    vals = [float(q(out)) * conv for q, _, _, conv in terms]
    row = member_metrics(built, {k: np.asarray(v, float) for k, v in sol.metrics.items()},
                         np.asarray(sol.budget["secreted"], float))
    exposure = d["output"]["exposure"]
    from paracrine.solver.metrics import exposed_share

    share = np.asarray(exposed_share(sol.metrics["above_node"], ex.weights, exposure))
    r = model.regions.index("border") if "border" in model.regions else 0
    for s, f in enumerate(model.factors):
        if d["factors"][f]["threshold"] is not None:
            row[f"{f}.exposed_share_{exposure / HOUR:g}h"] = float(share[s, r])
    cvals = [{"name": c.name, "value": float(c.quantity(out)), "upper": c.upper, "lower": c.lower, "unit": c.unit,
              "met": bool(all(g <= 1e-6 for g in np.asarray(c.scaled(out), float)))} for c in cons]
    return {"objectives": [{"label": lab, "unit": un, "value": v} for (_, lab, un, _), v in zip(terms, vals)],
            "constraints": cvals, "metrics": row, "status": solver.STATUS_MESSAGES[int(sol.status)],
            "ts": ts_all, "border_means": means[:, :, r] * PG_PER_ML,
            "steps": int(sol.stats["steps"])}


# ---------------------------------------------------------------- one alternative

def design_one(built, spec: Spec, *, progress=None) -> dict:
    """Optimise one built scenario; the result with the exact metrics at the start and the optimum."""
    avail = available(built)
    sites, model = site_controls(built, list(spec.controls), built.model)
    avail = {**avail, **sites}
    controls = []
    for name in spec.controls:
        if name not in avail:
            raise ScenarioError(f"--control {name}: unknown control{suggest(name, avail)} allowed: "
                                f"{sorted(n for n in avail if n.startswith(('injection[', 'medium[')))} "
                                "(or any free-parameter name of paracrine fit)")
        controls.append(avail[name])
    d = built.scenario.data
    dt = float(spec.dt or fixed_step(built))
    params = built.params
    thresholds = [np.inf if d["factors"][f]["threshold"] is None else d["factors"][f]["threshold"] for f in model.factors]
    metrics = solver.SmoothExposure.of(model, thresholds, width=spec.width, dtype=params.D.dtype)
    bounds = {n: tuple(b) for n, b in spec.controls.items()}

    def problem(scales=None):
        objective, terms, cons, saves = quantities(built, spec, controls, smooth=True, scales=scales)
        prob = fitting.DesignProblem(model, params, controls, objective, cons, bounds=bounds, t_end=d["time"]["end"],
                                     dt=dt, initial=spec.initial, metrics=metrics,
                                     observer=solver.observe.region_means(model) if saves else None,
                                     save_at=saves, source=built.scenario.source)
        return prob, terms

    start, terms = problem()
    if len(terms) > 1:   # several objectives: each over its value at the start (a unit where that is 0)
        out0, _ = start.outcome(jnp.asarray(start.u0))
        scales = [v if v > 0 else {"h": HOUR, "1": 0.01}.get(un, 1.0)
                  for v, un in ((float(q(out0)), un) for q, lab, un, conv in terms)]
        start, terms = problem(scales)
    res = fitting.optimise(start, max_outer=spec.max_outer, max_inner=spec.max_inner, tol=spec.tol, progress=progress)
    # more starts (a local optimiser on a landscape with plateaus): random points of the box, same program
    rng = np.random.default_rng(spec.seed)
    tried = [res]
    for _ in range(spec.starts - 1):
        other = fitting.optimise(start, max_outer=spec.max_outer, max_inner=spec.max_inner, tol=spec.tol,
                                 progress=progress, u0=rng.uniform(size=len(controls)))
        tried.append(other)
    if len(tried) > 1:
        best = max(tried, key=lambda r: (r.feasible, r.objective))
        best.history = [h for r in tried for h in r.history]
        best.evaluations = sum(r.evaluations for r in tried)
        best.theta0 = res.theta0          # the scenario's start stays the reference
        best.objective0 = res.objective0
        res = best
    p_opt, m_opt = with_controls(start.params0, controls, res.theta, start.model)
    p0, m0 = with_controls(start.params0, controls, res.theta0, start.model)
    ex0 = exact_run(built, p0, spec, controls, res.theta0, m0)
    ex1 = exact_run(built, p_opt, spec, controls, res.theta, m_opt)
    warnings = []
    for o in ex1["objectives"]:
        if o["value"] == 0:
            warnings.append(f"{o['label']} is 0 at the optimum: the threshold is never reached, and the optimiser "
                            "followed the smooth surrogate's tail only (raise the dose bounds or lower the threshold)")
    if not res.converged:
        warnings.append(f"the optimiser did not converge ({res.message}); raise --max-outer / --max-inner")
    return {"result": res, "controls": controls, "problem": start, "dt": dt, "exact_start": ex0,
            "exact_optimum": ex1, "params_opt": p_opt, "model_opt": m_opt, "warnings": warnings}


def with_controls(params, controls, theta, model):
    """(params, model) with the controls' values written in."""
    for c, v in zip(controls, theta):
        if c.on == "model":
            model = c.set(model, jnp.asarray(float(v), params.D.dtype))
        else:
            params = c.set(params, jnp.asarray(float(v), params.D.dtype))
    return params, model


def designed_text(scenario_raw: dict, controls, theta, header: str, built=None, model=None) -> str:
    """The scenario with the optimum written in; moved sites as explicit points (mm)."""
    import tomli_w

    raw = copy.deepcopy(scenario_raw)
    for c, v in zip(controls, theta):
        if not isinstance(c, SiteControl):
            c.toml(raw, float(v))
    for (what, k), pts in (site_positions(built, model, controls) if built is not None else {}).items():
        entry = raw["injection" if what == "injection" else "medium"][k]
        entry["sites"] = [[round(float(x), 6) for x in q] for q in pts]
        entry.pop("region", None)
        entry.pop("seed", None)
    return header + tomli_w.dumps(raw)


# ---------------------------------------------------------------- several alternatives

def design(scenarios, spec: Spec, *, progress=None, log=print) -> dict:
    """Every alternative (each scenario x each --choose combination) optimised and ranked by the exact
    objective at its optimum. scenarios: (text, source, base) triples."""
    from .build import build

    if not spec.objectives:
        raise ScenarioError("design: no objective given; allowed: " + ", ".join(KINDS))
    if not spec.controls:
        raise ScenarioError("design: no controls given, e.g. --control 'injection[0].dose=1e5,2e6 cells'")
    alts = []
    for text, source, base in scenarios:
        for label, alt_text, raw in alternatives(text, source, spec.choose, base):
            scen = loads(alt_text, source=f"{source} [{label}]" if spec.choose else source, base=base)
            alts.append((label if spec.choose or len(scenarios) == 1 else f"{Path(source).stem}", scen, raw))
    # every alternative built and checked (controls, objectives, limits) before the first optimisation
    plans, used = [], set()
    budget_used = {"budget": False, "medium_budget": False}
    for label, scen, raw in alts:
        built = build(scen)
        if spec.procedures is not None and procedures(built) > spec.procedures:
            log(f"  {label}: {procedures(built)} procedures > --procedures {spec.procedures}: skipped")
            continue
        names = list(spec.controls)
        sites, _ = site_controls(built, [n for n in names if _SITE.match(n)], built.model)
        known = set(available(built)) | set(sites)
        sub = dataclasses.replace(spec, controls={n: b for n, b in spec.controls.items() if n in known})
        used |= set(sub.controls)
        if not sub.controls:
            raise ScenarioError(f"design: none of the controls {names} applies to the alternative {label}")
        if not any(n.startswith("injection[") and n.endswith(".dose") for n in sub.controls):
            sub.budget = None
        if not any(n.startswith("medium[") and n.endswith(".volume") for n in sub.controls):
            sub.medium_budget = None
        budget_used["budget"] |= sub.budget is not None
        budget_used["medium_budget"] |= sub.medium_budget is not None
        sub.initial = {n: v for n, v in spec.initial.items() if n in sub.controls}
        quantities(built, sub, [sites[n] if n in sites else available(built)[n] for n in sub.controls], smooth=True)
        plans.append((label, scen, raw, built, sub, [n for n in spec.controls if n not in sub.controls]))
    for n in spec.controls:
        if n not in used and plans:
            b = plans[0][3]
            avail = available(b)
            raise ScenarioError(f"--control {n}: not a control of any alternative{suggest(n, avail)} allowed: "
                                f"{sorted(x for x in avail if x.startswith(('injection[', 'medium[')))} or "
                                "injection[k].site[p].x|y|z")
    for key, flag in (("budget", "--budget"), ("medium_budget", "--medium-budget")):
        if getattr(spec, key) is not None and plans and not budget_used[key]:
            what = "injection[0].dose" if key == "budget" else "medium[0].volume"
            raise ScenarioError(f"{flag}: no alternative has a {what.split('.')[-1]} control; add --control {what}=LOW,HIGH")
    results = []
    for label, scen, raw, built, sub, dropped in plans:
        n = len(sub.controls)
        log(f"  {label}: {n} control{'s' if n != 1 else ''} ({', '.join(sub.controls)})"
            + (f"; not used here: {', '.join(dropped)}" if dropped else ""))
        t0 = time.perf_counter()
        one = design_one(built, sub, progress=progress)
        one.update(label=label, scenario=scen, raw=raw, built=built, seconds=time.perf_counter() - t0, spec=sub)
        results.append(one)
    if not results:
        raise ScenarioError("design: every alternative was skipped (--procedures)")
    def score(o):
        feasible = all(c["met"] for c in o["exact_optimum"]["constraints"])
        return (feasible, _exact_objective(o))
    ranked = sorted(results, key=score, reverse=True)
    return {"ranked": ranked}


def _exact_objective(one) -> float:
    """The exact objective at the optimum: the single term, or the smallest term over its start value."""
    vals = [o["value"] for o in one["exact_optimum"]["objectives"]]
    if len(vals) == 1:
        return vals[0]
    starts = [o["value"] for o in one["exact_start"]["objectives"]]
    return min(v / (s if s > 0 else 1.0) for v, s in zip(vals, starts))
