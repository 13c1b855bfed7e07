"""`paracrine compare RUN_A RUN_B ...`: arms side by side.

Overlays the region courses (the border zone's mean by default) of every run, one panel per factor,
and tabulates every metric of metrics.json side by side with its ratio to the first run. Runs are
named by their folder names (made unique with the parent folder where two are alike). Runs with
different factors or regions are compared on the ones they have in common, and the note says which
were left out; none in common is refused.

Writes into --out (default ./compare): compare.csv (factor, region, metric, unit, one column per run,
then RUN/FIRST for every later run), compare.json (the same rows, the runs, the notes) and compare.png.
From Python: `compare(["runs/a", "runs/b"])` returns a `Comparison` whose `.table` is that frame.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from .load import Run, RunFolderError, load_run
from .report import unit_of


class CompareError(ValueError):
    """Runs that cannot be compared; the message names them and says why."""


@dataclasses.dataclass
class Comparison:
    runs: list            # Run objects, in the order given
    names: list           # their names (folder names, made unique)
    factors: list         # the factors compared (common to all)
    regions: list         # the regions compared (common to all)
    region: str           # the region whose courses are overlaid and printed
    table: object         # pandas: factor, region, metric, unit, NAME..., NAME/FIRST...
    notes: list           # what was left out, and why

    def ratio_columns(self) -> list:
        return [f"{n}/{self.names[0]}" for n in self.names[1:]]

    def to_json(self) -> dict:
        def num(x):
            return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)

        rows = []
        for rec in self.table.to_dict("records"):
            rows.append({"factor": rec["factor"], "region": rec["region"], "metric": rec["metric"], "unit": rec["unit"],
                         "values": {n: num(rec[n]) for n in self.names},
                         "ratios_to_first": {n: num(rec[c]) for n, c in zip(self.names[1:], self.ratio_columns())}})
        return {"runs": [{"name": n, "path": str(r.path)} for n, r in zip(self.names, self.runs)],
                "first": self.names[0], "factors": self.factors, "regions": self.regions, "region": self.region,
                "notes": self.notes, "rows": rows}


def _names(runs: list[Run]) -> list[str]:
    """Folder names; where two are alike, parent/name; where that is alike too (the same folder twice), a #k
    suffix on the folder name."""
    base = [r.path.name for r in runs]
    names = [f"{r.path.parent.name}/{n}" if base.count(n) > 1 else n for r, n in zip(runs, base)]
    names = [n if names.count(n) == 1 else b for n, b in zip(names, base)]
    seen: dict = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if names.count(n) == 1 else f"{n}#{seen[n]}")
    return out


def _common(runs, names, what: str, get) -> tuple[list, list]:
    """The items (factors or regions) common to all runs, in the first run's order, and notes on the rest."""
    sets = [list(get(r)) for r in runs]
    common = [x for x in sets[0] if all(x in s for s in sets[1:])]
    notes = []
    for n, s in zip(names, sets):
        extra = [x for x in s if x not in common]
        if extra:
            notes.append(f"{n}: {what} {extra} left out (not in every run)")
    if not common:
        listing = "; ".join(f"{n}: {s}" for n, s in zip(names, sets))
        raise CompareError(f"the runs have no {what} in common ({listing}); allowed: runs that share at least one "
                           f"{what[:-1] if what.endswith('s') else what}")
    return common, notes


def compare(paths, *, region: str = "border") -> Comparison:
    """Load the runs at `paths` (folders, or Run objects) and tabulate their metrics side by side."""
    import pandas as pd

    runs = [p if isinstance(p, Run) else load_run(p) for p in paths]
    if len(runs) < 2:
        raise CompareError(f"compare needs at least two runs, got {len(runs)}")
    names = _names(runs)
    factors, notes = _common(runs, names, "factors", lambda r: r.factors)
    regions, more = _common(runs, names, "regions", lambda r: r.region_names)
    notes += more
    if region not in regions:
        raise CompareError(f"--region {region}: not a region of every run; allowed: {regions}")
    keys = ["factor", "region", "metric"]
    columns, seen = {}, {}
    for n, r in zip(names, runs):
        m = r.metrics
        m = m[m["factor"].isin(factors + [""]) & m["region"].isin(regions + [""])]
        idx = list(zip(m["factor"], m["region"], m["metric"]))
        columns[n] = dict(zip(idx, m["value"].to_numpy(float)))
        seen.update(dict.fromkeys(idx))   # every row any run has, in the order met
    # per factor: each region's metrics, then the factor's own; the run's own (cells, step) last
    rank = {f: k for k, f in enumerate(factors + [""])}, {g: k for k, g in enumerate(regions + [""])}
    order = sorted(seen, key=lambda k: (rank[0][k[0]], rank[1][k[1]]))
    table = pd.DataFrame(order, columns=keys)
    table["unit"] = [unit_of(k[2]) or "" for k in order]
    for n in names:
        table[n] = [columns[n].get(k, np.nan) for k in order]
    first = table[names[0]].to_numpy(float)
    for n in names[1:]:
        v = table[n].to_numpy(float)
        table[f"{n}/{names[0]}"] = np.where(first != 0, v / np.where(first != 0, first, 1.0), np.nan)
    return Comparison(runs=runs, names=names, factors=factors, regions=regions, region=region, table=table,
                      notes=notes)


def plot(c: Comparison, path: Path) -> None:
    """The region course (mean) of every run, one panel per factor, thresholds dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(c.factors)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1.6, 3.8), squeeze=False)
    end = max(float(r.regions["time_h"].max()) for r in c.runs)
    scale, tunit = (24.0, "d") if end > 72 else (1.0, "h")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, f in zip(axes[0], c.factors):
        lo, hi = math.inf, 0.0
        for k, (name, r) in enumerate(zip(c.names, c.runs)):
            t, y = r.course(f, c.region)
            ax.plot(t / scale, y, color=colours[k % len(colours)], lw=1.6, label=name)
            pos = y[y > 0]
            if pos.size:
                lo, hi = min(lo, float(pos.min())), max(hi, float(pos.max()))
        thr = [r.metrics_json["factors"][f].get("threshold_pg_per_mL") for r in c.runs]
        same = all(x == thr[0] for x in thr)
        for k, x in enumerate(thr[:1] if same else thr):
            if x:   # one black line where every run has the same threshold, else one per run in its colour
                ax.axhline(x, color="k" if same else colours[k % len(colours)], ls="--", lw=0.8)
                lo, hi = min(lo, x), max(hi, x)
        if hi > 0:
            ax.set_yscale("log")
            ax.set_ylim(max(lo, hi * 1e-6) / 1.5, hi * 1.5)
        ax.set_xlim(0, end / scale)
        ax.set_xlabel(f"time ({tunit})")
        ax.set_ylabel(f"{f}, {c.region} mean (pg/mL)")
        ax.set_title(f"{f}: {c.region} zone" if c.region == "border" else f"{f}: {c.region}")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False, title="run (dashed: threshold)",
               title_fontsize=8)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (4.6 * n + 1.6), 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4g}"


def format_table(c: Comparison, *, all_regions: bool = False) -> str:
    """The printed table: the chosen region's metrics and each factor's own (budget, threshold), per factor."""
    t = c.table
    if not all_regions:
        t = t[t["region"].isin([c.region, ""])]
    cols = c.names + c.ratio_columns()
    head = ["factor", "region", "metric", "unit"] + cols
    body = [[str(r["factor"]), str(r["region"]), str(r["metric"]), str(r["unit"])] + [_fmt(r[k]) for k in cols]
            for r in t.to_dict("records")]
    width = [max(len(h), *(len(b[k]) for b in body)) if body else len(h) for k, h in enumerate(head)]
    def line(row):
        return "  ".join(x.ljust(w) if k < 4 else x.rjust(w) for k, (x, w) in enumerate(zip(row, width)))

    return "\n".join([line(head), line(["-" * w for w in width])] + [line(b) for b in body])


def write(c: Comparison, out: Path, *, figures: bool = True) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "compare.csv", out / "compare.json"]
    c.table.to_csv(files[0], index=False, float_format="%.10g")
    files[1].write_text(json.dumps(c.to_json(), indent=1))
    if figures:
        files.append(out / "compare.png")
        plot(c, files[-1])
    return files


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="compare run folders: courses overlaid, metrics side by side with ratios",
                       description="Overlays the region courses (mean, default the border zone) of every run, one "
                                   "panel per factor, and tabulates every metric of metrics.json side by side with "
                                   "its ratio to the first run. Runs are named by their folder names. Writes "
                                   "compare.csv, compare.json and compare.png into --out (replacing those files).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by paracrine run (two or more)")
    p.add_argument("--out", default="compare", help="output folder (default ./compare)")
    p.add_argument("--region", default="border", help="region whose courses are overlaid and printed (default border)")
    p.add_argument("--all-regions", action="store_true", help="print every region's metrics (the files hold all)")
    p.add_argument("--no-figures", action="store_true", help="skip compare.png")


def run(args) -> int:
    try:
        c = compare(args.runs, region=args.region)
        files = write(c, Path(args.out), figures=not args.no_figures)
    except (CompareError, RunFolderError) as err:
        print(f"paracrine compare: {err}", file=sys.stderr)
        return 2
    print(f"paracrine compare: {len(c.runs)} runs ({', '.join(c.names)}); ratios to {c.names[0]}")
    for note in c.notes:
        print(f"paracrine compare: note: {note}", file=sys.stderr)
    print(format_table(c, all_regions=args.all_regions))
    print(f"paracrine compare: wrote {', '.join(str(f) for f in files)}")
    return 0
