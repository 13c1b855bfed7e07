"""`paracrine fit SCENARIO DATA --free NAME ...`: calibrate named rates to data, write the fitted
scenario (TOML), fit.json and figures into a new folder."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

from . import estimate as E


def _quantity(text: str, unit: str, what: str) -> float:
    from .units import ScenarioError, registry

    ureg = registry()
    try:
        q = ureg.Quantity(text.strip())
        return float(q.to(unit).magnitude) if not q.dimensionless or unit == "1" else float(q.magnitude)
    except Exception as err:  # pint's parse and dimensionality errors
        raise ScenarioError(f"{what} = {text!r}: {err}; allowed: a value in {unit}-compatible units") from None


def _pairs(items, what: str, units: dict, n: int) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{what} {item!r}; allowed: NAME=VALUE" + (",VALUE" if n == 2 else ""))
        name, rest = item.split("=", 1)
        name = name.strip()
        if name not in units:
            raise ValueError(f"{what} {item!r}: {name!r} is not among the free parameters {list(units)}")
        parts = rest.split(",")
        if n is not None and len(parts) != n:
            raise ValueError(f"{what} {item!r}; allowed: NAME=" + ",".join(["VALUE"] * n))
        vals = [_quantity(p, units[name], f"{what} {name}") for p in parts]
        out[name] = vals[0] if n == 1 else tuple(vals)
    return out


def _check_out(out: Path) -> None:
    """Before any work: OUT can be created (not a file, not a non-empty folder, writable) and OUT.partial
    does not exist."""
    problem = E.out_problem(out)
    if problem:
        raise ValueError(problem)
    _fresh_partial(out)


def _publish(out: Path, write) -> None:
    """write(tmp) into OUT.partial, created by this invocation (an existing one is refused, never written
    into), then renamed to OUT; on any failure the folder and the parents this call made are removed."""
    _check_out(out)   # again: the work took a while, and the folder is looked at once more before writing
    tmp = _fresh_partial(out)
    made = E.make_parents(tmp)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # created by this invocation, as the parents
        E.remove_created(made)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)


def _estimate(command: str, scen, *, free: int = 0, members: int = 1, force: bool = False, itemsize: int = 8):
    """The work of one model pass of `command` on the scenario, on stderr; refused above estimate.LIMITS
    unless forced. Memory: the state with its tangents (forward-mode Jacobian) or members."""
    est = E.run_estimate(scen.data, itemsize=itemsize)
    if est.nodes is not None:
        est.field_bytes = None   # fits and sweeps keep region observations, not fields
        est.memory_bytes = est.nodes * (400.0 + itemsize * len(scen.data["factors"]) * 40 * (1 + free) * members)
        est.keys["bytes"] = ("geometry.mesh_size (a coarser mesh)" + (" or fewer members" if members > 1 else ""), None)
    per = " per model pass" if command == "fit" else (f", {members} members" if members > 1 else "")
    est.check(force, say=lambda line: print(f"paracrine {command}: {line}{per}", file=sys.stderr, flush=True))


def _fresh_partial(out: Path) -> Path:
    """OUT.partial, which must not exist: it is an interrupted command's or someone's folder, and a
    command deletes only what it created."""
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        raise ValueError(f"{tmp} exists (an interrupted run, fit or sweep, or someone's folder); remove it or "
                         "choose another --out")
    return tmp


class FitProgress:
    """Per-iteration feedback of `paracrine fit`: a tqdm bar on stderr (iterations of --max-iter, the
    loss, ETA) when on (auto: on a terminal), else one line per iteration on stdout. Called from the
    compiled loop through jax.debug.callback (fitting.fit: no retrace)."""

    def __init__(self, mode: str, max_iter: int, *, method: str = "lm", stream=None):
        self.max_iter, self.method, self.bar = max_iter, method, None
        stream = sys.stderr if stream is None else stream
        on = mode == "on" or (mode == "auto" and hasattr(stream, "isatty") and stream.isatty())
        if on:
            from tqdm import tqdm

            self.bar = tqdm(total=max_iter, unit="it", desc=f"fit ({method})", file=stream, mininterval=0.0,
                            dynamic_ncols=True, bar_format="{desc}: {n}/{total} iterations|{bar}| [{elapsed}<"
                                                           "{remaining}{postfix}]")

    def __call__(self, it, loss, lam, ok):
        it, loss, ok = int(it), float(loss), bool(ok)
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.6g}" + ("" if ok else ", no decrease"), refresh=False)
            self.bar.update(it - self.bar.n)
        else:
            damping = f"  damping {float(lam):.2g}" if self.method == "lm" else ""
            print(f"  iteration {it:3d}  loss {loss:.6g}{damping}"
                  f"{'' if ok else '  (no decrease)'}", flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def add_parser(sub) -> None:
    fit = sub.add_parser("fit", help="calibrate rates of a scenario to data (CSV) and write the fitted scenario",
                         description="Fits the named free parameters of SCENARIO to DATA (long-format CSV with units) "
                                     "by Levenberg-Marquardt through the simulation; writes fitted.toml (loadable by "
                                     "`paracrine run`), fit.json (estimates, 95 % intervals, correlations, diagnostics) "
                                     "and figures (data, model and band; convergence) into --out.")
    fit.add_argument("scenario")
    fit.add_argument("data")
    fit.add_argument("--free", nargs="+", required=True, metavar="NAME",
                     help="e.g. VEGF.secretion VEGF.uptake.border cells.washout cells.half_life_fast")
    fit.add_argument("--out", help="output folder (new; default fits/<scenario>-<data>)")
    fit.add_argument("--method", choices=["lm", "lbfgs", "adam"], default="lm")
    fit.add_argument("--loss", choices=["absolute", "relative", "lognormal"], default="absolute")
    fit.add_argument("--starts", type=int, default=1, help="initial guesses batched together (default 1)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--max-iter", type=int, default=50)
    fit.add_argument("--initial", nargs="*", metavar="NAME=VALUE", help="start values, with units (e.g. 'VEGF.decay=1e-3 1/s')")
    fit.add_argument("--bound", nargs="*", metavar="NAME=LOW,HIGH", help="bounds, with units")
    fit.add_argument("--prior", nargs="*", metavar="NAME=MEDIAN,SIGMA",
                     help="log-normal prior: median (with units, or 'scenario' for the scenario's value, e.g. a "
                          "preset's) and sigma of the log")
    fit.add_argument("--profile", nargs="*", metavar="NAME", help="profile likelihood for these parameters")
    fit.add_argument("--precision", choices=["single", "double"], default="double")
    fit.add_argument("--device", choices=["cpu", "gpu"])
    fit.add_argument("--no-figures", action="store_true")
    fit.add_argument("--force", action="store_true", help="start even when the work estimate is above the limits")
    fit.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                     help="progress bar on stderr, per iteration with loss and ETA (auto: on a terminal); without "
                          "it each iteration is printed as a line")
    fit.add_argument("--ftol", type=float, default=1e-10,
                     help="stop when an iteration lowers the loss by less than this fraction (default 1e-10)")
    fit.add_argument("--tissue-density", metavar="VALUE",
                     help="for data in pg/mg tissue or protein: wet tissue density (default 1.05 g/mL; overrides "
                          "the data file's '# tissue_density = ...')")
    fit.add_argument("--protein-per-tissue", metavar="VALUE",
                     help="for data in pg/mg protein: protein per wet tissue mass (default 67 mg/g; overrides the "
                          "data file's '# protein_per_tissue = ...')")


def run(args, set_platform) -> int:
    from . import scenario as sc

    out = Path(args.out) if args.out else Path("fits") / f"{Path(args.scenario).stem}-{Path(args.data).stem}"
    _check_out(out)
    set_platform(args.device, args.precision)
    from . import calibrate, fitreport
    from .build import build
    from .data import read_csv

    scen = sc.load(args.scenario)
    _estimate("fit", scen, free=len(args.free) * max(args.starts, 1), force=args.force,
              itemsize=8 if args.precision == "double" else 4)
    # the data file is checked before the mesh is built: a bad CSV costs nothing
    obs = read_csv(args.data, scen, tissue_density=args.tissue_density, protein_per_tissue=args.protein_per_tissue)
    built = build(scen)
    free = calibrate.resolve(built, args.free)
    units = {p.name: p.unit for p in free}
    priors = {}
    for item in args.prior or []:  # the median has units, sigma is a plain number (log units)
        name, _, rest = item.partition("=")
        name = name.strip()
        if name not in units or rest.count(",") != 1:
            raise ValueError(f"--prior {item!r}; allowed: NAME=MEDIAN,SIGMA for a free parameter {list(units)}")
        med, sig = rest.split(",")
        if med.strip() == "scenario":  # the scenario's value, e.g. from a preset, as the median
            median = float(next(p for p in free if p.name == name).get(built.params))
        else:
            median = _quantity(med, units[name], f"--prior {name}")
        try:
            priors[name] = (median, float(sig))
        except ValueError:
            raise ValueError(f"--prior {item!r}: sigma {sig!r} is not a number (the SD of the log)") from None
    _check_out(out)   # again: the fit takes a while, and the folder is looked at once more before writing

    print(f"paracrine fit: {len(obs)} observations from {obs.source}; free: {', '.join(args.free)}")
    for key, c in obs.conversions.items():
        print(f"  {key.replace('_', ' ')} {c['value']:.4g} {c['unit']} ({c['source']})")
    bar = FitProgress(args.progress, args.max_iter, method=args.method)
    try:
        res = calibrate.fit(built, obs, free, method=args.method, loss=args.loss, starts=args.starts, seed=args.seed,
                            max_iter=args.max_iter, initial=_pairs(args.initial, "--initial", units, 1),
                            bounds=_pairs(args.bound, "--bound", units, 2), priors=priors, profile=args.profile or (),
                            progress=bar if args.starts == 1 else None, ftol=args.ftol)
    finally:
        bar.close()
    _publish(out, lambda tmp: fitreport.write(res, scen, tmp, figures=not args.no_figures))
    print(f"{res.status}: {res.iterations} iterations, {res.n_solves} model passes, {res.wall_s:.1f} s "
          f"(+{res.compile_s:.1f} s compile); loss {res.loss:.6g}, chi2 {res.chi2:.3g} for {res.n_data} data")
    claim = res.intervals_note is None
    for n, v, (lo, hi), u in zip(res.names, res.values, res.intervals, res.units):
        extra = fitreport.describe(n, u, v, lo if claim else None, hi if claim else None)
        ci = f"   95 % [{lo:.4g}, {hi:.4g}]" if claim else "   (no interval)"
        print(f"  {n:28s} {v:.4g} {u}{ci}" + (f"   = {extra}" if extra else ""))
    for w in res.warnings:
        print(f"  warning: {w}")
    print(f"  -> {out}/fitted.toml, fit.json" + ("" if args.no_figures else ", fit.png, convergence.png"))
    return 0 if res.converged else 3


def add_sweep_parser(sub) -> None:
    sw = sub.add_parser("sweep", help="run a scenario for many parameter values at once (vmap, sharded over devices)",
                        description="Runs SCENARIO for every combination of the --vary values (dose-response, "
                                    "schedules, cohorts), batched with vmap and sharded over all local devices; "
                                    "writes one row of exposure metrics per member to OUT/sweep.csv (+ sweep.json).")
    sw.add_argument("scenario")
    sw.add_argument("--vary", nargs="+", required=True, metavar="NAME=VALUES",
                    help="free parameters ('cells.dose=1e5,1e6,1e7' 'VEGF.uptake.border=1e-4 1/s,1e-3 1/s', units allowed) "
                         "or scenario keys by path ('injection[0].repeat.every=1 d,2 d' 'injection[0].route=intramyocardial,intracoronary' "
                         "'medium[0].volume=5 uL,50 uL')")
    sw.add_argument("--zip", action="store_true", help="pair the i-th values instead of the Cartesian product")
    sw.add_argument("--out", help="output folder (new; default sweeps/<scenario>)")
    sw.add_argument("--precision", choices=["single", "double"], default="single")
    sw.add_argument("--device", choices=["cpu", "gpu"])
    sw.add_argument("--force", action="store_true", help="start even when the work estimate is above the limits")
    sw.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                    help="progress bar on stderr over the groups of a key sweep (auto: on a terminal)")


def run_sweep(args, set_platform) -> int:
    from . import scenario as sc

    out = Path(args.out) if args.out else Path("sweeps") / Path(args.scenario).stem
    _check_out(out)
    set_platform(args.device, args.precision)
    from . import calibrate
    from .build import build

    scen = sc.load(args.scenario)
    counts = [len(item.partition("=")[2].split(",")) for item in args.vary]
    members = max(counts) if args.zip else math.prod(counts)
    _estimate("sweep", scen, members=members, force=args.force, itemsize=8 if args.precision == "double" else 4)
    from . import sweepkeys

    names = [item.partition("=")[0].strip() for item in args.vary]
    if any(sweepkeys.is_key_path(n) for n in names):
        return _run_key_sweep(args, scen, out)
    built = build(scen)
    vary = {}
    for item in args.vary:
        name, _, rest = item.partition("=")
        name = name.strip()
        if not rest:
            raise ValueError(f"--vary {item!r}; allowed: NAME=VALUE,VALUE,...")
        (p,) = calibrate.resolve(built, [name])
        vary[name] = [_quantity(v, p.unit, f"--vary {name}") for v in rest.split(",")]
    bar = _sweep_progress(args)
    res = calibrate.sweep(built, vary, zip_values=args.zip)
    bar(1, 1, len(res["values"]))   # one vmapped program: one step of the bar
    if hasattr(bar, "close"):
        bar.close()
    _publish(out, lambda tmp: _write_sweep(tmp, scen, res))
    print(f"paracrine sweep: {len(res['values'])} members on {res['devices']} device(s) -> {out}/sweep.csv")
    print((out / "sweep.csv").read_text(), end="")
    return 0


def _write_sweep(tmp, scen, res) -> None:
    import json

    from . import calibrate

    calibrate.write_table(tmp / "sweep.csv", res)
    from . import sweepkeys

    (tmp / "figures").mkdir()
    sweepkeys.plot(tmp / "figures" / "sweep.png", {"keys": res["names"], "metrics": res["metrics"],
                                                   "rows": [dict(zip(res["names"], map(float, v))) for v in res["values"]]})
    (tmp / "sweep.json").write_text(json.dumps({"scenario": scen.source, "names": res["names"], "units": res["units"],
                                                "values": res["values"].tolist(), "devices": res["devices"],
                                                "metrics": res["metrics"]}, indent=1))


def _run_key_sweep(args, scen, out) -> int:
    """`paracrine sweep` over scenario keys by path (see paracrine.sweepkeys)."""
    import json

    from . import sweepkeys

    vary = {}
    for item in args.vary:
        name, _, rest = item.partition("=")
        name = name.strip()
        if not sweepkeys.is_key_path(name):
            raise ValueError(f"--vary {name}: a free parameter cannot be swept together with scenario keys; give "
                             "it by its scenario key (e.g. injection[0].dose instead of cells.dose)")
        sweepkeys.parse_path(name)
        if not rest:
            raise ValueError(f"--vary {item!r}; allowed: KEY=VALUE,VALUE,...")
        vary[name] = [sweepkeys.parse_value(v) for v in rest.split(",")]
    bar = _sweep_progress(args)
    try:
        res = sweepkeys.sweep(Path(args.scenario).read_text(), str(args.scenario), vary, zip_values=args.zip,
                              progress=bar)
    finally:
        if hasattr(bar, "close"):
            bar.close()
    def write(tmp):
        sweepkeys.write(tmp, res, source=str(args.scenario))
        (tmp / "sweep.json").write_text(json.dumps({"scenario": str(args.scenario), "keys": res["keys"],
                                                    "members": res["rows"], "groups": res["groups"],
                                                    "metrics": res["metrics"]}, indent=1, default=str))

    _publish(out, write)
    print(f"paracrine sweep: {len(res['rows'])} members in {len(res['groups'])} group(s) of equal structure "
          f"({len(res['groups'])} compilation(s)) -> {out}/sweep.csv")
    print((out / "sweep.csv").read_text(), end="")
    return 0


def _sweep_progress(args):
    """progress(i, n, members) after each group: a tqdm bar on stderr (--progress) or nothing."""
    import sys

    on = {"auto": sys.stderr.isatty(), "on": True, "off": False}[getattr(args, "progress", "auto")]
    if not on:
        return lambda i, n, m: None
    from tqdm import tqdm

    state = {}

    def update(i, n, m):
        if "bar" not in state:
            state["bar"] = tqdm(total=n, desc="paracrine sweep", unit="group", file=sys.stderr)
        state["bar"].update(1)
        state["bar"].set_postfix_str(f"{m} member(s)")

    update.close = lambda: state["bar"].close() if "bar" in state else None
    return update
