"""The therapy sections of a scenario: [cells], [[injection]] and [[medium]], and the routes with
their acute retention (by species, each with its source)."""

from __future__ import annotations

import math

from .reader import Reader
from .units import show, suggest

HOUR, DAY = 3600.0, 86400.0
MAX_DOSES = 10_000      # repeat.count
MAX_SITES = 10_000      # sites per injection, a number or a list
MAX_TABLE = 1000        # rows of retention_by_time

ROUTES = ("intramyocardial", "transendocardial", "intracoronary", "intravenous")
POINT_ROUTES = ("intramyocardial", "transendocardial")

#: Acute retention (fraction of the dose in the heart at ~1 h) by route and species, with its source.
RETENTION = {
    "intramyocardial": {
        "rat": (0.136, "Bonios et al. 2011, J Nucl Cardiol 18:443 (rat, normal heart; acute I/R 0.120, chronic MI 0.099)"),
        "pig": (0.11, "Hou et al. 2005, Circulation 112:I150 (pig)"),
    },
    "transendocardial": {
        "pig": (0.11, "estimate: Hou et al. 2005 intramyocardial value (pig); no catheter-route measurement"),
    },
    "intracoronary": {
        "rat": (0.154, "Bonios et al. 2011, J Nucl Cardiol 18:443 (rat)"),
        "pig": (0.026, "Hou et al. 2005, Circulation 112:I150 (pig)"),
    },
    "intravenous": {
        "rat": (0.008, "Bonios et al. 2011, J Nucl Cardiol 18:443 (rat; 20-55 % in the lungs)"),
    },
}
#: Acute retention of a protein injected into the myocardium (conditioned medium), by route, with its
#: source; other routes fall back to RETENTION (cell values). One study, one protein (albumin, 66 kDa),
#: pig, 1 h: weak evidence; smaller factors are probably retained less (Laham et al. 1999, Drug Metab
#: Dispos 27:821: intracoronary 125I-bFGF 0.88 % in the pig heart at 1 h, against 2.6 % of cells).
MEDIUM_RETENTION = {
    "transendocardial": (0.164, "125I-albumin by percutaneous intramyocardial (endocardial needle) injection in pigs, "
                                "16.4 +- 2.1 % of the delivered protein in the heart at 1 h (Catheter Cardiovasc "
                                "Interv 2001, 53:271, doi:10.1002/ccd.1164; 10.1 % shallow, 18.9 % deep injections)"),
    "intramyocardial": (0.164, "estimate: protein (125I-albumin) retention of percutaneous intramyocardial injection "
                               "in pigs, 16.4 % at 1 h (Catheter Cardiovasc Interv 2001, 53:271, doi:10.1002/ccd.1164); "
                               "no epicardial-needle protein measurement found"),
}
# where a species has no measurement, the nearest one is used and marked as an estimate
_NEAREST = {"mouse": ("rat", "pig"), "rat": ("rat", "pig"), "reference": ("pig", "rat"), "pig": ("pig", "rat"),
            "human": ("pig", "rat")}


def retention_preset(route: str, species: str | None) -> tuple[float, str]:
    table = RETENTION[route]
    for sp in _NEAREST.get(species or "rat", ("rat", "pig")):
        if sp in table:
            value, source = table[sp]
            if sp != species:
                source = f"estimate: {sp} value for {species or 'this geometry'} ({source})"
            return value, source
    raise AssertionError(route)  # pragma: no cover - every route has a rat or pig value



DONORS = ("autologous", "allogeneic")

#: Allogeneic (donor) cells: an extra immune loss, after an onset, with its half-life; for the first
#: dose and for every later dose (a memory response), each with its source.
IMMUNE = {
    "immune_onset": (7 * DAY, "Huang et al. 2010, Circulation 122:2419 (rat, MSCs 3 weeks after MI: allogeneic "
                              "survival equal to syngeneic at 1 week; Malliaras et al. 2012, Circulation 125:100: "
                              "the same for cardiosphere-derived cells); the onset is placed at that week"),
    "immune_half_life": (4 * DAY, "estimate: Huang et al. 2010, Circulation 122:2419 (allogeneic MSCs undetectable "
                                  "at 5 weeks, syngeneic ones present: below ~1 % of syngeneic after 4 weeks of "
                                  "clearance gives t1/2 <= 4.2 d)"),
    "repeat_immune_onset": (3 * DAY, "estimate: memory response (Zangi et al. 2009, Stem Cells 27:2865: allogeneic "
                                     "MSCs induce immune memory; Huang et al. 2010: alloantibodies after one dose); "
                                     "about half the first onset, as second-set rejection (Gibson & Medawar 1943, "
                                     "J Anat 77:299)"),
    "repeat_immune_half_life": (2 * DAY, "estimate: half the first dose's half-life, as second-set rejection is about "
                                         "twice as fast (Gibson & Medawar 1943, J Anat 77:299; Ankrum et al. 2014, "
                                         "Nat Biotechnol 32:252: MSCs are immune evasive, not immune privileged)"),
}
RETENTION_BY_TIME_KEYS = {"time": "injection times after the infarction (increasing)",
                          "factor": "multiplier of the route's acute retention at each time (>= 0)",
                          "start_after_mi": "the scenario's time 0 as time after the infarction (default 0 d)"}


CELL_KEYS = {"name": "cell type (text)", "secretion": "{factor: secretion per cell}",
             "fast_fraction": "fraction of retained cells lost in the fast phase (0-1, default 0.45)",
             "fast_half_life": "half-life of the fast phase (default 15 min)",
             "slow_half_life": "half-life of the slow phase (default 3.6 d)",
             "hypoxia": "secretion multiplier by region {region: number} (default 1)",
             "donor": f"one of {list(DONORS)} (default autologous)",
             "immune_onset": "allogeneic: start of the immune loss after each injection (default 7 d)",
             "immune_half_life": "allogeneic: half-life of the immune loss (default 4 d)",
             "repeat_immune_onset": "allogeneic: onset for every dose after the first (default 3 d)",
             "repeat_immune_half_life": "allogeneic: half-life for every dose after the first (default 2 d)",
             "retention_by_time": "{time, factor, start_after_mi}: retention multiplier by injection time after MI"}
DELIVERY_KEYS = {"time": "injection time (default 0)", "route": f"one of {list(ROUTES)}",
                 "sites": "number of sites spread over `region`, or a list of [x, y, z] (mm); at most 10000",
                 "region": "region the sites are spread over (default border)", "seed": "site sampling seed",
                 "retention": "acute retention fraction (default from route and species)",
                 "territory": "intracoronary: the perfused territory (default the infarct's)",
                 "repeat": "{count, every}: repeated dosing (count <= 10000, every dose before time.end)"}
INJECTION_KEYS = {**DELIVERY_KEYS, "dose": "number of cells"}
MEDIUM_KEYS = {**DELIVERY_KEYS, "volume": "volume injected (or infused over duration)",
               "concentration": "{factor: concentration}", "amount": "{factor: amount} instead of volume x concentration",
               "duration": "infusion time (default 0: a bolus)", "rate": "infusion rate (volume/time) instead of volume"}


def cells_section(rd: Reader, c, factors, regions) -> dict:
    c = rd.table(c, "cells", CELL_KEYS, required=("secretion",))
    sec = c["secretion"]
    if not isinstance(sec, dict) or not sec:
        raise rd.error("cells.secretion", f" = {show(sec)}; allowed: a table {{factor: secretion per cell}} for "
                                          f"the factors {factors}")
    for f in sec:
        if f not in factors:
            raise rd.error(f"cells.secretion.{f}", f": unknown factor{suggest(f, factors)} allowed: {factors}")
    hyp = c.get("hypoxia", {})
    if not isinstance(hyp, dict):
        raise rd.error("cells.hypoxia", f" = {show(hyp)}; allowed: a table {{region: multiplier}}")
    for r in hyp:
        if r not in regions:
            raise rd.error(f"cells.hypoxia.{r}", f": unknown region{suggest(r, regions)} allowed: {list(regions)}")
    return {"name": rd.text(c.get("name", "cells"), "cells.name", longest=100),
            "secretion": {f: 0.0 for f in factors} | {f: rd.quantity(v, f"cells.secretion.{f}", "secretion")
                                                       for f, v in sec.items()},
            "fast_fraction": rd.number(c.get("fast_fraction", 0.45), "cells.fast_fraction", high=1.0),
            "fast_half_life": rd.quantity(c.get("fast_half_life", "15 min"), "cells.fast_half_life", "time", strict=True),
            "slow_half_life": rd.quantity(c.get("slow_half_life", "3.6 d"), "cells.slow_half_life", "time", strict=True),
            "hypoxia": {r: 1.0 for r in regions} | {r: rd.number(v, f"cells.hypoxia.{r}") for r, v in hyp.items()},
            **_donor(rd, c),
            "retention_by_time": (None if "retention_by_time" not in c else
                                  _retention_by_time(rd, c["retention_by_time"], "cells.retention_by_time"))}


def _donor(rd: Reader, c: dict) -> dict:
    """donor, and for allogeneic cells the immune onsets and half-lives, each with its source."""
    donor = rd.choice(c.get("donor", "autologous"), "cells.donor", DONORS)
    out = {"donor": donor}
    for key, (value, source) in IMMUNE.items():
        if donor != "allogeneic":
            if key in c:
                raise rd.error(f"cells.{key}", f" = {show(c[key])}: only with donor = \"allogeneic\" (cells of donor = "
                                               f"{donor!r} have no immune loss); allowed: remove it, or set donor")
            continue
        if key in c:
            # an onset may be 0 (immediate); a half-life must be > 0
            value = rd.quantity(c[key], f"cells.{key}", "time", strict=key.endswith("half_life"))
            if not math.isfinite(value):
                raise rd.error(f"cells.{key}", f" = {show(c[key])}; allowed: a finite time")
            source = "scenario"
        out[key], out[f"{key}_source"] = value, source
    return out


def _retention_by_time(rd: Reader, value, path: str) -> dict:
    """A piecewise-linear table of retention multipliers by injection time after the infarction."""
    v = rd.table(value, path, RETENTION_BY_TIME_KEYS, required=("time", "factor"))
    times, factors = v["time"], v["factor"]
    for key, x, example in (("time", times, '["0 d", "7 d"]'), ("factor", factors, "[0.5, 1.0]")):
        if not isinstance(x, list) or not x:
            raise rd.error(f"{path}.{key}", f" = {show(x)}; allowed: a non-empty list, e.g. {example}")
        if len(x) > MAX_TABLE:
            raise rd.error(f"{path}.{key}", f": {len(x)} entries; allowed: at most {MAX_TABLE}")
    if len(times) != len(factors):
        raise rd.error(path, f": {len(times)} times and {len(factors)} factors; allowed: one factor per time "
                             f"(time = {show(times)}, factor = {show(factors)})")
    t = [rd.quantity(x, f"{path}.time[{k}]", "time") for k, x in enumerate(times)]
    for k in range(1, len(t)):
        if not t[k] > t[k - 1]:
            raise rd.error(f"{path}.time[{k}]", f" = {show(times[k])} is not after time[{k - 1}] = {show(times[k - 1])}; "
                                                "allowed: strictly increasing times after the infarction")
    f = []
    for k, x in enumerate(factors):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise rd.error(f"{path}.factor[{k}]", f" = {show(x)}; allowed: a finite number >= 0 (a multiplier of "
                                                  "the route's acute retention)")
        f.append(float(x))
    start = v.get("start_after_mi", "0 d")
    start = rd.quantity(start if start != 0 else "0 d", f"{path}.start_after_mi", "time")
    return {"time": t, "factor": f, "start_after_mi": start, "source": "scenario"}


def delivery_section(rd: Reader, p, d, keys, regions, species, geo, end, factors, mw=None) -> dict:
    d = rd.table(d, p, keys)
    route = rd.choice(d.get("route", "intramyocardial"), f"{p}.route", ROUTES)
    t0 = rd.quantity(d.get("time", 0.0) if d.get("time", 0.0) != 0 else "0 s", f"{p}.time", "time")
    if t0 >= end:
        raise rd.error(f"{p}.time", f": dose 1 at {t0 / DAY:g} d is not before time.end ({end / DAY:g} d); "
                                    "allowed: times in [0, end)")
    times = [t0]
    if "repeat" in d:
        r = rd.table(d["repeat"], f"{p}.repeat", ("count", "every"), required=("count", "every"))
        count = rd.integer(r["count"], f"{p}.repeat.count", high=MAX_DOSES)
        every = rd.quantity(r["every"], f"{p}.repeat.every", "time", strict=True)
        last = t0 + (count - 1) * every  # checked before the times are built
        if last >= end:
            k = max(1, math.ceil((end - t0) / every))  # 0-based index of the first dose at or after time.end
            while k > 1 and t0 + (k - 1) * every >= end:
                k -= 1
            while t0 + k * every < end:
                k += 1
            raise rd.error(f"{p}.repeat", f": dose {k + 1} at {(t0 + k * every) / DAY:g} d is not before time.end "
                                          f"({end / DAY:g} d); allowed: times in [0, end), with every = "
                                          f"{show(r['every'])} a count <= {k}")
        times = [t0 + k * every for k in range(count)]
    out = {"route": route, "times": times}
    if route in POINT_ROUTES:
        sites = d.get("sites", 3)
        if isinstance(sites, int) and not isinstance(sites, bool):
            out["sites"] = {"n": rd.integer(sites, f"{p}.sites", high=MAX_SITES), "seed": rd.integer(d.get("seed", 0), f"{p}.seed", low=0),
                            "region": rd.choice(d.get("region", "border" if "border" in regions else regions[0]),
                                                f"{p}.region", regions)}
        elif isinstance(sites, list) and sites:
            rd.items(sites, f"{p}.sites", most=MAX_SITES, what="sites")
            out["sites"] = {"points": [rd.point(s, f"{p}.sites[{k}]") for k, s in enumerate(sites)]}
            for key in ("region", "seed"):
                if key in d:
                    raise rd.error(f"{p}.{key}", ": only with sites = a number of sites")
        else:
            raise rd.error(f"{p}.sites", f" = {show(sites)}; allowed: a number of sites or a list of [x, y, z] (mm)")
        if "territory" in d:
            raise rd.error(f"{p}.territory", f": only for the intracoronary route, not {route}")
    else:
        for key in ("sites", "region", "seed"):
            if key in d:
                raise rd.error(f"{p}.{key}", f": not used by the {route} route (it spreads over the perfused tissue)")
        terr = d.get("territory", geo.get("territory") if route == "intracoronary" else None)
        if terr is not None and geo["kind"] != "lv":
            raise rd.error(f"{p}.territory", ": needs the generated LV geometry (AHA segments)")
        if isinstance(terr, str) and terr != "all":
            from paracrine import geometry

            rd.choice(terr, f"{p}.territory", tuple(geometry.TERRITORIES) + ("all",))
        elif isinstance(terr, list):
            if not terr or len(terr) > 17 or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= 17
                                                     for s in terr):
                raise rd.error(f"{p}.territory", f" = {show(terr)}; allowed: a territory name, \"all\" or a non-empty "
                                                 "list of AHA segments 1-17")
        elif terr is not None and terr != "all":
            raise rd.error(f"{p}.territory", f" = {show(terr)}; allowed: a territory name, \"all\" or a list of AHA "
                                             "segments 1-17")
        out["territory"] = None if terr == "all" else terr
    if "retention" in d:
        out["retention"] = rd.number(d["retention"], f"{p}.retention", high=1.0)
        out["retention_source"] = "scenario"
    elif keys is not INJECTION_KEYS and route in MEDIUM_RETENTION:   # a protein's, not a cell's
        out["retention"], out["retention_source"] = MEDIUM_RETENTION[route]
    else:
        out["retention"], out["retention_source"] = retention_preset(route, species)
    if keys is INJECTION_KEYS:
        if "dose" not in d:
            raise rd.error(f"{p}.dose", ": missing (required), e.g. \"1e6 cells\"")
        out["dose"] = rd.quantity(d["dose"], f"{p}.dose", "cells")
        return out
    # conditioned medium
    duration = rd.quantity(d.get("duration", "0 s") if d.get("duration", 0) != 0 else "0 s", f"{p}.duration", "time")
    for t in times:
        if t + duration > end * (1 + 1e-9):
            raise rd.error(f"{p}.duration", f": the infusion from {t / HOUR:g} h runs past time.end")
    if "amount" in d:
        for key in ("volume", "concentration", "rate"):
            if key in d:
                raise rd.error(f"{p}.{key}", ": give amount, or volume (or rate) with concentration, not both")
        amount = _factor_table(rd, d["amount"], f"{p}.amount", "amount", factors, mw)
    else:
        if "concentration" not in d or ("volume" in d) == ("rate" in d):
            raise rd.error(f"{p}.volume", ": give amount, or volume (or rate and duration) with concentration")
        if "rate" in d:
            if duration <= 0:
                raise rd.error(f"{p}.duration", ": an infusion rate needs a duration > 0")
            volume = rd.quantity(d["rate"], f"{p}.rate", "volume_rate") * duration
        else:
            volume = rd.quantity(d["volume"], f"{p}.volume", "volume")
        conc = _factor_table(rd, d["concentration"], f"{p}.concentration", "concentration", factors, mw)
        amount = {f: volume * c for f, c in conc.items()}
        out["volume"] = volume
    out["amount"], out["duration"] = amount, duration
    return out


def _factor_table(rd, value, path, kind, factors, mw) -> dict:
    if not isinstance(value, dict) or not value:
        raise rd.error(path, f" = {show(value)}; allowed: a table {{factor: {kind}}} for the factors {factors}")
    out = {f: 0.0 for f in factors}
    for f, v in value.items():
        if f not in factors:
            raise rd.error(f"{path}.{f}", f": unknown factor{suggest(f, factors)} allowed: {factors}")
        out[f] = rd.quantity(v, f"{path}.{f}", kind, mw=mw.get(f))
    return out
