"""A demonstration of the core on the infarct geometry (until scenario files land): a rat left
ventricle with an LAD infarct, 1e6 MSCs injected at 3 border-zone sites, VEGF and HGF for 7 days."""

from __future__ import annotations

import math
import time

import numpy as np

HOUR, DAY = 3600.0, 86400.0
#: Endothelial proliferation from ~31 pg/mL VEGF (Stem Cell Res Ther 2017, doi 10.1186/s13287-017-0488-3)
VEGF_THRESHOLD = 31e-3  # pg/mm^3


def build(mesh_size: float = 0.4):
    import geometry
    import solver
    from solver.presets import preset

    mesh = geometry.lv_ellipsoid("rat", mesh_size=mesh_size, territory="LAD", transmural=1.0)
    disc = geometry.discretise(mesh)
    sites = solver.spread_sites(disc, 3, region="border")
    model = solver.Model(disc, factors=["VEGF", "HGF"], sources=[solver.point_source(disc, sites, name="MSC")])
    vegf, hgf = preset("VEGF165"), preset("HGF")
    # 1e6 cells over 3 sites; 13.6 % retained (Bonios 2011, rat IM); ~45 % of them lost in the first hour,
    # then t1/2 3.6 d (Yasuda 2005); secretion 1203 / 12280 pg per 1e6 cells per ~48 h (Rehman 2004).
    cells = solver.CellSecretion(dose=[1e6 / 3], time=[0.0], retention=[0.136],
                                 secretion=np.array([1203.0, 12280.0]) / 1e6 / (48 * HOUR),
                                 fast_fraction=0.45, k_fast=math.log(2) / (0.25 * HOUR),
                                 k_slow=math.log(2) / (3.6 * DAY))
    uptake = np.zeros((2, len(model.regions)))
    uptake[:, model.regions.index("border")] = 1e-3  # estimate: a prior to be fitted
    params = model.params(D=[vegf.D, hgf.D], decay=[vegf.decay, hgf.decay], uptake=uptake, sources=[cells])
    return disc, model, params


def main(*, days: float = 7.0, dt: float = 60.0, method: str = "rkl2", mesh_size: float = 0.4) -> dict:
    import jax

    import solver

    t0 = time.perf_counter()
    disc, model, params = build(mesh_size)
    t_mesh = time.perf_counter() - t0
    save = np.linspace(0, days * DAY, int(round(days * 8)) + 1)[1:] if days >= 1 else np.array([days * DAY])
    sol = solver.simulate(model, params, t_end=days * DAY, dt=dt, save_at=save, method=method,
                          observe=solver.observe.region_means(model), budget=True)
    jax.block_until_ready(sol)
    wall = time.perf_counter() - t0
    means = np.asarray(sol.ys)  # (T, S, R)
    ts = np.asarray(sol.ts)
    print(f"paracrine demo: rat LV, LAD infarct, {disc.mesh!r}\n  1e6 MSCs at 3 border-zone sites; "
          f"factors {model.factors}; {method}, dt {dt:g} s, {int(sol.stats['steps'])} steps; "
          f"{wall:.1f} s in all ({t_mesh:.1f} s meshing); status: {sol.message}")
    print("\n  mean concentration (pg/mL) by region")
    print("  time (d) " + "".join(f"{f + ' ' + r:>15}" for f in model.factors for r in model.regions))
    every = max(1, len(ts) // 8)
    for t, row in list(zip(ts, means))[every - 1::every]:
        print(f"  {t / DAY:8.2f} " + "".join(f"{1e3 * v:15.4g}" for v in row.reshape(-1)))
    border = model.regions.index("border")
    above = means[:, 0, border] > VEGF_THRESHOLD
    print(f"\n  border-zone mean VEGF above {VEGF_THRESHOLD * 1e3:g} pg/mL at {above.sum()} of {len(ts)} saved times"
          f" (last at day {ts[above][-1] / DAY:.2f})" if above.any() else
          f"\n  border-zone mean VEGF never reaches {VEGF_THRESHOLD * 1e3:g} pg/mL")
    b = {k: np.asarray(v) for k, v in sol.budget.items()}
    left = np.asarray(model.total(sol.final))
    print("\n  mass budget (pg): secreted = decayed + taken up + cleared + left")
    for s, f in enumerate(model.factors):
        out = b["decayed"][s] + b["taken_up"][s] + b["cleared"][s]
        print(f"  {f:>6}: {b['secreted'][s]:.4g} = {b['decayed'][s]:.4g} + {b['taken_up'][s]:.4g} + "
              f"{b['cleared'][s]:.3g} + {left[s]:.4g}   (closes to {abs(b['secreted'][s] - out - left[s]) / b['secreted'][s]:.1e})")
    return {"means": means, "status": sol.message, "wall_s": wall, "regions": model.regions}
