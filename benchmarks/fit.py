"""Calibration speed: our Levenberg-Marquardt (forward-mode Jacobian through the PDE) against
scipy.optimize.least_squares with a finite-difference Jacobian on the same model and data, and
the cost of a gradient: time(value and gradient) / time(value).

    python benchmarks/fit.py [--quick] [--threads N] [--out DIR]

Problem: a twin experiment on a rat LV with an LAD infarct, 1e6 MSCs at 3 border-zone sites;
noise-free VEGF tissue content (border zone and whole heart) at 5 times over 4 days; three rates
free (VEGF secretion, border-zone uptake, slow cell half-life), started 2x off. Float64.
Forward-solve equivalents = wall time / wall time of one forward solve (compiled, after warm-up).
Goals: 3 rates to 1 % in <= 30 forward-solve equivalents; gradient ratio <= 2.2 (also measured by stepper and adjoint:
"gradient_modes", with each compiled program's temporary memory, XLA's memory analysis).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, pin_threads, timeit, write_record  # noqa: E402

SCENARIO = """
[geometry]
species = "rat"
mesh_size = "{mesh}"
border_width = "0.5 mm"
[time]
end = "{days} d"
dt = "600 s"
[factors.VEGF]
preset = "VEGF165"
uptake = {{ border = "1e-3 1/s" }}
[cells]
secretion = {{ VEGF = "2.5e-8 pg/cell/s" }}
slow_half_life = "3.6 d"
[[injection]]
dose = "1e6 cells"
sites = 3
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="coarse mesh, 1 day (seconds)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    import equinox as eqx
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from scipy.optimize import least_squares

    from paracrine import build as B, calibrate, data as pdata, fitreport, scenario as sc

    mesh, days, times = ("1 mm", 1, [2, 6, 12, 18, 24]) if args.quick else ("0.5 mm", 4, [6, 24, 48, 72, 96])
    rep = 2 if args.quick else 5   # timing repeats (the quick mode only checks that the script works)
    scen = sc.loads(SCENARIO.format(mesh=mesh, days=days), source="benchmark.toml")
    built = B.build(scen)
    names = ["VEGF.secretion", "VEGF.uptake.border", "cells.half_life_slow"]
    free = calibrate.resolve(built, names)
    truth = np.array([float(p.get(built.params)) for p in free])
    header = ["time [h]", "quantity", "factor", "where", "value [pg]", "sd [pg]"]
    keys = [(t, w) for t in times for w in ("border", "tissue")]
    probe = pdata.from_rows(header, [(2, [str(t), "content", "VEGF", w, "1", "1"]) for t, w in keys], scen)
    y = calibrate.predict(built, probe)
    obs = pdata.from_rows(header, [(2, [str(t), "content", "VEGF", w, repr(float(v)), repr(0.05 * float(v))])
                                     for (t, w), v in zip(keys, y)], scen)
    init = {n: float(v) * f for n, v, f in zip(names, truth, (0.5, 2.0, 0.5))}

    prob = calibrate.problem(built, obs, free, initial=init)
    resid = eqx.filter_jit(prob.residual)
    loss = eqx.filter_jit(prob.loss)
    vg = eqx.filter_jit(jax.value_and_grad(prob.loss))
    z = jnp.asarray(prob.z0)
    fwd_first, fwd = timeit(lambda: jax.block_until_ready(resid(z)), repeat=rep)
    _, val = timeit(lambda: jax.block_until_ready(loss(z)), repeat=rep)
    vg_first, grad = timeit(lambda: jax.block_until_ready(vg(z)), repeat=rep)

    # the gradient's cost by stepper and adjoint on the same model, times and observation (the tissue
    # content at the data times), at the same dt: RKL2 with JAX's checkpointed derivative (what the fit's
    # loss above uses), TR-BDF2 with it, and TR-BDF2 with its discrete adjoint
    from paracrine import solver
    from paracrine.solver.space_mesh import MeshSpace

    ts = np.array(times, float) * 3600.0
    content = solver.observe.tissue_amounts(built.model)
    padded = eqx.tree_at(lambda m: m.space, built.model,
                         MeshSpace.from_discretisation(built.disc, layout="padded",
                                                       operator=built.model.space.operator))
    modes = {"rkl2, checkpoint": dict(method=solver.plan(built.model, built.params, dt=600.0)),
             "trbdf2, checkpoint": dict(method="trbdf2"),
             # the backward solves as tight as the forward ones (1e-10): the reference for the others
             "trbdf2, discrete adjoint, adjoint_tol 1e-10": dict(method=solver.TRBDF2(adjoint_tol=1e-10),
                                                                 adjoint="discrete"),
             # the default: backward solves to max(tol, 1e-6)
             "trbdf2, discrete adjoint": dict(method="trbdf2", adjoint="discrete"),
             "trbdf2, discrete adjoint, adjoint_tol 1e-3": dict(method=solver.TRBDF2(adjoint_tol=1e-3),
                                                                adjoint="discrete"),
             "trbdf2, discrete adjoint, padded layout": dict(method="trbdf2", adjoint="discrete", model=padded)}
    if args.quick:   # the quick mode (the tests): the fit's own mode, the tight and the default discrete adjoint
        modes = {k: v for k, v in modes.items() if k in ("rkl2, checkpoint", "trbdf2, discrete adjoint",
                                                         "trbdf2, discrete adjoint, adjoint_tol 1e-10")}
    gradient_modes, tight = {}, None
    for label, kw in modes.items():
        def direct(p, kw=kw):
            kw = dict(kw)
            model = kw.pop("model", built.model)
            return jnp.sum(solver.simulate(model, p, t_end=float(ts[-1]), dt=600.0, save_at=ts,
                                           observe=content, **kw).ys ** 2)
        v_fn, vg_fn = jax.jit(direct), jax.jit(jax.value_and_grad(direct))
        _, tv = timeit(lambda: jax.block_until_ready(v_fn(built.params)), repeat=rep)
        _, tg = timeit(lambda: jax.block_until_ready(vg_fn(built.params)), repeat=rep)
        # the compiled programs' temporary buffers (XLA's memory analysis): the reverse pass's stored steps
        mem = {k: fn.lower(built.params).compile().memory_analysis().temp_size_in_bytes
               for k, fn in (("value", v_fn), ("value_and_grad", vg_fn))}
        entry = {"value_s": tv, "value_and_grad_s": tg, "ratio": tg / tv,
                 "temp_bytes_value": mem["value"], "temp_bytes_value_and_grad": mem["value_and_grad"]}
        # unit-free sensitivities d loss / d log(parameter), one per parameter array
        sens = np.array([float(jnp.sum(gl * pl)) for gl, pl in
                         zip(jax.tree.leaves(vg_fn(built.params)[1]), jax.tree.leaves(built.params))])
        if label == "trbdf2, discrete adjoint, adjoint_tol 1e-10":
            tight = sens
        elif "discrete" in label:
            # against the tight discrete adjoint, relative to the largest sensitivity
            entry["sensitivity_error_vs_tight"] = float(np.max(np.abs(sens - tight)) / np.max(np.abs(tight)))
        gradient_modes[label] = entry
        extra = (f", sensitivities within {entry['sensitivity_error_vs_tight']:.1e} of the tight adjoint's"
                 if "sensitivity_error_vs_tight" in entry else "")
        print(f"{label:44s} value {1e3 * tv:8.1f} ms, value + gradient {1e3 * tg:8.1f} ms: ratio {tg / tv:.2f}, "
              f"temporary memory {mem['value'] / 1e6:.1f} / {mem['value_and_grad'] / 1e6:.1f} MB{extra}")

    res = calibrate.fit(built, obs, names, initial=init)
    ours_err = np.abs(res.values / truth - 1)
    calls = []

    def counted(x):
        calls.append(1)
        return np.asarray(resid(jnp.asarray(x)))

    t0 = time.perf_counter()
    ref = least_squares(counted, np.asarray(prob.z0), jac="2-point", method="trf", x_scale="jac")
    ref_wall = time.perf_counter() - t0
    ref_err = np.abs(np.array([float(p.from_z(v)) for p, v in zip(free, ref.x)]) / truth - 1)
    record = {
        "benchmark": "fit", "quick": args.quick, "environment": environment(), "precision": "double",
        "problem": {"nodes": built.disc.n_nodes, "days": days, "dt_s": 600.0, "data": len(obs), "free": names,
                    "start_factor": [0.5, 2.0, 0.5]},
        "forward_s": fwd, "forward_compile_s": fwd_first - fwd, "value_s": val, "value_and_grad_s": grad,
        "gradient_ratio": grad / val, "value_and_grad_compile_s": vg_first - grad,
        "gradient_modes": gradient_modes,
        "ours": {"wall_s": res.wall_s, "compile_s": res.compile_s, "forward_equivalents": res.wall_s / fwd,
                 "passes": res.n_solves, "jacobian_passes": res.n_jacobians, "iterations": res.iterations,
                 "max_rel_error": float(ours_err.max()), "status": res.status},
        "scipy_trf_fd": {"wall_s": ref_wall, "forward_equivalents": ref_wall / fwd, "passes": len(calls),
                         "max_rel_error": float(ref_err.max()), "status": ref.message},
        "goals": {"forward_equivalents": 30, "max_rel_error": 0.01, "gradient_ratio": 2.2},
    }
    path = write_record("fit", record, args.out)
    o, r = record["ours"], record["scipy_trf_fd"]
    print(f"forward solve {1e3 * fwd:.1f} ms ({built.disc.n_nodes} nodes, {days} d, dt 600 s)")
    print(f"ours (LM, forward-mode Jacobian): {o['wall_s']:.2f} s = {o['forward_equivalents']:.1f} forward solves, "
          f"{o['passes']} passes ({o['jacobian_passes']} with 3 tangents), max error {100 * o['max_rel_error']:.2g} %")
    print(f"scipy least_squares (trf, FD):    {r['wall_s']:.2f} s = {r['forward_equivalents']:.1f} forward solves, "
          f"{r['passes']} passes, max error {100 * r['max_rel_error']:.2g} %")
    print(f"gradient ratio (value + grad) / value: {record['gradient_ratio']:.2f}  -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
