"""Le et al. 2009 (Circulation 119:2928): new capillaries clear a locally released growth factor.

Published (abstract): after sustained local (epicardial) FGF delivery in vivo produced a burst of
neovascularisation, the FGF penetration depth into the myocardium fell 5-fold; the authors explain
it with a continuum model of diffusion with microvascular clearance, in which the penetration depth
goes as sqrt(D / k), k the clearance rate (transendothelial permeability times capillary surface
per volume). A 5-fold fall with D unchanged needs k to rise 25-fold.

What is computed here, with the tool's steady solver on a voxel grid of a cut through the wall
(depth x from the epicardium, x = 0, to the endocardium, zero flux there; lateral y, a symmetry
plane at the patch centre y = 0): a patch on the epicardium releases at a constant rate into the
first layer of voxels; capillary clearance is set per region, "treated" (within 1 mm of the
patch edge, where new vessels grow) and "remote":

* the penetration depth d (where c on the axis under the patch falls to 1/e of its value in the
  first voxel) before and after the treated region's clearance rises 25-fold, and their ratio;
* the clearance multiplier that cuts the depth 5-fold, found by bisection on the solver;
* the same for a wide patch (10 mm half-width: one-dimensional transport), for a narrow one (0.5
  mm: lateral spread shortens the depth on the axis), and for a thin rat wall (1.5 mm).

Parameters: D = 1.45e-6 cm^2/s (free FGF2, the tool's preset: a free-water estimate); the clearance
before treatment, k0 = D / (0.5 mm)^2 = 5.8e-4 /s, is chosen so that the depth before is 0.5 mm,
inside the 0.3-0.6 mm decay lengths of the project's parameter table (an estimate: the paper's
measured depths are not used, only their ratio). ECM binding is left out: at steady state, binding
that holds a fixed fraction of the factor scales D and k alike and leaves sqrt(D / k) unchanged.

Run: python examples/validation/le_2009.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
from scipy.optimize import brentq

UM = 1e-3
D_FGF2 = 1.45e-4                 # mm^2/s
DEPTH0 = 0.5                     # mm, penetration depth before treatment (choice, see above)
K0 = D_FGF2 / DEPTH0 ** 2        # 1/s


class Wall:
    """A cut through the wall with an epicardial patch: a steady solve per clearance multiplier."""

    def __init__(self, h, thickness=10.0, half_width=6.0, patch=10.0, treated_margin=1.0):
        from paracrine import geometry, solver

        patch = min(patch, half_width)
        regions = {"remote": True,
                   "treated": lambda x: x[..., 1] < patch + treated_margin}
        grid = geometry.box_grid([0.0, 0.0], [thickness, half_width], [round(thickness / h), round(half_width / h)],
                                 regions=regions)
        self.disc = geometry.discretise(grid)
        xy = np.asarray(self.disc.coordinates).reshape(grid.labels.shape + (2,))
        self.x = xy[:, 0, 0]
        density = ((xy[..., 0] < h) & (xy[..., 1] < patch)).astype(float)
        self.model = solver.Model(self.disc, sources=[solver.field_source(self.disc, density, name="patch")])
        self.solver = solver
        self.treated = self.model.regions.index("treated")

    def depth(self, multiplier=1.0):
        k = np.full(len(self.model.regions), K0)
        k[self.treated] *= multiplier
        params = self.model.params(D=D_FGF2, clearance=k, sources={"patch": self.solver.Constant(rate=1.0)})
        ss = self.solver.steady_state(self.model, params, throw=True, tol=1e-12)
        axis = np.asarray(ss.c)[0, :, 0]                 # under the patch centre, along the depth
        target = axis[0] / math.e
        i = int(np.argmax(axis < target))
        if i == 0:
            return math.inf                              # never falls to 1/e within the wall
        # c decays about exponentially: interpolate log c linearly between the two voxels
        lx = np.interp(np.log(target), np.log(axis[[i, i - 1]]), self.x[[i, i - 1]])
        return float(lx - self.x[0])

    def multiplier_for(self, d0, fold=5.0):
        """The clearance multiplier of the treated region that cuts the depth d0 (at multiplier 1) fold-fold."""
        return brentq(lambda m: self.depth(m) - d0 / fold, 2.0, 400.0, xtol=1e-4, rtol=1e-6)


def exact_depth(delta, thickness):
    """1-D: c = cosh((L - x) / delta) / cosh(L / delta); the depth where it falls to 1/e (inf if never)."""
    target = math.cosh(thickness / delta) / math.e
    return math.inf if target < 1 else thickness - delta * math.acosh(target)


def compute(quick: bool = False) -> dict:
    h = 20 * UM if quick else 10 * UM
    t0 = time.perf_counter()
    out = {"h_um": h / UM, "D_mm2_per_s": D_FGF2, "k0_per_s": K0}
    cases = {"wide": dict(thickness=6.0, half_width=2.0, patch=10.0),
             "narrow": dict(thickness=6.0, half_width=4.0, patch=0.5),
             "rat_wall": dict(thickness=1.5, half_width=2.0, patch=10.0)}
    for name, kw in cases.items():
        wall = Wall(h, **kw)
        before, after = wall.depth(1.0), wall.depth(25.0)
        out[f"{name}_depth_before_mm"] = before
        out[f"{name}_depth_after_mm"] = after
        out[f"{name}_ratio"] = before / after
        out[f"{name}_multiplier_for_5fold"] = wall.multiplier_for(before, 5.0)
    out["wide_ratio_exact"] = exact_depth(DEPTH0, 6.0) / exact_depth(DEPTH0 / 5, 6.0)
    out["rat_wall_ratio_exact"] = exact_depth(DEPTH0, 1.5) / exact_depth(DEPTH0 / 5, 1.5)
    out["seconds"] = time.perf_counter() - t0
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20 um voxels instead of 10 um, for tests")
    ap.add_argument("--json", help="write the numbers to this file")
    a = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)   # this program's choice: reference numbers in float64
    out = compute(quick=a.quick)
    for key, value in out.items():
        print(f"{key:40s} {value:.5g}" if isinstance(value, float) else f"{key:40s} {value}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
