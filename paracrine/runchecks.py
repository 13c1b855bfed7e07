"""What a finished (or starting) run warns about its own numerics: a mass budget that does not close,
and fixed steps that split a fast regional sink from diffusion under ECM binding. Each warning is one
line, listed in run.json and metrics.json and printed by the command."""

from __future__ import annotations

import numpy as np

#: relative budget closure above which a run warns, by precision
# (measured: the default scenario closes to 4e-8 in single and 2e-16 in double precision)
CLOSURE_TOLERANCE = {"single": 1e-4, "double": 1e-10}
#: dt x (region-dependent loss rate) above which a fixed-step run with ECM binding warns: binding
#: takes the losses with it, split from diffusion, and a fast sink confined to some regions is then
#: split badly (examples/validation/README.md, a sink on capillary-sized regions: 2.2e-4 drift at
#: 0.055, 2.2 % at 0.55, 125 % at 5.5; border-zone uptake of 1e-3 /s at 60-120 s steps: 0.06-0.12,
#: where the test scenario tests/test_run.py COARSE at 120 s against 15 s steps differs by 0.4 % in
#: the border-zone AUC, 0.5 % in the mean at 12 h and 4 % in the nodal peak, every time-step effect
#: together)
SPLIT_LIMIT = 0.5


def split_warnings(model, params, dt) -> list[str]:
    """A warning per factor when fixed steps of dt meet ECM binding and a loss that differs between
    regions by more than SPLIT_LIMIT / dt (with binding, losses are split from diffusion)."""
    if dt is None or params.binding is None:
        return []
    rates = np.asarray(params.uptake, float) + np.asarray(params.clearance, float)   # (S, R)
    out = []
    for i, f in enumerate(model.factors):
        spread = float(rates[i].max() - rates[i].min())
        if dt * spread > SPLIT_LIMIT:
            region = model.regions[int(rates[i].argmax())]
            out.append(f"{f}: with ECM binding, uptake and clearance are integrated with the binding reaction and "
                       f"split from diffusion; at time.dt = {dt:g} s the loss in region {region} "
                       f"({rates[i].max():.3g} /s against {rates[i].min():.3g} /s elsewhere) gives dt x difference "
                       f"= {dt * spread:.2g}, above {SPLIT_LIMIT:g}, where that split loses accuracy: use error "
                       f"control (time.rtol) or time.dt <= {SPLIT_LIMIT / spread:.3g} s, or compare two steps")
    return out


def closure_warnings(metrics: dict, precision: str) -> list[str]:
    """A warning per factor whose mass budget closes worse than CLOSURE_TOLERANCE[precision]."""
    tol = CLOSURE_TOLERANCE[precision]
    out = []
    for f, v in metrics["factors"].items():
        c = float(v["budget_closure_fraction"] if "budget_closure_fraction" in v else v["budget_pg"]["closure"])
        if not c <= tol:   # NaN too
            out.append(f"{f}: the mass budget closes to {c:.1e} (secreted against decayed, taken up, cleared, "
                       f"through boundaries and left), worse than {tol:.0e} in {precision} precision; the amounts "
                       "and exposure metrics are suspect: check the mesh units (mm), the time step and the status")
    return out
