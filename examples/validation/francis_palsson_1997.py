"""Francis & Palsson 1997 (PNAS 94:12258): how far, and how fast, one secreting cell can signal.

Published (abstract): "the domain that a single cell can effectively communicate in is ~250 um in
size" and "the communication within this domain takes place in 10-30 minutes". The set-up is one
cell secreting at a constant rate into a medium where the factor diffuses: a point source in free
space, whose field has an exact Green's function,

    c(r, t) = q / (4 pi D r) * erfc(r / (2 sqrt(D t)))            (no loss)
    c(r, t) = q / (8 pi D r) * [exp(-r/l) erfc(a - sqrt(k t)) + exp(r/l) erfc(a + sqrt(k t))],
              a = r / (2 sqrt(D t)), l = sqrt(D / k)                (first-order loss k)

What is computed here, with the tool's solver (P1 finite elements on a graded octant of free
space, symmetry planes through the source, error-controlled TR-BDF2):

* t50(r): the time at which c(r, t) reaches half of its final value, at r = 250 um from the
  source, for D = 1e-6 cm^2/s (a 15-30 kDa cytokine in water at 37 C; the order of value the
  paper works with) and no loss. The field depends on D only through D t / r^2, so t50 at
  D = 0.5e-6 cm^2/s (tissue-like) is exactly twice it.
* the same with a first-order loss k = 1e-3 /s (uptake by surrounding cells), and the final
  (steady) field against q exp(-r/l) / (4 pi D r).
* the range: the distance at which the final field of one cell falls to a threshold, r* = q /
  (4 pi D c*) without loss (closed form), for the tool's mesenchymal-stromal-cell VEGF secretion
  (at most 0.19 molecules per cell per second: Rehman et al. 2004, Circulation 109:1292, as
  derived in the project's parameter table) against the endothelial-proliferation threshold of
  ~31 pg/mL (Stem Cell Res Ther 2017, doi 10.1186/s13287-017-0488-3), and the secretion rate a
  cell would need to hold 10 pM (a typical cytokine receptor K_D) at 125 um, the radius of a
  250 um domain.

Not taken from the paper: its own parameter table (secretion rates, receptor numbers, cell radius)
was not available to this project; the paper's model also has the secreting cell as a sphere of
finite radius with receptors that take up part of what it secretes (autocrine loss), which lowers
the amount that leaves the cell and so shortens the range, and does not change the time scale.

Run: python examples/validation/francis_palsson_1997.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from scipy.optimize import brentq
from scipy.special import erfc

UM = 1e-3                      # mm
MIN = 60.0                     # s
D_CYTOKINE = 1.0e-4            # mm^2/s = 1e-6 cm^2/s
R_PROBE = 250 * UM             # mm
K_UPTAKE = 1.0e-3              # 1/s
AVOGADRO = 6.02214076e23


def exact(r, t, D, k=0.0, q=1.0):
    """Free-space field of a source q switched on at t = 0 (amount/s), r and t arrays or scalars."""
    r, t = np.asarray(r, float), np.asarray(t, float)
    a = r / (2 * np.sqrt(D * t))
    if k == 0:
        return q / (4 * np.pi * D * r) * erfc(a)
    lam, b = math.sqrt(D / k), np.sqrt(k * t)
    # exp(r/l) erfc(a + b) written as exp(r/l - (a+b)^2) erfcx(a + b) would avoid overflow; at the
    # distances used here (r < 6 l) the plain form is exact to round-off
    return q / (8 * np.pi * D * r) * (np.exp(-r / lam) * erfc(a - b) + np.exp(r / lam) * erfc(a + b))


def final(r, D, k=0.0, q=1.0):
    lam = math.inf if k == 0 else math.sqrt(D / k)
    return q * np.exp(-np.asarray(r) / lam) / (4 * np.pi * D * np.asarray(r))


def t_half_exact(r, D, k=0.0):
    return brentq(lambda t: exact(r, t, D, k) / final(r, D, k) - 0.5, 1e-3, 1e8, xtol=1e-10, rtol=1e-12)


def octant_axis(h0, uniform_to, outer, growth):
    """Node coordinates 0, h0, 2 h0, ... up to `uniform_to`, then cells growing by `growth` to `outer`."""
    ax = list(np.arange(0.0, uniform_to + 0.5 * h0, h0))
    h = h0
    while ax[-1] < outer:
        h *= growth
        ax.append(ax[-1] + h)
    return np.array(ax)


def solve(h0, D=D_CYTOKINE, k=0.0, t_save=None, rtol=1e-4):
    """The field at the nodes exactly R_PROBE from the source, against time, for a source q = 1
    switched on at t = 0 (free space: an octant of 1.6 mm with symmetry planes); with k > 0 also
    the steady field there."""
    from paracrine import geometry, solver

    ax = octant_axis(h0, 0.3, 1.6, 1.15)
    mesh = geometry.tensor_mesh([ax] * 3)
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.0, 0.0, 0.0]])])
    params = model.params(D=D, decay=k, sources=[solver.Constant(rate=1.0 / 8)])  # q = 1 over the octant
    r = np.linalg.norm(mesh.points, axis=1)
    # the nodes at exactly 250 um (along the axes and on lattice points such as (150, 200, 0) um):
    # a directional average of the mesh's anisotropy, with no spread in r to bias the mean
    shell = np.flatnonzero(np.abs(r - R_PROBE) <= 1e-9)
    if shell.size == 0:
        raise ValueError(f"h0 = {h0} mm puts no node at r = {R_PROBE} mm; use a divisor of it")
    idx = np.asarray(shell)

    def observe(c, t):
        return c[0, idx]

    t_save = np.asarray(t_save if t_save is not None else np.linspace(1, 30, 59) * MIN)
    sol = solver.simulate(model, params, t_end=float(t_save[-1]), save_at=t_save, rtol=rtol, method="trbdf2",
                          observe=observe, throw=True)
    values = np.asarray(sol.ys)                      # (times, shell nodes)
    ex = exact(r[idx][None], t_save[:, None], D, k)
    late = ex / final(r[idx], D, k)[None] >= 0.2     # from a fifth of the final value on
    out = {"nodes": int(disc.n_nodes),
           "shell_nodes": int(len(idx)), "t": t_save, "ratio_to_final": (values / final(r[idx], D, k)).mean(axis=1),
           "error_vs_exact": float(np.max(np.abs(values / ex - 1)[late]))}
    if k > 0:
        ss = np.asarray(solver.steady_state(model, params, throw=True).c)[0]
        out["final_error"] = float(np.max(np.abs(ss[idx] / final(r[idx], D, k) - 1)))
    return out


def t_half_numeric(run):
    """Where the shell-mean of c / c_final crosses 1/2, interpolated linearly in log t."""
    t, y = run["t"], run["ratio_to_final"]
    i = int(np.argmax(y >= 0.5))
    if i == 0:
        raise RuntimeError("c / c_final is above 1/2 at the first save time")
    lt = np.interp(0.5, [y[i - 1], y[i]], np.log([t[i - 1], t[i]]))
    return float(np.exp(lt))


def compute(quick: bool = False) -> dict:
    # quick: rtol 1e-2 moves t50 by 5e-5 against 1e-4 (measured at 25 um); the two runs share one
    # compiled program (same mesh, same number of save times)
    h0, rtol = (25 * UM, 1e-2) if quick else (10 * UM, 1e-4)
    t0 = time.perf_counter()
    free = solve(h0, rtol=rtol)
    lossy = solve(h0, k=K_UPTAKE, t_save=np.linspace(0.5, 15, 59) * MIN, rtol=rtol)
    # range of one MSC's VEGF (0.19 molecules/s) at the 31 pg/mL proliferation threshold, no loss
    vegf_pg_per_molecule = 45e3 / AVOGADRO * 1e12   # 45 kDa in pg
    q_msc = 0.19 * vegf_pg_per_molecule              # pg/s
    c_threshold = 31e-3                               # pg/mm^3 (31 pg/mL)
    r_msc = q_msc / (4 * np.pi * D_CYTOKINE * c_threshold)
    # secretion that holds 10 pM at 125 um (molecules/s), no loss
    c_kd = 10e-12 * AVOGADRO * 1e-6                   # molecules/mm^3 (1 L = 1e6 mm^3)
    q_needed = 4 * np.pi * D_CYTOKINE * (125 * UM) * c_kd
    return {
        "h0_um": h0 / UM, "nodes": free["nodes"], "seconds": time.perf_counter() - t0,
        "t50_250um_min": t_half_numeric(free) / MIN,
        "t50_250um_exact_min": t_half_exact(R_PROBE, D_CYTOKINE) / MIN,
        "t50_250um_halfD_exact_min": t_half_exact(R_PROBE, D_CYTOKINE / 2) / MIN,
        "field_error_vs_exact": free["error_vs_exact"],
        "t50_250um_uptake_min": t_half_numeric(lossy) / MIN,
        "t50_250um_uptake_exact_min": t_half_exact(R_PROBE, D_CYTOKINE, K_UPTAKE) / MIN,
        "field_error_vs_exact_uptake": lossy["error_vs_exact"],
        "final_error_uptake": lossy["final_error"],
        "msc_vegf_range_um": r_msc / UM,
        "secretion_for_10pM_at_125um_molecules_per_s": q_needed,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="coarser mesh (25 um at the source), for tests")
    ap.add_argument("--json", help="write the numbers to this file")
    a = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)   # this program's choice: reference numbers in float64
    out = compute(quick=a.quick)
    for key, value in out.items():
        print(f"{key:48s} {value:.4g}" if isinstance(value, float) else f"{key:48s} {value}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
