"""Validation case: Mac Gabhann, Ji & Popel 2006, PLoS Comput Biol 2:e127, "Computational model
of vascular endothelial growth factor spatial distribution in muscle and pro-angiogenic cell therapy".

Published result (abstract): "Significant VEGF gradients (up to 12% change in VEGF concentration
over 10 um) were predicted in resting skeletal muscle with uniform VEGF secretion, due to
non-uniform capillary distribution. These relative VEGF gradients were not sensitive to
extracellular matrix composition, or to the overall VEGF expression level, but were dependent on
VEGF receptor density." (The paper also simulates VEGF-overexpressing cell therapy: below.)

Set-up (2-D cross-section of rat EDL muscle, steady state, `solver.steady_state`):
  - fibres: discs of diameter 40 um (estimate, typical of rat EDL) in hexagonal packing, centre
    spacing 46 um (estimate; leaves 6 um between neighbouring fibres), masked out of the tissue:
    fibres are impermeable, the interstitium between them is the domain. Box: 5 x 6 lattice cells
    (230 x 239 um, 30 fibres' worth of area), zero-flux outer boundary.
  - capillaries: discs of radius 2.5 um (estimate) centred on the fibre corners (the triangular
    interstices of the packing, two per fibre), region "capillary"; the rest is "interstitium".
    Non-uniform placement: a fixed-seed random subset of 45 of the 54 corners in the box, i.e. a
    capillary-to-fibre ratio of 1.5 (estimate: a typical literature value for rat EDL).
  - secretion: uniform per unit fibre surface, i.e. density 1 on the interstitial voxels next to
    a fibre and 0 elsewhere (`FieldSource.from_density`): VEGF is secreted by the muscle fibres,
    so it enters the interstitium at their surface. Its rate (1 per unit time, arbitrary) only
    scales the field: the model is linear.
  - receptor uptake: first order in the capillary voxels (region uptake). Surface rate constant
    k_s = sum over receptors of kon x receptors per um^2: kon VEGFR1 3e7 /M/s, VEGFR2 1e7 /M/s
    (BMC Syst Biol 2011, 5:170, Table 2, the Popel-lab values in the project's parameter table),
    1e4 receptors of each kind per endothelial cell (the low end of the 1e4-6.8e4 VEGFR1 and
    1e4-1.9e4 VEGFR2 of Stefanini et al. 2008, BMC Syst Biol 2:77) over an endothelial cell
    surface of 1000 um^2 (an estimate; measured ex vivo in mouse muscle: 2,000-3,700 VEGFR1 and
    1,300-2,000 VEGFR2 per cell, Imoukhuede & Popel 2012, PLoS ONE 7:e44791, which would give
    about a quarter of this uptake: see the receptor-density rows below), with
    1 /M/s = 1e15 / 6.022e23 um^3/s per molecule: k_s = 0.66 um/s. Volumetric
    rate in the capillary voxels: k_s x capillary perimeter / capillary area, with the true
    perimeter 2 pi r of each capillary and the voxel-counted area (so that each capillary takes
    up k_s 2 pi r c per unit depth whatever h is): 0.53-0.59 /s (2 / r = 0.8 /um).
  - D = 1.04e-6 cm^2/s = 1.04e-4 mm^2/s (Mac Gabhann, Ji & Popel 2006; the project's VEGF165
    preset). Units inside: mm and s.
  - relative gradient: |grad c| / c x 10 um in percent, by central differences on interstitial
    voxels whose four neighbours are interstitial too; the maximum and the 95th percentile.

What differs from the published model: theirs has explicit VEGF-receptor binding, unbinding and
internalisation on the capillary surfaces (VEGFR1, VEGFR2, neuropilin-1 and their coupling), two
isoforms (VEGF120 and VEGF164) with different ECM binding, and ECM and basement-membrane binding
sites. Here: one isoform, first-order uptake in the capillary voxels (receptor binding taken as
the rate-limiting capture step: free receptors neither saturated nor depleted), the fibres as
circles rather than measured outlines, and ECM binding left out. At steady state with no
degradation of the bound form, binding does not change the free field: the bound field's
equation kon c (B - b) = koff b removes the exchange term from the free field's equation, which
is then the one without binding. Checked with this solver (full run, h = 2 um, `simulate` from
the binding-free steady field with b at equilibrium, VEGF165 HSPG kon, koff and sites from the
presets, Crank-Nicolson): the free field moves by at most 8.7e-4 (dt = 0.2 s) and 2.2e-4
(dt = 0.1 s) of its maximum in 600 s, falling as dt^2: the splitting error of the time
stepper (with binding on, uptake is integrated with the binding reaction, split from
diffusion: the drift is 2.2 % at dt = 1 s and 125 % at dt = 10 s, where dt x uptake = 6; see
examples/validation/README.md), not a change of the steady state.

Results (float64; relative gradient in % per 10 um). Full: h = 0.5 um, 460 x 478 voxels, grid
check at h/2 = 0.25 um; about 2 min on 2 cores. Quick (--quick, the test): h = 1 um; about 7 s.

                            full (h = 0.5 um)     quick (h = 1 um)
                            max       p95         max       p95
  receptors x0.1            1.72      1.02        1.69      1.08
  receptors x1             12.97      7.92       12.77      8.24
  receptors x10            78.83     47.74       70.57     46.98
  receptors x1, h = 0.25   12.66      7.83        (h = 2 um: 14.60, 8.72)

  - published: up to 12 %; here 12.97 % at the baseline receptor density (the receptor numbers
    are estimates, and the maximum grows 6-8-fold per 10-fold of them: 1.7 % at x0.1, 79 % at
    x10, where the maximum, at the capillary edge, converges slowly with h: 70.6, 78.8, 84.0
    at h = 1, 0.5, 0.25 um).
  - secretion x10: the relative gradient changes by 4e-10 at most (CG tolerance; linear model).
  - grid: the maximum at h = 0.5 and 0.25 um differs by 2.5 %, the 95th percentile by 1.1 %.
  - the field is positive; its minimum is 0.49 of its maximum.

Cell therapy (the paper's pro-angiogenic scenario, its set-up here a choice: the paper's was not
available): the 3 fibres whose centres lie within 50 um of the box centre secrete 10-fold per unit
surface, as fibres that transplanted VEGF-overexpressing myoblasts fused into. Full: max 24.86,
p95 13.78 % per 10 um; mean interstitial VEGF x1.85, peak x2.48. Quick: 24.41, 13.98.

Usage: python mac_gabhann_2006.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np

UM = 1e-3                   # mm per um
D_VEGF = 1.04e-4            # mm^2/s, Mac Gabhann, Ji & Popel 2006
PER_MOLAR_S_UM3 = 1e15 / 6.02214076e23   # 1 /M/s as um^3/s per molecule (1 L = 1e15 um^3)

FIBRE_DIAMETER = 40.0       # um, estimate (rat EDL)
FIBRE_SPACING = 46.0        # um, centre to centre, hexagonal packing; estimate
CAPILLARY_RADIUS = 2.5      # um, estimate
CF_RATIO = 1.5              # capillaries per fibre, estimate (rat EDL)
KON_R1, KON_R2 = 3e7, 1e7   # /M/s, VEGFR1 and VEGFR2 (BMC Syst Biol 2011, 5:170, Table 2)
RECEPTORS_R1, RECEPTORS_R2 = 1e4, 1e4   # per endothelial cell, low end of Stefanini et al. 2008
EC_AREA = 1000.0            # um^2 of surface per endothelial cell, estimate
N_COLS, N_ROWS = 5, 6       # lattice cells across and up (rows even: the packing fits the box)
SEED = 2006                 # which corners hold a capillary
SECRETION = 1.0             # amount per unit time (per unit depth), arbitrary: the model is linear
H_FULL, H_QUICK = 0.5, 1.0  # um
RECEPTOR_SCALES = (0.1, 1.0, 10.0)
THERAPY_FOLD = 10.0         # VEGF-overexpressing fibres (fused transplanted myoblasts) secrete 10x
THERAPY_RADIUS = 50.0       # um: the fibres whose centres lie this close to the box centre
#: the full-size (h = 0.5 um) baseline results stated in the docstring, % per 10 um
FULL_SIZE_MAX, FULL_SIZE_P95 = 12.97, 7.92


def geometry_setup(h_um, *, cols=N_COLS, rows=N_ROWS, seed=SEED):
    from paracrine import geometry

    s, R, rc = FIBRE_SPACING, FIBRE_DIAMETER / 2, CAPILLARY_RADIUS
    rowh = s * math.sqrt(3) / 2
    W, H = cols * s, rows * rowh
    centres, corners = [], []
    for j in range(-1, rows + 1):
        y = (j + 0.5) * rowh
        xs = (np.arange(-1, cols + 2) + 0.5 + 0.5 * (j % 2)) * s
        centres += [(x, y) for x in xs]
        mids = (xs[:-1] + xs[1:]) / 2
        corners += [(x, y + dy) for x in mids for dy in (rowh / 3, -rowh / 3)]
    centres, corners = np.array(centres), np.array(corners)
    inside = np.all((corners > rc + 1.0) & (corners < np.array([W, H]) - rc - 1.0), axis=1)
    corners = np.unique(np.round(corners[inside], 6), axis=0)
    n_cap = int(round(CF_RATIO * cols * rows))
    rng = np.random.default_rng(seed)
    cap = corners[np.sort(rng.choice(len(corners), size=min(n_cap, len(corners)), replace=False))]

    def dist_min(x, pts):
        d = np.full(x.shape[:-1], np.inf)
        for p in pts:
            d = np.minimum(d, np.hypot(x[..., 0] - p[0], x[..., 1] - p[1]))
        return d

    cen_mm, cap_mm = centres * UM, cap * UM
    grid = geometry.box_grid([0.0, 0.0], [W * UM, H * UM], [int(round(W / h_um)), int(round(H / h_um))],
                             regions={"interstitium": True,
                                      "capillary": lambda x: dist_min(x, cap_mm) < rc * UM},
                             mask=lambda x: dist_min(x, cen_mm) > R * UM)
    return geometry.discretise(grid), dict(width_um=W, height_um=H, n_fibres_cells=cols * rows,
                                           n_capillaries=len(cap), n_corner_sites=len(corners),
                                           capillaries_um=cap, fibres_um=centres)


def surface_rate_um_s(scale=1.0):
    """kon [/M/s] x receptors per um^2 summed over VEGFR1 and VEGFR2: the first-order capture rate
    per unit capillary surface, um/s (the receptor density times `scale`)."""
    per_um2 = lambda n: scale * n / EC_AREA  # noqa: E731
    return PER_MOLAR_S_UM3 * (KON_R1 * per_um2(RECEPTORS_R1) + KON_R2 * per_um2(RECEPTORS_R2))


def relative_gradient(c, region_index, h_um, inter):
    """|grad c| / c x 10 um in percent on the voxels of region `inter` whose 4 neighbours are too."""
    ok = region_index == inter
    core = ok[1:-1, 1:-1] & ok[2:, 1:-1] & ok[:-2, 1:-1] & ok[1:-1, 2:] & ok[1:-1, :-2]
    gx = (c[2:, 1:-1] - c[:-2, 1:-1]) / (2 * h_um)
    gy = (c[1:-1, 2:] - c[1:-1, :-2]) / (2 * h_um)
    return (np.hypot(gx, gy)[core] / c[1:-1, 1:-1][core]) * 10.0 * 100.0


def solve(disc, info, *, h_um, receptor_scale=1.0, secretion=SECRETION, boosted=None):
    """The steady field (grid shape) and its relative gradient, for receptors x receptor_scale.
    boosted: indices into info["fibres_um"] of fibres that secrete THERAPY_FOLD times as much per
    unit surface (the total rate grows accordingly)."""
    from paracrine import solver

    ri = disc.region_index
    inter, capi = disc.regions.index("interstitium"), disc.regions.index("capillary")
    fibre = ri < 0
    near = np.zeros_like(fibre)   # a fibre voxel among the 4 neighbours
    near[1:] |= fibre[:-1]
    near[:-1] |= fibre[1:]
    near[:, 1:] |= fibre[:, :-1]
    near[:, :-1] |= fibre[:, 1:]
    density = (near & (ri == inter)).astype(float)
    if boosted is not None:
        xy = np.asarray(disc.coordinates).reshape(ri.shape + (2,)) / UM
        centres = info["fibres_um"]
        nearest = np.argmin([np.hypot(xy[..., 0] - x, xy[..., 1] - y) for x, y in centres], axis=0)
        scaled = density * np.where(np.isin(nearest, boosted), THERAPY_FOLD, 1.0)
        secretion = secretion * scaled.sum() / density.sum()      # equal voxel volumes
        density = scaled
    src = solver.FieldSource.from_density(disc, density, name="fibres")
    model = solver.Model(disc, sources=[src])
    # volumetric rate in the capillary voxels: surface rate x true perimeter / voxel area of the capillaries
    area = (ri == capi).sum() * h_um ** 2
    k_vol = surface_rate_um_s(receptor_scale) * info["n_capillaries"] * 2 * math.pi * CAPILLARY_RADIUS / area
    uptake = np.zeros(len(disc.regions))
    uptake[capi] = k_vol
    params = model.params(D=D_VEGF, uptake=uptake, sources={"fibres": solver.Constant(rate=secretion)})
    ss = solver.steady_state(model, params, maxiter=50000)
    c = np.asarray(ss.c)[0]
    return dict(c=c, converged=bool(ss.converged) and bool(np.isfinite(c).all()), iterations=int(ss.iterations),
                k_vol=k_vol,
                g=relative_gradient(c, ri, h_um, inter), model=model, params=params)


def _summary(g):
    return {"max": float(g.max()), "p95": float(np.percentile(g, 95))}


def ecm_binding_check(h_um=2.0, dts=(0.2, 0.1), t_end=600.0):
    """The binding-free steady field with the bound field at equilibrium, run forward with VEGF165
    ECM (HSPG) binding and no bound degradation: the largest change of the free field over t_end,
    relative to its maximum, per time step (Crank-Nicolson). 0 in exact arithmetic and time."""
    from paracrine import solver

    disc, info = geometry_setup(h_um)
    ref = solve(disc, info, h_um=h_um)
    vegf = solver.presets.preset("VEGF165")
    tissue = disc.region_index >= 0
    c = ref["c"]
    b = np.where(tissue, vegf.capacity * vegf.kon * c / (vegf.koff + vegf.kon * c), 0.0)
    model = ref["model"]
    params = model.params(D=D_VEGF, uptake=ref["params"].uptake,
                          binding={"kon": vegf.kon, "koff": vegf.koff, "capacity": vegf.capacity, "kdeg": 0.0},
                          sources={"fibres": solver.Constant(rate=SECRETION)})
    out = {}
    for dt in dts:
        sol = solver.simulate(model, params, t_end=t_end, dt=dt, save_at=[t_end], method="cn", c0=c[None], b0=b[None])
        if not sol.ok:
            raise RuntimeError(f"ECM binding check, dt = {dt} s: {sol.message}")
        out[dt] = float(np.abs(np.asarray(sol.final)[0] - c)[tissue].max() / c[tissue].max())
    return {"h_um": h_um, "t_end_s": t_end, "drift_by_dt_s": out}


def compute(quick: bool = False) -> dict:
    """The relative VEGF gradients of the set-up in the module docstring; quick: h = 1 um (and the
    grid check between 2 um and 1 um), else h = 0.5 um (grid check 0.5 um against 0.25 um) plus
    the ECM binding check."""
    t0 = time.perf_counter()
    h = H_QUICK if quick else H_FULL
    disc, info = geometry_setup(h)
    runs, fields = {}, {}
    for scale in RECEPTOR_SCALES:
        r = solve(disc, info, h_um=h, receptor_scale=scale)
        if not r["converged"]:
            raise RuntimeError(f"steady_state did not converge (h = {h} um, receptors x{scale})")
        runs[scale] = r
    base = runs[1.0]
    tissue = disc.region_index >= 0
    c = base["c"]
    loud = solve(disc, info, h_um=h, secretion=10 * SECRETION)
    secretion_change = float(np.max(np.abs(loud["g"] - base["g"]) / base["g"]))
    # pro-angiogenic cell therapy: the fibres near the box centre overexpress VEGF THERAPY_FOLD-fold
    centre = np.array([info["width_um"], info["height_um"]]) / 2
    boosted = np.flatnonzero(np.hypot(*(info["fibres_um"] - centre).T) < THERAPY_RADIUS)
    ther = solve(disc, info, h_um=h, boosted=boosted)
    inter = disc.region_index == disc.regions.index("interstitium")
    therapy = {"boosted_fibres": int(len(boosted)), "fold": THERAPY_FOLD, **_summary(ther["g"]),
               "mean_concentration_x": float(ther["c"][inter].mean() / c[inter].mean()),
               "peak_concentration_x": float(ther["c"][inter].max() / c[inter].max())}
    # grid check: the base case at a second voxel size
    h2 = 2 * h if quick else h / 2
    disc2, info2 = geometry_setup(h2)
    r2 = solve(disc2, info2, h_um=h2)
    if not r2["converged"]:
        raise RuntimeError(f"steady_state did not converge (h = {h2} um)")
    grid = {h: _summary(base["g"]), h2: _summary(r2["g"])}
    out = {
        "paper": "Mac Gabhann, Ji & Popel 2006, PLoS Comput Biol 2:e127",
        "published_max_percent_per_10um": 12.0,
        "quick": quick,
        "h_um": h,
        "relative_gradient_percent_per_10um": _summary(base["g"]),
        "by_receptor_density": {s: _summary(r["g"]) for s, r in runs.items()},
        "cell_therapy": therapy,
        "secretion_x10_max_relative_change": secretion_change,
        "grid": grid,
        "grid_max_relative_difference": abs(grid[h2]["max"] - grid[h]["max"]) / grid[h]["max"],
        "positive": bool((c[tissue] > 0).all()),
        "c_min_over_max": float(c[tissue].min() / c[tissue].max()),
        "cg_iterations": base["iterations"],
        "parameters": {
            "D_mm2_s": D_VEGF, "fibre_diameter_um": FIBRE_DIAMETER, "fibre_spacing_um": FIBRE_SPACING,
            "capillary_radius_um": CAPILLARY_RADIUS, "capillary_to_fibre": CF_RATIO,
            "n_capillaries": info["n_capillaries"], "n_corner_sites": info["n_corner_sites"],
            "box_um": [info["width_um"], info["height_um"]], "seed": SEED,
            "kon_VEGFR1_per_M_s": KON_R1, "kon_VEGFR2_per_M_s": KON_R2,
            "VEGFR1_per_EC": RECEPTORS_R1, "VEGFR2_per_EC": RECEPTORS_R2, "EC_area_um2": EC_AREA,
            "surface_rate_um_s": surface_rate_um_s(), "capillary_uptake_per_s": base["k_vol"],
            "secretion": "uniform per fibre surface (interstitial voxels next to a fibre), rate 1 (arbitrary)",
        },
    }
    if not quick:
        out["ecm_binding"] = ecm_binding_check()
    out["seconds"] = time.perf_counter() - t0
    return out


def _table(res) -> str:
    g = res["relative_gradient_percent_per_10um"]
    rows = [f"Mac Gabhann, Ji & Popel 2006: relative VEGF gradient, % per 10 um (published: up to "
            f"{res['published_max_percent_per_10um']:g})",
            f"  h = {res['h_um']:g} um: max {g['max']:.2f}, 95th percentile {g['p95']:.2f}",
            "  receptor density    max     p95"]
    rows += [f"  x{s:<17g} {v['max']:6.2f}  {v['p95']:6.2f}" for s, v in res["by_receptor_density"].items()]
    t = res["cell_therapy"]
    rows += [f"  cell therapy ({t['boosted_fibres']} fibres x{t['fold']:g}): max {t['max']:.2f}, p95 {t['p95']:.2f}; "
             f"mean VEGF x{t['mean_concentration_x']:.2f}, peak x{t['peak_concentration_x']:.2f}"]
    change = res["secretion_x10_max_relative_change"]
    rows += [f"  secretion x10: largest relative change of the gradient {change:.1e}",
             "  grid: " + ", ".join(f"h = {h:g} um max {v['max']:.2f} p95 {v['p95']:.2f}"
                                    for h, v in res["grid"].items())
             + f" (max differs by {100 * res['grid_max_relative_difference']:.1f} %)",
             f"  field positive: {res['positive']} (min / max {res['c_min_over_max']:.3f})"]
    if "ecm_binding" in res:
        e = res["ecm_binding"]
        rows.append("  ECM binding at equilibrium, free-field drift in %g s: " % e["t_end_s"]
                    + ", ".join(f"dt = {dt:g} s {d:.1e}" for dt, d in e["drift_by_dt_s"].items()))
    rows.append(f"  {res['seconds']:.1f} s")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="h = 1 um instead of 0.5 um (the test's size)")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON to PATH")
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)   # this program's choice: reference numbers in float64
    res = compute(quick=args.quick)
    print(_table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
