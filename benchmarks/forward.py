"""Forward-solve speed and accuracy: V5 (BioFVM's voxel problem) and a ~200k-node tetrahedral mesh.

For each stepper: compile time, ms per simulated 0.01 min, ns per node-factor-step,
relative L2 error against the V1 cosine mode at the same end time; the same schemes
written by hand in NumPy/SciPy and our speed-up over them; the mesh operator in its
two layouts; the grid pass against the device's copy bandwidth. With --biofvm, the V5 grid
section also runs BioFVM's LOD solver (its V5 driver, at its dt of 0.01 min, on the same
cores), alternating with the JAX runs, and records its time and error as rows of the record.

    python benchmarks/forward.py            # full sizes (100^3 grid, 59^3-node mesh)
    python benchmarks/forward.py --quick    # small sizes, seconds
    python benchmarks/forward.py --threads 1 --precision double
    python benchmarks/forward.py --only grid --biofvm PATH/TO/v5_driver
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, keep_freed_memory, pin_threads, timeit, write_record  # noqa: E402

MIN = 60.0                    # s
D_V5 = 1e5 * 1e-6 / MIN       # 1e5 um^2/min in mm^2/s
K_V5 = 0.1 / MIN              # 0.1 /min in 1/s
DT_V5 = 0.01 * MIN            # 0.01 min in s
BIOFVM_DX_MM = 0.01           # the V5 driver's voxels: 10 um


def cosine(coords, lower, length):
    import numpy as np

    return np.prod(np.cos(np.pi * (coords - lower) / length), axis=-1)


def exact_factor(dim, length, t):
    import numpy as np

    return np.exp(-(dim * D_V5 * np.pi ** 2 / length ** 2 + K_V5) * t)


# ---------------------------------------------------------------- JAX runs

def run_case(model, c0, exact, *, method, dt, t_end, label, n_nodes, repeat):
    import jax
    import numpy as np

    from paracrine import solver

    params = model.params(D=D_V5, decay=K_V5)
    dt = t_end / np.ceil(t_end / dt * (1 - 1e-12))  # the step simulate will take: equal steps no longer than dt
    stepper = solver.plan(model, params, dt=dt, method=method)

    c0 = jax.device_put(c0)   # set up before the clock starts, as the BioFVM driver fills its voxels

    def go(span=1):
        sol = solver.simulate(model, params, t_end=span * t_end, dt=dt, method=stepper, c0=c0, positive=False)
        return jax.block_until_ready(sol)

    first, run = timeit(go, repeat=repeat)
    sol = go()
    err = float(np.linalg.norm(np.asarray(sol.final) - exact) / np.linalg.norm(exact))
    steps = int(sol.stats["steps"])  # save intervals are cut into equal steps no longer than dt
    S = model.n_factors
    # per-step cost without the call's fixed part (buffers in and out), as the BioFVM driver times its
    # steps after a warm-up step: the run over 2 t_end less the run over t_end; only where a call
    # has few steps (with many, the whole call's rate is already that)
    steady = None
    if steps <= 4:
        _, run2 = timeit(lambda: go(2), repeat=repeat)
        steady = 1e3 * (run2 - run) / (t_end / DT_V5)
    return {
        "case": label, "method": method, "stages": stepper.stages, "dt_s": t_end / steps,
        "t_end_s": t_end, "steps": steps,
        "compile_s": max(first - run, 0.0), "run_s": run,
        "ms_per_0.01min": 1e3 * run / (t_end / DT_V5), "steady_ms_per_0.01min": steady,
        "ns_per_node_factor_step": 1e9 * run / (n_nodes * S * steps),
        "rel_error_vs_V1": err, "cg_iterations": int(sol.stats["cg_iterations"]), "ok": sol.ok,
    }


# ---------------------------------------------------------------- BioFVM (its V5 driver)

def biofvm_case(path, n, S, t_end, *, label, sample):
    """One run of BioFVM's V5 driver (LOD, dt = 0.01 min) on this process's cores: the row of its
    output (ms per step after a warm-up step, relative L2 error against V1 at t_end)."""
    threads = len(os.sched_getaffinity(0))
    cmd = [str(path), str(n), "0.01", f"{t_end / MIN:g}", str(threads), str(S)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    line = next((ln for ln in proc.stdout.splitlines() if "ms_per_step=" in ln), None)
    if line is None:
        raise RuntimeError(f"{' '.join(cmd)}: no result line in its output:\n{proc.stdout[-500:]}")
    out = dict(re.findall(r"(\S+)=(\S+)", line))
    steps, ms_step = int(out["steps"]), float(out["ms_per_step"])
    return {
        "case": label, "method": "biofvm", "solver": "BioFVM 1.0.4 LOD (Thomas), v5_driver", "stages": 1,
        "dt_s": DT_V5, "t_end_s": steps * DT_V5, "steps": steps, "compile_s": 0.0,
        "run_s": 1e-3 * ms_step * steps, "ms_per_0.01min": float(out["ms_per_0.01min"]),
        "ns_per_node_factor_step": 1e6 * ms_step / (n ** 3 * S), "rel_error_vs_V1": float(out["rel_l2"]),
        "cg_iterations": 0, "ok": True, "threads": int(out["threads"]), "precision": "float64",
        "sample": sample, "process_wall_s": wall, "command": " ".join([Path(cmd[0]).name] + cmd[1:]),
    }


def biofvm_comparison(rows):
    """Per case: BioFVM's median time and error over its samples, and each JAX row at equal or better
    error with its speed-up (BioFVM ms per 0.01 min / ours)."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        bio = [r for r in rows if r["case"] == case and r["method"] == "biofvm"]
        if not bio:
            continue
        ms = statistics.median(r["ms_per_0.01min"] for r in bio)
        err = statistics.median(r["rel_error_vs_V1"] for r in bio)
        ours = [{"method": r["method"], "dt_s": r["dt_s"], "ms_per_0.01min": r["ms_per_0.01min"],
                 "rel_error_vs_V1": r["rel_error_vs_V1"], "speedup": ms / r["ms_per_0.01min"],
                 "steady_speedup": ms / (r.get("steady_ms_per_0.01min") or r["ms_per_0.01min"])}
                for r in rows if r["case"] == case and r["method"] != "biofvm" and r["rel_error_vs_V1"] <= err]
        best = max(ours, key=lambda r: r["speedup"], default=None)
        out.append({"case": case, "biofvm_samples": len(bio), "biofvm_ms_per_0.01min": ms,
                    "biofvm_ms_range": [min(r["ms_per_0.01min"] for r in bio), max(r["ms_per_0.01min"] for r in bio)],
                    "biofvm_rel_error": err, "at_equal_or_better_error": ours, "best": best})
        if best:
            print(f"  {case}: BioFVM {ms:.2f} ms/0.01min (err {err:.2e}); best at equal or better error: "
                  f"{best['method']} dt={best['dt_s']:.4g} s {best['ms_per_0.01min']:.2f} ms, {best['speedup']:.1f}x "
                  f"(per step after the first, as BioFVM times itself: {best['steady_speedup']:.1f}x)",
                  flush=True)
    return out


def grid_cases(n, factors, dtype, repeat, methods, biofvm=None):
    """The V5 grid rows; with biofvm (the driver's path) a BioFVM run before every JAX case and
    after the last, so that both sample the same state of the machine."""
    import numpy as np

    from paracrine import geometry
    from paracrine import solver

    half = 0.5  # [-500, 500] um as BioFVM's test; n = 100 gives its 10 um voxels
    grid = geometry.box_grid([-half] * 3, [half] * 3, n)
    disc = geometry.discretise(grid)
    out = []
    for S in factors:
        model = solver.Model(disc, factors=[f"f{k}" for k in range(S)])
        c0 = np.broadcast_to(cosine(disc.coordinates, -half, 2 * half).reshape(grid.shape), (S,) + grid.shape)
        c0 = np.asarray(c0, dtype)
        t_end = 20 * DT_V5
        exact = c0 * exact_factor(3, 2 * half, t_end)
        rho = 4 * D_V5 * 3 / (grid.spacing[0] ** 2)  # exact bound of the 7-point operator
        label = f"V5 grid {n}^3, {S} factor{'s' if S > 1 else ''}"
        samples = 0

        def bio():
            nonlocal samples
            if biofvm:
                out.append(dict(biofvm_case(biofvm, n, S, t_end, label=label, sample=samples),
                                nodes=disc.n_nodes, factors=S))
                samples += 1
                print(_row(out[-1]), flush=True)

        for method, dt in methods(rho):
            bio()
            out.append(dict(run_case(model, c0, exact, method=method, dt=dt, t_end=t_end, label=label,
                                     n_nodes=disc.n_nodes, repeat=repeat), nodes=disc.n_nodes, factors=S))
            print(_row(out[-1]), flush=True)
        bio()
    return out


def mesh_cases(n, dtype, repeat, methods, layouts):
    import numpy as np

    from paracrine import geometry
    from paracrine import solver

    mesh = geometry.box_mesh([0, 0, 0], [1, 1, 1], n)
    disc = geometry.discretise(mesh)
    c0 = np.asarray(cosine(mesh.points, 0.0, 1.0)[None], dtype)
    t_end = 20 * DT_V5
    exact = c0 * exact_factor(3, 1.0, t_end)
    out = []
    rho = None
    for layout in layouts:
        model = solver.Model(disc, layout=layout)
        if rho is None:
            rho = float(np.max(solver.spectral_bound(model, model.params(D=D_V5))))
        for method, dt in methods(rho):
            label = f"tet mesh {mesh.n_nodes} nodes ({layout})"
            out.append(dict(run_case(model, c0, exact, method=method, dt=dt, t_end=t_end, label=label,
                                     n_nodes=mesh.n_nodes, repeat=repeat), nodes=mesh.n_nodes, factors=1,
                            layout=layout, cells=mesh.n_cells))
            print(_row(out[-1]), flush=True)
    return out, disc, c0


# ---------------------------------------------------------------- NumPy/SciPy baselines

def numpy_grid_step(c, g, h, method, stages):
    """The same schemes as the solver, written as a user would in NumPy (one factor, 3-D)."""
    import numpy as np

    def L(u):
        out = np.zeros_like(u)
        for a in range(3):
            f = g * np.diff(u, axis=a)
            sl_lo = [slice(None)] * 3
            sl_hi = [slice(None)] * 3
            sl_lo[a] = slice(0, -1)
            sl_hi[a] = slice(1, None)
            out[tuple(sl_lo)] += f
            out[tuple(sl_hi)] -= f
        return out

    if method == "adi":
        from scipy.linalg import solve_banded

        z = h * L(c)
        for a in range(3):
            n = c.shape[a]
            ab = np.zeros((3, n))
            ab[0, 1:] = ab[2, :-1] = -0.5 * h * g
            ab[1] = 1.0 - ab[0] - ab[2]  # 1 + h/2 (g_lo + g_hi), zero-flux ends
            moved = np.moveaxis(z, a, 0)
            z = np.moveaxis(solve_banded((1, 1), ab, moved.reshape(n, -1)).reshape(moved.shape), 0, a)
        return c + z
    return _numpy_step(c, L, h, method, stages, np)


def _numpy_step(c, L, h, method, stages, np):
    from paracrine import solver

    if method == "euler":
        return c + h * L(c)
    if method == "rkl2":
        rows, mut1 = solver.rkl2_coefficients(stages)
        L0 = h * L(c)
        y1, y2 = c + mut1 * L0, c
        for mu, nu, mut, gt in rows:
            y1, y2 = mu * y1 + nu * y2 + (1 - mu - nu) * c + mut * h * L(y1) + gt * L0, y1
        return y1
    raise ValueError(method)


def _baseline(kind, case, step):
    """Time one hand-written step and compare with the JAX step of the same case."""
    _, t = timeit(step, repeat=3)
    jax_step = case["run_s"] / case["steps"]
    row = {"case": case["case"], "method": case["method"], "numpy_s_per_step": t, "jax_s_per_step": jax_step,
           "speedup": t / jax_step}
    print(f"  {kind} {case['case']:<28} {case['method']:<6} {1e3 * t:9.2f} ms/step   jax speed-up "
          f"{row['speedup']:.1f}x", flush=True)
    return row


def numpy_baselines(grid_n, mesh_disc, dtype, cases):
    import numpy as np
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    out = []
    hx = 1.0 / grid_n
    c = np.random.default_rng(0).uniform(size=(grid_n,) * 3).astype(dtype)
    g = D_V5 / hx ** 2
    for case in cases:
        if not case["case"].startswith("V5") or case["factors"] != 1 or case["method"] in ("cn", "biofvm"):
            continue
        decay = np.exp(-K_V5 * case["dt_s"] / 2)

        def step():
            return numpy_grid_step(c * decay, g, case["dt_s"], case["method"], case["stages"]) * decay

        out.append(_baseline("numpy", case, step))
    # mesh: SciPy CSR with the same lumped operator; CN with SciPy's CG
    rows, cols, vals = mesh_disc.stiffness([D_V5])
    N = mesh_disc.n_nodes
    K = sp.csr_matrix((vals, (rows, cols)), shape=(N, N))
    minv = 1.0 / mesh_disc.mass
    u0 = np.random.default_rng(0).uniform(size=N)
    for case in cases:
        if not case["case"].startswith("tet") or case.get("layout") != "csr":   # the default layout
            continue
        h = case["dt_s"]
        decay = np.exp(-K_V5 * h / 2)
        if case["method"] == "cn":
            A = (sp.diags(mesh_disc.mass) + 0.5 * h * K).tocsr()
            diag = A.diagonal()
            pre = spla.LinearOperator((N, N), matvec=lambda x: x / diag)

            def step():
                u = u0 * decay
                d, _ = spla.cg(A, -h * (K @ u), rtol=1e-5 if dtype == "float32" else 1e-10, M=pre)
                return (u + d) * decay
        else:
            def step():
                return _numpy_step(u0 * decay, lambda x: -minv * (K @ x), h, case["method"], case["stages"], np) * decay

        out.append(_baseline("scipy", case, step))
    return out


# ---------------------------------------------------------------- bandwidth

def bandwidth(n, repeat, passes=10):
    """Streaming bandwidth at n^3 float32: an elementwise update (read + write, 8 B/voxel) against one
    7-point pass (the floor is the same 8 B/voxel), each repeated `passes` times inside one program."""
    import jax
    import jax.numpy as jnp

    from paracrine import geometry
    from paracrine import solver

    disc = geometry.discretise(geometry.box_grid([0, 0, 0], [1, 1, 1], n))
    space = solver.Model(disc).space
    x = jnp.ones((1, n, n, n), jnp.float32)
    g = space.conductances(jnp.full((1, 1), 1e-3, jnp.float32))
    loop = lambda body: jax.jit(lambda u: jax.lax.fori_loop(0, passes, lambda i, v: body(v), u))  # noqa: E731
    copy = loop(lambda u: 0.999 * u + 0.001)
    stencil = loop(lambda u: u + 0.1 * space.apply(u, g))
    _, t_copy = timeit(lambda: copy(x).block_until_ready(), repeat=repeat)
    _, t_pass = timeit(lambda: stencil(x).block_until_ready(), repeat=repeat)
    nbytes = 8.0 * n ** 3 * passes
    res = {"n": n, "passes": passes, "copy_GBps": nbytes / t_copy / 1e9, "stencil_GBps": nbytes / t_pass / 1e9,
           "stencil_fraction_of_copy": t_copy / t_pass, "stencil_ms_per_pass": 1e3 * t_pass / passes}
    print(f"  bandwidth {n}^3 float32: copy {res['copy_GBps']:.1f} GB/s, 7-point pass {res['stencil_GBps']:.1f} GB/s "
          f"({100 * res['stencil_fraction_of_copy']:.0f} % of copy)", flush=True)
    return res


def _row(r):
    return (f"  {r['case']:<36} {r['method']:<6} s={r['stages']:<3} dt={r['dt_s']:<8.4g} compile {r['compile_s']:6.2f} s  "
            f"{r['ms_per_0.01min']:9.2f} ms/0.01min  {r['ns_per_node_factor_step']:7.2f} ns/node/step  "
            f"err {r['rel_error_vs_V1']:.2e}"
            + (f"  (per step after the first: {r['steady_ms_per_0.01min']:.2f} ms/0.01min)"
               if r.get("steady_ms_per_0.01min") is not None else ""))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (what the tests run)")
    ap.add_argument("--threads", type=int, default=None, help="pin to this many CPU cores")
    ap.add_argument("--precision", choices=["single", "double"], default="single")
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON record (default benchmarks/results)")
    ap.add_argument("--skip-numpy", action="store_true")
    ap.add_argument("--only", choices=["grid", "mesh"], default=None, help="run one family of cases")
    ap.add_argument("--biofvm", type=Path, default=None, metavar="PATH",
                    help="BioFVM's V5 driver binary: also time BioFVM on the V5 grid, alternating with the JAX runs")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc malloc keeps freed memory for reuse (no fresh pages per call; see common.py)")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    kept = keep_freed_memory() if args.keep_freed_memory else False
    if args.keep_freed_memory and not kept:
        ap.error("--keep-freed-memory: this C library has no mallopt (glibc only)")
    import jax

    if args.precision == "double":
        jax.config.update("jax_enable_x64", True)
    dtype = "float64" if args.precision == "double" else "float32"
    grid_n, mesh_n, bw_n, repeat = (20, 12, 64, 2) if args.quick else (100, 58, 256, 3)
    factors = (1, 2) if args.quick else (1, 10)

    def grid_methods(rho):
        # dt = 0.01 min as BioFVM, then the largest steps near V5's error goal of 3e-3
        # (t_end = 20 dt: steps of 6 s and 4 s cut it into 2 and 3 equal steps)
        # Douglas ADI from BioFVM's dt to one step for the whole 0.2 min
        return [("euler", 0.95 * 2 / rho), ("rkl2", DT_V5), ("cn", DT_V5), ("rkl2", 20 * DT_V5 / 3),
                ("rkl2", 10 * DT_V5), ("cn", 20 * DT_V5 / 3), ("cn", 10 * DT_V5),
                ("adi", DT_V5), ("adi", 5 * DT_V5), ("adi", 10 * DT_V5), ("adi", 20 * DT_V5)]

    def mesh_methods(rho):
        return [("euler", 0.95 * 2 / rho), ("rkl2", DT_V5), ("cn", DT_V5)]

    print(f"paracrine forward benchmark ({'quick' if args.quick else 'full'}, {dtype})", flush=True)
    env = environment()
    print(f"  {env['platform']} {env['device']}, {env['cpu_threads']} CPU threads, jax {env['jax']}", flush=True)
    notes = []
    if kept:
        notes.append("--keep-freed-memory: glibc malloc kept freed memory in the heap (mallopt: no mmap, no "
                     "trim), so each call reuses the last call's pages; without it every call's large buffers "
                     "(40 MB per field at 10 factors) are fresh pages, faulted in on first touch")
    biofvm = None
    if args.only == "mesh":
        pass
    elif args.biofvm is None:
        notes.append("BioFVM rows skipped: pass --biofvm PATH (BioFVM's V5 driver) to time it alongside")
    elif abs(1.0 / grid_n - BIOFVM_DX_MM) > 1e-12:
        notes.append(f"BioFVM rows skipped: its V5 driver has 10 um voxels, this run's grid {grid_n}^3 has "
                     f"{1e3 / grid_n:g} um (the full size, 100^3, matches)")
    else:
        biofvm = args.biofvm.resolve()
        if not os.access(biofvm, os.X_OK):
            ap.error(f"--biofvm {args.biofvm}: not an executable file")
    for note in notes:
        print(f"  note: {note}", flush=True)
    grid = [] if args.only == "mesh" else grid_cases(grid_n, factors, dtype, repeat, grid_methods, biofvm)
    comparison = biofvm_comparison(grid) if biofvm else []
    mesh, mesh_disc, _ = ([], None, None) if args.only == "grid" else \
        mesh_cases(mesh_n, dtype, repeat, mesh_methods, ("padded", "csr"))
    base = [] if args.skip_numpy or args.only else numpy_baselines(grid_n, mesh_disc, dtype, grid + mesh)
    bw = bandwidth(bw_n, repeat)
    record = {"benchmark": "forward", "quick": args.quick, "precision": dtype, "environment": env,
              "sizes": {"grid": [grid_n] * 3, "mesh_nodes": mesh_disc and mesh_disc.n_nodes,
                        "mesh_cells": mesh_disc and mesh_disc.mesh.n_cells,
                        "factors": list(factors), "bandwidth_grid": [bw_n] * 3},
              "results": grid + mesh, "baselines": base, "bandwidth": bw,
              "biofvm_comparison": comparison, "notes": notes,
              "keep_freed_memory": kept}
    path = write_record("forward", record, args.out)
    print(f"wrote {path}")
    return record


if __name__ == "__main__":
    main()
