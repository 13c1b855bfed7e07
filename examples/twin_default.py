"""Twin experiment on the default scenario: synthetic tissue VEGF content (whole heart and border zone,
ELISA-like, 10 % noise) at 6 h, 1 d, 3 d and 7 d from the default rat LAD run; then fit VEGF secretion
and border-zone uptake from starts 2.5x too low and 3x too high, and compare with the truth.

    python examples/twin_default.py [--out fits/twin-default] [--seed 0] [--noise 0.1]

Writes the synthetic data (data.csv), fitted.toml, fit.json and figures into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="fits/twin-default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.1, help="relative SD of the synthetic data (default 0.1)")
    args = ap.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from paracrine import build as B, calibrate, data as pdata, fitreport, scenario as sc

    scen = sc.default()
    built = B.build(scen)
    truth = {"VEGF.secretion": scen.data["cells"]["secretion"]["VEGF"],
             "VEGF.uptake.border": scen.data["factors"]["VEGF"]["uptake"]["border"]}
    times = [6, 24, 72, 168]
    header = ["time [h]", "quantity", "factor", "where", "value [pg]", "sd [pg]"]
    keys = [(t, w) for t in times for w in ("tissue", "border")]
    probe = pdata.from_rows(header, [(k + 2, [str(t), "content", "VEGF", w, "1", "1"]) for k, (t, w) in enumerate(keys)],
                              scen)
    clean = calibrate.predict(built, probe)
    rng = np.random.default_rng(args.seed)
    noisy = clean * (1 + args.noise * rng.standard_normal(len(clean)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# synthetic twin data from the default scenario, {100 * args.noise:g} % noise, seed {args.seed}",
             ",".join(header)]
    lines += [f"{t},content,VEGF,{w},{v:.6g},{args.noise * c:.6g}" for (t, w), v, c in zip(keys, noisy, clean)]
    data = out / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    obs = pdata.read_csv(data, scen)
    start = {"VEGF.secretion": truth["VEGF.secretion"] / 2.5, "VEGF.uptake.border": truth["VEGF.uptake.border"] * 3}
    res = calibrate.fit(built, obs, list(truth), initial=start,
                      progress=lambda i, loss, lam, ok: print(f"  iteration {int(i)}  loss {float(loss):.5g}", flush=True))
    fitreport.write(res, scen, out)
    print(f"{res.status}: {res.iterations} iterations, {res.n_solves} model passes, {res.wall_s:.0f} s "
          f"(+{res.compile_s:.0f} s compile)")
    for n, v, (lo, hi) in zip(res.names, res.values, res.intervals):
        inside = "inside" if lo <= truth[n] <= hi else "OUTSIDE"
        print(f"  {n:20s} fitted {v:.4g}, 95 % [{lo:.4g}, {hi:.4g}], truth {truth[n]:.4g} ({inside}), "
              f"error {100 * (v / truth[n] - 1):+.1f} %")
    for w in res.warnings:
        print(f"  warning: {w}")
    print(f"  correlation {res.correlation[0, 1]:+.3f}; -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
