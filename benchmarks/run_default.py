"""Wall time of `paracrine run` on the default scenario, end to end: start-up, meshing, compile,
simulation and every output, as a user sees it (a fresh process each time).

    python benchmarks/run_default.py [--quick] [--threads N] [--repeat K] [--precision double]
                                     [--device cpu|gpu] [--out DIR]

--quick runs a 6-hour, coarse-mesh version (for the tests). Writes a JSON record to
benchmarks/results/ (or --out) with the device, versions, problem size and timings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, pin_threads, write_record  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 simulated hours on a coarse mesh")
    ap.add_argument("--threads", type=int, help="pin to the first N cores")
    ap.add_argument("--repeat", type=int, default=1, help="runs to time (default 1)")
    ap.add_argument("--precision", choices=["single", "double"], default="single")
    ap.add_argument("--device", choices=["cpu", "gpu"])
    ap.add_argument("--out", help="folder for the JSON record (default benchmarks/results)")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    from paracrine import scenario as sc

    text = sc.default_text()
    if args.quick:
        text = (text.replace('end = "7 d"', 'end = "6 h"').replace('mesh_size = "0.4 mm"', 'mesh_size = "0.7 mm"')
                .replace('refine = "0.25 mm"\n', "").replace('maps = ["6 h", "1 d", "3 d", "7 d"]', 'maps = ["6 h"]')
                .replace('fields = "12 h"', 'fields = "3 h"'))
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        scen = Path(tmp) / "scenario.toml"
        scen.write_text(text)
        for k in range(args.repeat):
            out = Path(tmp) / f"run{k}"
            cmd = [sys.executable, "-m", "paracrine.cli", "run", str(scen), "--out", str(out), "--progress", "off",
                   "--precision", args.precision] + (["--device", args.device] if args.device else [])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return proc.returncode
            info = json.loads((out / "run.json").read_text())
            metrics = json.loads((out / "metrics.json").read_text())
            runs.append({"wall_s": wall, **{k: v for k, v in info["timings"].items()}, "steps": info["steps"],
                         "stages": info["stages"], "stepper": info["stepper"], "status": info["status"],
                         "budget_closure": {f: v["budget_pg"]["closure"] for f, v in metrics["factors"].items()}})
            print(f"run {k + 1}: {wall:.1f} s wall ({info['timings']['geometry_s']:.1f} s geometry, "
                  f"{info['timings']['simulate_s']:.1f} s simulation incl. compile, "
                  f"{info['timings']['outputs_s']:.1f} s outputs); {info['steps']} steps, {info['stepper']}")
        env = environment()
        record = {"benchmark": "run_default", "quick": args.quick, "environment": env, "precision": args.precision,
                  "problem": {"scenario": "default" + (" (quick: 6 h, mesh 0.7 mm)" if args.quick else ""),
                              "geometry": info["geometry"], "factors": list(info["scenario"]["factors"]),
                              "end_s": info["scenario"]["time"]["end"], "dt_s": info["scenario"]["time"]["dt"]},
                  "runs": runs, "best_wall_s": min(r["wall_s"] for r in runs), "goal_wall_s": 60.0}
    path = write_record("run_default", record, args.out)
    print(f"best {record['best_wall_s']:.1f} s (goal < {record['goal_wall_s']:.0f} s) -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
