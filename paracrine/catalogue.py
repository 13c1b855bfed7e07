"""The names of free parameters, as in the scenario: `VEGF.secretion`, `VEGF.uptake.border`,
`VEGF.decay`, `VEGF.half_life`, `VEGF.D`, `VEGF.clearance.core`, `VEGF.hill.Vmax`, `cells.washout`,
`cells.retention`, `cells.fast_fraction`, `cells.half_life_fast`, `cells.half_life_slow`,
`cells.dose` (cells per injection, every injection), `medium.retention`, and per delivery (the
controls of `paracrine design`, which sweeps take too): `injection[k].dose` (cells per dose),
`injection[k].time` (the first dose's time; repeats keep their interval), `injection[k].every`
(the interval of a repeated dose), `medium[k].volume`,
`medium[k].concentration` (of the factor with the highest concentration, the others in
proportion), `medium[k].time`, `medium[k].every`, `medium[k].duration` (the infusion time).

Each name is a `fitting.FreeParameter` over the built scenario's `solver.Params` (log coordinate
for positive quantities, logit for fractions) that also knows how to write its value back into
the scenario's TOML (`ScenarioParameter.toml`). A name without a region (`VEGF.uptake`) sets
every region to one value.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from paracrine.fitting import FreeParameter, Identity, Log, Logit

from .units import suggest

LN2 = math.log(2)


@dataclasses.dataclass(frozen=True, eq=False)
class ScenarioParameter(FreeParameter):
    toml: Callable | None = None   # (raw scenario dict, value) -> None: write the value back


def _P(name, kind, unit, get, set_, toml) -> ScenarioParameter:
    tr = {"positive": Log(), "fraction": Logit(), "real": Identity()}[kind]
    return ScenarioParameter(name, get, set_, tr, None, unit, toml)


def _set_leaf(params, where, value_fn):
    return eqx.tree_at(where, params, value_fn(where(params)))


def available(built) -> dict[str, "ScenarioParameter"]:
    """Every free-parameter name this built scenario supports (built once per Built and kept, so
    that fits and sweeps of one scenario reuse their compiled programs)."""
    cached = built.__dict__.get("_free_parameters")
    if cached is None:
        cached = built.__dict__["_free_parameters"] = _catalogue(built)
    return cached


def _catalogue(built) -> dict:
    from paracrine import solver

    model, params = built.model, built.params
    factors, regions = list(model.factors), list(model.regions)
    out: dict[str, FreeParameter] = {}

    def add(p: FreeParameter):
        out[p.name] = p

    for s, f in enumerate(factors):
        for key, unit in (("D", "mm^2/s"), ("uptake", "1/s"), ("clearance", "1/s")):
            leaf = (lambda key: lambda p: getattr(p, key))(key)
            add(_P(f"{f}.{key}", "positive", unit,
                              (lambda leaf, s: lambda p: leaf(p)[s, 0])(leaf, s),
                              (lambda leaf, s: lambda p, v: _set_leaf(p, leaf, lambda a: a.at[s, :].set(v)))(leaf, s),
                              (lambda key, f, unit: lambda raw, v: _factor(raw, f).__setitem__(key, f"{v:.9g} {unit}"))(key, f, unit)))
            for r, reg in enumerate(regions):
                add(_P(f"{f}.{key}.{reg}", "positive", unit,
                                  (lambda leaf, s, r: lambda p: leaf(p)[s, r])(leaf, s, r),
                                  (lambda leaf, s, r: lambda p, v: _set_leaf(p, leaf, lambda a: a.at[s, r].set(v)))(leaf, s, r),
                                  (lambda key, f, reg, unit: lambda raw, v: _region_table(_factor(raw, f), key, regions)
                                   .__setitem__(reg, f"{v:.9g} {unit}"))(key, f, reg, unit)))
        add(_P(f"{f}.decay", "positive", "1/s", (lambda s: lambda p: p.decay[s])(s),
                          (lambda s: lambda p, v: _set_leaf(p, lambda q: q.decay, lambda a: a.at[s].set(v)))(s),
                          (lambda f: lambda raw, v: _set_decay(raw, f, f"{v:.9g} 1/s"))(f)))
        add(_P(f"{f}.half_life", "positive", "s", (lambda s: lambda p: LN2 / p.decay[s])(s),
                          (lambda s: lambda p, v: _set_leaf(p, lambda q: q.decay, lambda a: a.at[s].set(LN2 / v)))(s),
                          (lambda f: lambda raw, v: _set_half_life(raw, f, f"{v:.9g} s"))(f)))
    if params.hill is not None:   # Hill-type receptor uptake: Vmax (all regions at once) and K per factor
        for s, f in enumerate(factors):
            add(_P(f"{f}.hill.Vmax", "positive", "pg/mm^3/s", (lambda s: lambda p: p.hill.Vmax[s, 0])(s),
                              (lambda s: lambda p, v: _set_leaf(p, lambda q: q.hill.Vmax, lambda a: a.at[s, :].set(v)))(s),
                              (lambda f: lambda raw, v: _factor(raw, f)["hill"].__setitem__("Vmax", f"{v:.9g} pg/mm^3/s"))(f)))
            add(_P(f"{f}.hill.K", "positive", "pg/mm^3", (lambda s: lambda p: p.hill.K[s])(s),
                              (lambda s: lambda p, v: _set_leaf(p, lambda q: q.hill.K, lambda a: a.at[s].set(v)))(s),
                              (lambda f: lambda raw, v: _factor(raw, f)["hill"].__setitem__("K", f"{v:.9g} pg/mm^3"))(f)))
    cells = [k for k, _ in built.cell_sources]
    if cells:
        def each_cell(p, attr, fn):
            for k in cells:
                p = _set_leaf(p, lambda q, k=k: getattr(q.sources[k], attr), fn)
            return p

        k0 = cells[0]
        for s, f in enumerate(factors):
            add(_P(f"{f}.secretion", "positive", "pg/cell/s",
                              (lambda s: lambda p: p.sources[k0].secretion[s])(s),
                              (lambda s: lambda p, v: each_cell(p, "secretion", lambda a: a.at[s].set(v)))(s),
                              (lambda f: lambda raw, v: raw["cells"]["secretion"].__setitem__(f, f"{v:.9g} pg/cell/s"))(f)))
        add(_P("cells.retention", "fraction", "1", lambda p: p.sources[k0].retention[0],
                          lambda p, v: each_cell(p, "retention", lambda a: jnp.full_like(a, v)),
                          lambda raw, v: [inj.__setitem__("retention", float(v)) for inj in raw["injection"]]))
        add(_P("cells.washout", "fraction", "1", lambda p: 1.0 - p.sources[k0].retention[0],
                          lambda p, v: each_cell(p, "retention", lambda a: jnp.full_like(a, 1.0 - v)),
                          lambda raw, v: [inj.__setitem__("retention", float(1.0 - v)) for inj in raw["injection"]]))
        shares = dict(zip(cells, built.cell_dose_share))

        def set_dose(p, v):
            for k in cells:
                p = _set_leaf(p, lambda q, k=k: q.sources[k].dose, lambda a, k=k: jnp.full_like(a, v * shares[k]))
            return p

        add(_P("cells.dose", "positive", "cell", lambda p: p.sources[k0].dose[0] / shares[k0], set_dose,
                          lambda raw, v: [inj.__setitem__("dose", f"{v:.9g} cells") for inj in raw["injection"]]))
        add(_P("cells.fast_fraction", "fraction", "1", lambda p: p.sources[k0].fast_fraction,
                          lambda p, v: each_cell(p, "fast_fraction", lambda a: jnp.full_like(a, v)),
                          lambda raw, v: raw["cells"].__setitem__("fast_fraction", float(v))))
        for which, attr in (("fast", "k_fast"), ("slow", "k_slow")):
            add(_P(f"cells.half_life_{which}", "positive", "s",
                              (lambda attr: lambda p: LN2 / getattr(p.sources[k0], attr))(attr),
                              (lambda attr: lambda p, v: each_cell(p, attr, lambda a: jnp.full_like(a, LN2 / v)))(attr),
                              (lambda which: lambda raw, v: raw["cells"].__setitem__(f"{which}_half_life", f"{v:.9g} s"))(which)))
    media = [k for k, prof in enumerate(params.sources) if isinstance(prof, solver.Bolus)]
    if media:
        base = {k: np.asarray(params.sources[k].amount) for k in media}
        ret = {k: built.media_retention[i] for i, k in enumerate(media)}

        def set_medium(p, v):
            for k in media:
                p = _set_leaf(p, lambda q, k=k: q.sources[k].amount, lambda a, k=k: jnp.asarray(base[k] / ret[k]) * v)
            return p

        m0 = media[0]
        add(_P("medium.retention", "fraction", "1",
                          lambda p: p.sources[m0].amount[np.argmax(base[m0])] * ret[m0] / base[m0][np.argmax(base[m0])],
                          set_medium, lambda raw, v: [m.__setitem__("retention", float(v)) for m in raw["medium"]]))
    _delivery_controls(built, add)
    return out


def delivery_profiles(built) -> dict:
    """{("injection" | "medium", k): [profile indices]}: the profiles (one per source) of each delivery."""
    out: dict = {}
    for i, src in enumerate(built.model.sources):
        base = src.name.split("-x")[0]
        what = "injection" if base.startswith("injection") else "medium"
        k = int(base[len(what):]) - 1
        out.setdefault((what, k), []).append(i)
    return out


def _delivery_controls(built, add) -> None:
    d = built.scenario.data
    shares = dict(zip([k for k, _ in built.cell_sources], built.cell_dose_share))
    for (what, k), idx in delivery_profiles(built).items():
        spec = d["injections" if what == "injection" else "media"][k]
        J = len(spec["times"])
        key = f"{what}[{k}]"
        raw_list = "injection" if what == "injection" else "medium"
        i0 = idx[0]

        def each(p, fn, idx=idx):
            for i in idx:
                p = fn(p, i)
            return p

        def set_times(p, v, idx=idx):
            return each(p, lambda q, i: _set_leaf(q, lambda r: r.sources[i].time, lambda a: a - a[0] + v), idx)

        def set_every(p, v, idx=idx, J=J):
            return each(p, lambda q, i: _set_leaf(q, lambda r: r.sources[i].time,
                                                  lambda a: a[0] + v * jnp.arange(J, dtype=a.dtype)), idx)

        def toml_time(raw, v, key=raw_list, k=k):
            raw[key][k]["time"] = f"{v:.9g} s"

        def toml_every(raw, v, key=raw_list, k=k):
            raw[key][k]["repeat"]["every"] = f"{v:.9g} s"

        add(_P(f"{key}.time", "real", "s", lambda p, i0=i0: p.sources[i0].time[0], set_times, toml_time))
        if J > 1:
            add(_P(f"{key}.every", "positive", "s", lambda p, i0=i0: p.sources[i0].time[1] - p.sources[i0].time[0],
                   set_every, toml_every))
        if what == "injection":
            def set_dose(p, v, idx=idx):
                return each(p, lambda q, i: _set_leaf(q, lambda r: r.sources[i].dose,
                                                      lambda a: jnp.full_like(a, v * shares[i])), idx)

            add(_P(f"{key}.dose", "positive", "cell", lambda p, i0=i0: p.sources[i0].dose[0] / shares[i0], set_dose,
                   lambda raw, v, k=k: raw["injection"][k].__setitem__("dose", f"{v:.9g} cells")))
        else:
            add(_P(f"{key}.duration", "real", "s", lambda p, i0=i0: p.sources[i0].duration,
                   lambda p, v, idx=idx: each(p, lambda q, i: _set_leaf(q, lambda r: r.sources[i].duration,
                                                                       lambda a: jnp.full_like(a, v)), idx),
                   lambda raw, v, k=k: raw["medium"][k].__setitem__("duration", f"{v:.9g} s")))
            if "volume" in spec and spec["volume"] > 0:
                v0 = spec["volume"]
                conc0 = {f: spec["amount"][f] / v0 for f in spec["amount"]}
                f_ref = max(conc0, key=conc0.get)         # the concentration control reads this factor's

                def set_scale(p, v, j, idx=idx):
                    return each(p, lambda q, i: _set_leaf(q, lambda r: r.sources[i].scale,
                                                          lambda a: a.at[j].set(v)), idx)

                def toml_volume(raw, v, k=k):
                    m = raw["medium"][k]
                    m.pop("rate", None)
                    m["volume"] = f"{v:.9g} mm^3"

                def toml_conc(raw, v, k=k, conc0=conc0, f_ref=f_ref):
                    m = raw["medium"][k]
                    ratio = v / conc0[f_ref]
                    m["concentration"] = {f: f"{c * ratio * 1e3:.9g} pg/mL" for f, c in conc0.items() if c > 0}

                add(_P(f"{key}.volume", "positive", "mm^3", lambda p, i0=i0, v0=v0: p.sources[i0].scale[0] * v0,
                       lambda p, v, v0=v0: set_scale(p, v / v0, 0), toml_volume))
                add(_P(f"{key}.concentration", "positive", "pg/mm^3",
                       lambda p, i0=i0, c0=conc0[f_ref]: p.sources[i0].scale[1] * c0,
                       lambda p, v, c0=conc0[f_ref]: set_scale(p, v / c0, 1), toml_conc))


def _factor(raw, f):
    return raw["factors"][f]


def _region_table(table, key, regions):
    """The scenario's {region: value} table for key, expanding a single value to every region."""
    cur = table.get(key)
    if not isinstance(cur, dict):
        import tomlkit   # an inline table `key = {border = ...}` where the single value stood (kept in place)

        new = tomlkit.inline_table()
        plain = cur.unwrap() if hasattr(cur, "unwrap") else cur
        new.update({} if cur is None else {r: plain for r in regions})
        table[key] = new
    return table[key]


def _set_decay(raw, f, text):
    t = _factor(raw, f)
    t.pop("half_life", None)
    t["decay"] = text


def _set_half_life(raw, f, text):
    t = _factor(raw, f)
    t.pop("decay", None)
    t["half_life"] = text


def resolve(built, names) -> list[FreeParameter]:
    """FreeParameters for names, with the nearest valid name suggested for unknown ones."""
    avail = available(built)
    if isinstance(names, str):
        names = [names]
    if not names:
        raise ValueError(f"no free parameters given; this scenario has: {sorted(avail)}")
    out = []
    for n in names:
        if n not in avail:
            raise ValueError(f"unknown free parameter {n!r}{suggest(n, avail)} allowed: {sorted(avail)}")
        out.append(avail[n])
    if len({p.name for p in out}) != len(out):
        raise ValueError(f"free parameters named twice: {list(names)}")
    return out
