"""A small demonstration of the core: two factors from one injection site in a slab of
myocardium with remote, border-zone and core regions (until the infarct scenario lands)."""

from __future__ import annotations

import math
import time

import numpy as np

HOUR = 3600.0


def build(n: int = 20):
    import geometry
    import solver

    # A 4 x 4 x 1.5 mm slab: infarct core x < 1.5 mm, border zone 1.5-2.5 mm, remote beyond.
    mesh = geometry.box_mesh([0, 0, 0], [4.0, 4.0, 1.5], [n, n, max(2, int(n * 1.5 / 4))],
                             regions={"remote": True, "border": lambda x: x[:, 0] < 2.5,
                                      "core": lambda x: x[:, 0] < 1.5})
    disc = geometry.discretise(mesh)
    site = [[2.0, 2.0, 0.75]]
    model = solver.Model(disc, factors=["VEGF", "HGF"], sources=[solver.point_source(disc, site, name="cells")])
    # Literature values (parameters reference): D 1.04e-6 / 0.85e-6 cm^2/s; half-lives 33.7 / 26.5 min;
    # secretion 1203 / 12280 pg per 1e6 cells per ~48 h; 1.5e5 retained cells lost with t1/2 = 3.6 d.
    cells = 1.5e5
    per_cell = np.array([1203.0, 12280.0]) / 1e6 / (48 * HOUR)
    region = {r: k for k, r in enumerate(model.regions)}
    uptake = np.zeros((2, len(model.regions)))
    uptake[:, region["border"]] = 1e-3  # estimate: a prior to be fitted
    params = model.params(D=[1.04e-4, 0.85e-4], decay=[math.log(2) / (33.7 * 60), math.log(2) / (26.5 * 60)],
                          uptake=uptake,
                          sources=[solver.Exponential(rate=cells * per_cell, k=math.log(2) / (3.6 * 24 * HOUR))])
    return disc, model, params


def main(*, hours: float = 24.0, dt: float = 60.0, method: str = "rkl2", n: int = 20) -> dict:
    import jax

    import solver

    disc, model, params = build(n)
    t0 = time.perf_counter()
    save = np.linspace(0, hours, 7)[1:] * HOUR
    sol = solver.simulate(model, params, t_end=hours * HOUR, dt=dt, save_at=save, method=method,
                          observe=solver.observe.region_means(model), budget=True)
    jax.block_until_ready(sol)
    wall = time.perf_counter() - t0
    means = np.asarray(sol.ys)  # (T, S, R)
    print(f"paracrine demo: {disc.mesh!r}\n  factors {model.factors}, method {method}, dt {dt:g} s, "
          f"{int(sol.stats['steps'])} steps in {wall:.2f} s (compile included), status: {sol.message}")
    print("\n  mean concentration (pg/mL) by region")
    header = "  time (h) " + "".join(f"{f + ' ' + r:>16}" for f in model.factors for r in model.regions)
    print(header)
    for t, row in zip(np.asarray(sol.ts) / HOUR, means):
        print(f"  {t:8.1f} " + "".join(f"{1e3 * v:16.4g}" for v in row.reshape(-1)))
    b = {k: np.asarray(v) for k, v in sol.budget.items()}
    left = np.asarray(model.total(sol.final))
    print("\n  mass budget (pg): secreted = decayed + taken up + left")
    for s, f in enumerate(model.factors):
        print(f"  {f:>6}: {b['secreted'][s]:.4g} = {b['decayed'][s]:.4g} + {b['taken_up'][s]:.4g} + {left[s]:.4g}"
              f"   (closes to {abs(b['secreted'][s] - b['decayed'][s] - b['taken_up'][s] - left[s]) / b['secreted'][s]:.1e})")
    return {"means": means, "status": sol.message, "wall_s": wall}
