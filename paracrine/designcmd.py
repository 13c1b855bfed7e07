"""`paracrine design SCENARIO [SCENARIO ...] --objective ... --control NAME=LOW,HIGH ... --out DIR`:
the therapy (dose, timing, schedule; route, number of doses or product enumerated) that maximises
the objective within the limits; writes design.json, designed.toml, alternatives.csv and figures."""

from __future__ import annotations

import re
from pathlib import Path

from .fitcmd import _quantity


def add_parser(sub) -> None:
    ds = sub.add_parser(
        "design", help="optimise dose, timing and schedule of a therapy for an objective under limits",
        description="Maximises an objective of the simulated course (hours above threshold, exposed share, AUC, "
                    "a trough) over the --control values by gradients through the solver (augmented Lagrangian, "
                    "L-BFGS-B), under a cell or medium budget, volume limits and a local peak ceiling. Several "
                    "scenarios, and every combination of the --choose values, are alternatives: each is optimised "
                    "and all are ranked by the exact objective at their optimum. Writes design.json, designed.toml "
                    "(runnable by `paracrine run`), alternatives.csv and figures into --out.")
    ds.add_argument("scenario", nargs="+", help="scenario file(s) (.toml); each is an alternative")
    ds.add_argument("--objective", nargs="+", required=True, metavar="SPEC",
                    help="hours_above:F, exposed:F[:24h], auc:F, trough:F[:7d], each with an optional @REGION "
                         "(default border); several: all of them (a smooth minimum of each over its start value)")
    ds.add_argument("--control", nargs="+", required=True, metavar="NAME=LOW,HIGH",
                    help="e.g. 'injection[0].dose=1e5,2e6 cells' 'injection[0].time=0 h,7 d' "
                         "'injection[0].every=6 h,3 d' 'medium[0].volume=10 uL,200 uL' "
                         "'medium[0].concentration=1 ng/mL,10 ng/mL' "
                         "'medium[0].duration=0 h,6 h' "
                         "'injection[0].site[1].x=2 mm,4 mm' (a site coordinate, mm; meshes)")
    ds.add_argument("--initial", nargs="*", metavar="NAME=VALUE", help="start values (default: the scenario's)")
    ds.add_argument("--budget", metavar="CELLS", help="total cells over all doses, e.g. '1e6 cells'")
    ds.add_argument("--medium-budget", metavar="VOLUME", help="total conditioned-medium volume, e.g. '200 uL'")
    ds.add_argument("--max-volume", metavar="VOLUME", help="medium volume per procedure")
    ds.add_argument("--max-site-volume", metavar="VOLUME", help="medium volume per injection site")
    ds.add_argument("--peak-ceiling", nargs="*", metavar="FACTOR=CONC",
                    help="largest local concentration anywhere, e.g. 'VEGF=5 ng/mL' (haemangioma risk)")
    ds.add_argument("--procedures", type=int, help="the most procedures (doses) an alternative may use")
    ds.add_argument("--choose", nargs="*", metavar="KEY=V1,V2", default=[],
                    help="discrete alternatives by scenario key, e.g. 'injection[0].repeat.count=1,2,3,4' "
                         "'injection[0].route=intramyocardial,intracoronary' 'cells.donor=autologous,allogeneic'")
    ds.add_argument("--dt", metavar="TIME", help="the optimiser's fixed step (default: the scenario's dt or 60 s)")
    ds.add_argument("--width", type=float, default=0.1,
                    help="smoothing of time above threshold: a logistic of this share of the threshold (default 0.1)")
    ds.add_argument("--starts", type=int, default=1,
                    help="optimisations per alternative: the scenario's values, then random points of the boxes")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--max-outer", type=int, default=12)
    ds.add_argument("--max-inner", type=int, default=40)
    ds.add_argument("--out", help="output folder (new; default designs/<scenario>)")
    ds.add_argument("--precision", choices=["single", "double"], default="double")
    ds.add_argument("--device", choices=["cpu", "gpu"])
    ds.add_argument("--no-figures", action="store_true")


def _split_pairs(items, what):
    out = {}
    for item in items or []:
        name, sep, rest = item.partition("=")
        if not sep or not rest.strip() or not name.strip():
            raise ValueError(f"{what} {item!r}; allowed: NAME=VALUE")
        if name.strip() in out:
            raise ValueError(f"{what} {name.strip()!r} given twice")
        out[name.strip()] = rest
    return out


_DELIVERY = re.compile(r"^(injection|medium)\[\d+\]\.(dose|time|every|volume|concentration|duration)$")
_UNITS = {"dose": "cell", "time": "s", "every": "s", "volume": "mm^3", "concentration": "pg/mm^3", "duration": "s"}


def _known_elsewhere(name) -> bool:
    """A delivery control that another alternative (another scenario, a --choose value) may have."""
    return bool(_DELIVERY.match(name))


def _unit_of(name) -> str:
    m = _DELIVERY.match(name)
    return _UNITS[m.group(2)] if m else "mm"


def spec_from_args(args, built):
    """A design Spec from the arguments, with units checked against the first built scenario."""
    from .catalogue import available
    from .design import Spec
    from .scenario import ScenarioError
    from .units import suggest

    from .design import site_controls

    avail = available(built)
    avail = {**avail, **site_controls(built, [n for n in _split_pairs(args.control, "--control")], built.model)[0]}
    controls, initial = {}, {}
    for name, rest in _split_pairs(args.control, "--control").items():
        parts = rest.split(",")
        if len(parts) != 2:
            raise ValueError(f"--control {name}={rest!r}; allowed: NAME=LOW,HIGH (with units)")
        if name not in avail and not _known_elsewhere(name):
            deliveries = sorted(n for n in avail if n.startswith(("injection[", "medium[")))
            raise ScenarioError(f"--control {name}: unknown control{suggest(name, avail)} allowed: {deliveries}")
        unit = avail[name].unit if name in avail else _unit_of(name)
        lo, hi = (_quantity(p, unit, f"--control {name}") for p in parts)
        if not lo < hi:
            raise ValueError(f"--control {name}: low {lo:g} >= high {hi:g} {unit}; allowed: low < high")
        controls[name] = (lo, hi)
    for name, rest in _split_pairs(args.initial, "--initial").items():
        if name not in controls:
            raise ValueError(f"--initial {name}: not a --control; controls: {list(controls)}")
        unit = avail[name].unit if name in avail else _unit_of(name)
        initial[name] = _quantity(rest, unit, f"--initial {name}")
    ceiling = {f: _quantity(v, "pg/mm^3", f"--peak-ceiling {f}")
               for f, v in _split_pairs(args.peak_ceiling, "--peak-ceiling").items()}
    choose = {k: [x.strip() for x in v.split(",")] for k, v in _split_pairs(args.choose, "--choose").items()}
    vol = lambda x, what: None if x is None else _quantity(x, "mm^3", what)  # noqa: E731
    spec = Spec(objectives=list(args.objective), controls=controls, initial=initial,
                budget=None if args.budget is None else _quantity(args.budget, "cell", "--budget"),
                medium_budget=vol(args.medium_budget, "--medium-budget"), max_volume=vol(args.max_volume, "--max-volume"),
                max_site_volume=vol(args.max_site_volume, "--max-site-volume"), peak_ceiling=ceiling,
                procedures=args.procedures, choose=choose,
                dt=None if args.dt is None else _quantity(args.dt, "s", "--dt"), width=args.width,
                max_outer=args.max_outer, max_inner=args.max_inner, starts=args.starts, seed=args.seed)
    for what, v in (("--budget", spec.budget), ("--medium-budget", spec.medium_budget), ("--dt", spec.dt),
                    ("--max-volume", spec.max_volume), ("--max-site-volume", spec.max_site_volume)):
        if v is not None and not v > 0:
            raise ValueError(f"{what} = {v:g}; allowed: > 0")
    if spec.starts < 1:
        raise ValueError(f"--starts {spec.starts}; allowed: >= 1")
    if spec.procedures is not None and spec.procedures < 1:
        raise ValueError(f"--procedures {spec.procedures}; allowed: >= 1")
    if not 0 < spec.width < 10:
        raise ValueError(f"--width {spec.width:g}; allowed: 0 < width < 10")
    return spec


def run(args, set_platform) -> int:
    from . import design as D
    from . import designreport
    from . import scenario as sc
    from .build import build

    from .estimate import make_parents, out_problem, remove_created

    out = Path(args.out) if args.out else Path("designs") / Path(args.scenario[0]).stem
    tmp = out.with_name(out.name + ".partial")

    def check_out():
        problem = out_problem(out)
        if problem:
            raise ValueError(problem)
        if tmp.exists():
            raise ValueError(f"{tmp} exists (an interrupted design, or someone's folder); remove it or choose "
                             "another --out")

    check_out()   # before any work
    set_platform(args.device, args.precision)
    scens = [sc.load(p) for p in args.scenario]   # each validated before any work
    built0 = build(scens[0])
    spec = spec_from_args(args, built0)
    print(f"paracrine design: {', '.join(spec.objectives)}; controls {', '.join(spec.controls)}")

    def progress(rec):
        n = rec["evaluations"]
        if n % 5 == 0:
            print(f"  solve {n:4d}  objective {rec['objective']:.6g}  violation {rec['violation']:.2g}  "
                  f"outer {rec['outer']}", flush=True)

    result = D.design([(s.text, s.source, Path(s.source).parent) for s in scens], spec, progress=progress)
    check_out()   # again: the design took a while
    made = make_parents(tmp)
    tmp.mkdir()
    try:
        designreport.write(tmp, result, spec, figures=not args.no_figures)
    except BaseException:
        import shutil

        shutil.rmtree(tmp)   # created by this invocation, as the parents
        remove_created(made)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    best = result["ranked"][0]
    r = best["result"]
    print(f"best: {best['label']}  ({r.evaluations} solves, {best['seconds']:.1f} s; {r.message})")
    for o0, o1 in zip(best["exact_start"]["objectives"], best["exact_optimum"]["objectives"]):
        print(f"  {o1['label']}: {o0['value']:.4g} -> {o1['value']:.4g} {o1['unit']}")
    for n, v, u, b in zip(r.names, r.theta, r.units, r.at_bound):
        print(f"  {n} = {v:.4g} {u}" + (f" ({v / 3600:.3g} h)" if u == "s" else "") + (f"  at its {b} bound" if b else ""))
    for c in r.constraints:
        print(f"  {c['name']}: {c['value']:.4g} {c['unit']}" + ("  active" if c["active"] else ""))
    for o in result["ranked"]:
        for w in o.get("warnings", []):
            print(f"  warning ({o['label']}): {w}")
    if len(result["ranked"]) > 1:
        print("ranking (exact objective at each optimum):")
        for k, o in enumerate(result["ranked"], 1):
            print(f"  {k}. {o['label']}: {D._exact_objective(o):.4g}")
    print(f"  -> {out}/design.json, designed.toml, alternatives.csv" + ("" if args.no_figures else ", figures"))
    return 0 if r.converged else 3
