"""Render benchmark JSON records as the markdown tables of benchmarks/README.md.

    python benchmarks/table.py benchmarks/results/forward-*.json
    python benchmarks/table.py benchmarks/results/run_default-*.json
    python benchmarks/table.py benchmarks/results/fit-*.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def forward_table(records: list[dict]) -> str:
    lines = ["| case | threads | method | stages | dt (s) | compile (s) | ms per 0.01 min | ns per node-factor-step | rel. error vs V1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        thr = rec["environment"]["cpu_threads"]
        for r in rec["results"]:
            lines.append(f"| {r['case']} | {thr} | {r['method']} | {r['stages']} | {r['dt_s']:.4g} | {r['compile_s']:.2f} | "
                         f"{r['ms_per_0.01min']:.2f} | {r['ns_per_node_factor_step']:.2f} | {r['rel_error_vs_V1']:.2e} |")
    base = [(rec["environment"]["cpu_threads"], b) for rec in records for b in rec.get("baselines", [])]
    if base:
        lines += ["", "| baseline (same scheme, NumPy / SciPy) | threads | method | NumPy/SciPy ms per step | JAX ms per step | JAX speed-up |",
                  "|---|---|---|---|---|---|"]
        for thr, b in base:
            lines.append(f"| {b['case']} | {thr} | {b['method']} | {1e3 * b['numpy_s_per_step']:.2f} | "
                         f"{1e3 * b['jax_s_per_step']:.2f} | {b['speedup']:.1f}x |")
    bw = [(rec["environment"]["cpu_threads"], rec["bandwidth"]) for rec in records if rec.get("bandwidth")]
    if bw:
        lines += ["", "| bandwidth probe | threads | copy GB/s | 7-point pass GB/s | pass / copy |", "|---|---|---|---|---|"]
        for thr, b in bw:
            lines.append(f"| {b['n']}^3 float32 | {thr} | {b['copy_GBps']:.1f} | {b['stencil_GBps']:.1f} | "
                         f"{100 * b['stencil_fraction_of_copy']:.0f} % |")
    return "\n".join(lines)


def run_table(records: list[dict]) -> str:
    lines = ["| scenario | device | threads | precision | nodes | steps | geometry (s) | simulation incl. compile (s) | "
             "first chunk (s) | outputs (s) | wall (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        env, p = rec["environment"], rec["problem"]
        for r in rec["runs"]:
            lines.append(f"| {p['scenario']} | {env['platform']} {env['device']} | {env['cpu_threads']} | {rec['precision']} | "
                         f"{p['geometry'].get('nodes', p['geometry'].get('tissue_voxels'))} | {r['steps']} | "
                         f"{r['geometry_s']:.1f} | {r['simulate_s']:.1f} | {r['first_chunk_s']:.1f} | {r['outputs_s']:.1f} | "
                         f"{r['wall_s']:.1f} |")
    return "\n".join(lines)


def fit_table(records: list[dict]) -> str:
    lines = ["| problem | threads | forward solve (ms) | ours: s / forward solves / passes / max error | "
             "scipy FD (trf): s / forward solves / passes / max error | (value + grad) / value |",
             "|---|---|---|---|---|---|"]
    for rec in records:
        p, o, r = rec["problem"], rec["ours"], rec["scipy_trf_fd"]
        lines.append(f"| {p['nodes']} nodes, {p['days']} d, {p['data']} data, 3 free{' (quick)' if rec['quick'] else ''} | "
                     f"{rec['environment']['cpu_threads']} | {1e3 * rec['forward_s']:.1f} | {o['wall_s']:.2f} / "
                     f"{o['forward_equivalents']:.1f} / {o['passes']} / {o['max_rel_error']:.1e} | {r['wall_s']:.2f} / "
                     f"{r['forward_equivalents']:.1f} / {r['passes']} / {r['max_rel_error']:.1e} | "
                     f"{rec['gradient_ratio']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    recs = [json.loads(Path(p).read_text()) for p in sys.argv[1:]]
    env = recs[0]["environment"] if recs else {}
    print(f"<!-- {env.get('platform')} {env.get('device')}, jax {env.get('jax')}, {recs[0]['precision'] if recs else ''} -->")
    runs = [r for r in recs if r.get("benchmark") == "run_default"]
    fits = [r for r in recs if r.get("benchmark") == "fit"]
    fwd = [r for r in recs if r.get("benchmark") not in ("run_default", "fit")]
    if fwd:
        print(forward_table(fwd))
    if runs:
        print(run_table(runs))
    if fits:
        print(fit_table(fits))
