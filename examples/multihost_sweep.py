"""A sweep whose members are spread over the devices of several processes (`jax.distributed`).

Every process runs this same script; the member axis of the sweep spans all processes' devices
(`jax.devices()`), each process computes its share and gathers the rest, and process 0 writes
the result. On a cluster (SLURM, Open MPI) the coordinator, process count and id are detected:

    srun -n 4 python examples/multihost_sweep.py SCENARIO.toml --vary cells.dose=1e5,1e6,1e7 --out sweep.json

On one machine, two processes with two CPU devices each (CPU collectives by gloo):

    export XLA_FLAGS=--xla_force_host_platform_device_count=2
    python examples/multihost_sweep.py S.toml --vary cells.dose=1e5,1e6 --out s.json \
        --coordinator localhost:12355 --processes 2 --id 0 &
    python examples/multihost_sweep.py S.toml --vary cells.dose=1e5,1e6 --out s.json \
        --coordinator localhost:12355 --processes 2 --id 1

`--processes 1` runs without `jax.distributed` (the one-process reference).
"""

from __future__ import annotations

import argparse
import json


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--vary", action="append", required=True, metavar="NAME=V1,V2,...")
    ap.add_argument("--out", required=True, help="JSON file that process 0 writes")
    ap.add_argument("--coordinator", help="host:port of process 0 (default: detected from the cluster)")
    ap.add_argument("--processes", type=int, help="number of processes (default: detected)")
    ap.add_argument("--id", type=int, help="this process's id (default: detected)")
    ap.add_argument("--double", action="store_true", help="float64")
    args = ap.parse_args(argv)

    import jax

    if args.processes != 1:
        # CPU devices across processes need a collectives library (the GPU backend brings its own)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.processes,
                                   process_id=args.id)    # before anything else touches the devices
    if args.double:
        jax.config.update("jax_enable_x64", True)

    from paracrine import build, calibrate, scenario

    vary = {}
    for item in args.vary:
        name, _, values = item.partition("=")
        vary[name] = [float(v) for v in values.split(",")]
    res = calibrate.sweep(build.build(scenario.load(args.scenario)), vary)
    if jax.process_index() == 0:
        with open(args.out, "w") as f:
            json.dump({"processes": jax.process_count(), "devices": res["devices"], "names": res["names"],
                       "values": res["values"].tolist(), "means_pg_per_mm3": res["means"].tolist(),
                       "metrics": res["metrics"]}, f)
        print(f"{len(res['values'])} members on {res['devices']} devices in {jax.process_count()} processes: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
