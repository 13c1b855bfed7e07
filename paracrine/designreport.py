"""What `paracrine design` writes: design.json, designed.toml, alternatives.csv and figures (objective
per evaluation, the best schedule's course against the scenario's own, dose against objective)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from .calibrate import PG_PER_ML
from .design import HOUR, Spec, _exact_objective, designed_text, exact_run, with_controls

def write(folder: Path, out: dict, spec: Spec, *, figures: bool = True) -> None:
    ranked = out["ranked"]
    best = ranked[0]
    rows = []
    for rank, o in enumerate(ranked, 1):
        r = o["result"]
        rows.append({"rank": rank, "alternative": o["label"], "objective_exact": _exact_objective(o),
                     "objective_start_exact": (o["exact_start"]["objectives"][0]["value"]
                                               if len(o["exact_start"]["objectives"]) == 1 else 1.0),
                     "feasible": all(c["met"] for c in o["exact_optimum"]["constraints"]),
                     **{f"{n} [{u}]": float(v) for n, u, v in zip(r.names, r.units, r.theta)},
                     "solves": r.evaluations, "seconds": o["seconds"]})
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(folder / "alternatives.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, keys)
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

    def entry(o):
        r = o["result"]
        return {"alternative": o["label"], "scenario": o["scenario"].source,
                "controls": [{"name": n, "unit": u, "optimum": float(v), "start": float(v0), "at_bound": b,
                              "sensitivity_per_unit": float(sv), "elasticity": float(e),
                              "bounds": list(o.get("spec", spec).controls[n])}
                             for n, u, v, v0, b, sv, e in zip(r.names, r.units, r.theta, r.theta0, r.at_bound,
                                                              r.sensitivity, r.elasticity)],
                "objective": {"exact_at_optimum": o["exact_optimum"]["objectives"],
                              "exact_at_start": o["exact_start"]["objectives"],
                              "surrogate_at_optimum": r.objective, "surrogate_at_start": r.objective0,
                              "note": "exact: the scenario's own time settings and exact exposure; surrogate: the "
                                      f"optimiser's smooth objective on fixed steps of {o['dt']:g} s"},
                "constraints": {"at_optimum_exact": o["exact_optimum"]["constraints"],
                                "optimiser": r.constraints},
                "active_constraints": [c["name"] for c in r.constraints if c["active"]],
                "warnings": o.get("warnings", []),
                "metrics_at_optimum": o["exact_optimum"]["metrics"], "metrics_at_start": o["exact_start"]["metrics"],
                "optimiser": {"method": "augmented Lagrangian around L-BFGS-B, gradients by reverse mode",
                              "solves": r.evaluations, "outer_iterations": r.outer, "converged": r.converged,
                              "message": r.message, "seconds": o["seconds"], "compile_seconds": r.compile_seconds,
                              "dt_s": o["dt"]}}

    info = {"objectives": spec.objectives, "best": entry(best), "alternatives": [entry(o) for o in ranked],
            "limits": {"budget_cells": spec.budget, "medium_budget_mm3": spec.medium_budget,
                       "max_volume_mm3": spec.max_volume, "max_site_volume_mm3": spec.max_site_volume,
                       "peak_ceiling_pg_per_mm3": spec.peak_ceiling, "procedures": spec.procedures}}
    (folder / "design.json").write_text(json.dumps(info, indent=1, default=float))
    r = best["result"]
    header = (f"# designed by paracrine design: {', '.join(spec.objectives)}; alternative {best['label']}\n"
              f"# controls: " + ", ".join(f"{n} = {v:.6g} {u}" for n, v, u in zip(r.names, r.theta, r.units)) + "\n")
    (folder / "designed.toml").write_text(designed_text(best["raw"], best["controls"], r.theta, header, best["built"],
                                                        best["model_opt"]))
    if figures:
        plot(folder, out, spec)


def plot(folder: Path, out: dict, spec: Spec) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked = out["ranked"]
    fig, ax = plt.subplots(figsize=(6, 4))
    tol = spec.tol
    for o in ranked:
        h = o["result"].history
        n = np.arange(1, len(h) + 1)
        val = np.array([x["objective"] for x in h])
        ok = np.array([x["violation"] <= tol for x in h])
        best = np.maximum.accumulate(np.where(ok, val, -np.inf))
        line, = ax.plot(n[np.isfinite(best)], best[np.isfinite(best)], label=o["label"])
        ax.plot(n, val, ".", ms=2, color=line.get_color(), alpha=0.35)
    ax.set_xlabel("evaluation (forward + reverse solve)")
    ax.set_ylabel("objective (surrogate, internal units)")
    ax.set_title("Best feasible objective so far (dots: every evaluation)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(folder / "objective.png", dpi=120)
    plt.close(fig)

    best = ranked[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    ts = best["exact_optimum"]["ts"] / HOUR
    t0 = best["exact_start"]["ts"] / HOUR
    factors = list(best["built"].model.factors)
    d = best["scenario"].data
    for s, f in enumerate(factors):
        line, = ax.plot(ts, best["exact_optimum"]["border_means"][:, s], label=f"{f}, designed")
        ax.plot(t0, best["exact_start"]["border_means"][:, s], "--", color=line.get_color(), label=f"{f}, scenario")
        thr = d["factors"][f]["threshold"]
        if thr is not None:
            ax.axhline(thr * PG_PER_ML, color=line.get_color(), lw=0.7, ls=":")
    ax.set_yscale("log")
    top = max(float(np.max(best["exact_optimum"]["border_means"])), float(np.max(best["exact_start"]["border_means"])))
    ax.set_ylim(max(top * 1e-4, 1e-3), top * 2)
    ax.set_xlabel("time (h)")
    ax.set_ylabel("border-zone mean (pg/mL)")
    ax.set_title("Designed schedule against the scenario's own")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(folder / "course.png", dpi=120)
    plt.close(fig)

    # trade-off: objective against the total dose (or volume) at the optimal schedule
    r = best["result"]
    dose_keys = [k for k, n in enumerate(r.names) if n.endswith((".dose", ".volume"))]
    if dose_keys:
        prob = best["problem"]
        sub = best.get("spec", spec)
        factors_ = np.geomspace(0.1, 1.0, 7) if sub.budget or sub.medium_budget else np.geomspace(0.1, 3.0, 9)
        xs, ys = [], []
        for fct in factors_:
            theta = r.theta.copy()
            for k in dose_keys:
                theta[k] *= fct
            params, model = with_controls(prob.params0, prob.controls, theta, prob.model)
            ex = exact_run(best["built"], params, best.get("spec", spec), prob.controls, theta, model)
            xs.append(fct)
            ys.append(ex["objectives"][0]["value"])
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs, ys, "o-")
        ax.set_xscale("log")
        ax.set_xlabel("dose (or volume) relative to the optimum, same schedule")
        o0 = best["exact_optimum"]["objectives"][0]
        ax.set_ylabel(f"{o0['label']}\n({o0['unit']})" if o0["unit"] != "1" else o0["label"], fontsize=8)
        ax.set_title("Trade-off: dose against the objective")
        fig.tight_layout()
        fig.savefig(folder / "tradeoff.png", dpi=120)
        plt.close(fig)
