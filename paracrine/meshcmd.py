"""`paracrine mesh`: generate or read a geometry, summarise it, write it with a picture."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import estimate as E


def run(args) -> Path:
    from paracrine import geometry

    out = Path(args.out)
    problem = E.out_problem(out)
    if problem:
        raise ValueError(problem)
    if not (args.labels or args.input):
        if (args.size is None) == (args.spacing is None):
            raise ValueError("give --size (tetrahedral mesh, mm) or --spacing (voxel grid, mm)")
        h = args.size if args.size is not None else args.spacing
        if h > 0 and math.isfinite(h):   # other values: refused by the generator with its message
            est = E.mesh_estimate(args.species, args.size, args.spacing)
            est.check(getattr(args, "force", False),
                      say=lambda line: print(f"paracrine mesh: {line}", file=sys.stderr, flush=True))
    if args.labels:
        geom = geometry.read_labels(args.labels, spacing=args.spacing, border_width=args.border_width or 1.0)
    elif args.input:
        geom = geometry.read(args.input)
    else:
        territory = None if args.territory == "none" else args.territory
        geom = geometry.lv_ellipsoid(args.species, mesh_size=args.size, grid_spacing=args.spacing,
                                     territory=territory, transmural=args.transmural,
                                     border_width=args.border_width)
    info = geometry.summary(geom)
    # everything is written into a sibling temporary folder first: a failure leaves nothing behind
    made = E.make_parents(out)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except BaseException:
        E.remove_created(made)
        raise
    try:
        if isinstance(geom, geometry.Mesh):
            geometry.write(tmp / "mesh.vtu", geom)
            info["file"] = "mesh.vtu"
        else:
            import numpy as np

            np.savez_compressed(tmp / "grid.npz", labels=geom.labels, spacing=geom.spacing, origin=geom.origin,
                                names=json.dumps(geom.region_names))
            info["file"] = "grid.npz"
        geometry.plot_sections(geom, tmp / "sections.png")
        (tmp / "summary.json").write_text(json.dumps(info, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # created by this invocation, as the parents
        E.remove_created(made)
        raise
    print(_format(info, out))
    return out


def _format(info: dict, out: Path) -> str:
    lines = [f"paracrine mesh -> {out}"]
    if info["kind"] == "mesh":
        lines.append(f"  {info['nodes']} nodes, {info['cells']} cells ({info['dim']}-D)")
        lines.append(f"  quality: worst aspect ratio {info['worst_aspect_ratio']:.2f} (median "
                     f"{info['median_aspect_ratio']:.2f}), obtuse-angle share {100 * info['obtuse_share']:.0f} %")
        nc = info["negative_couplings"]
        lines.append(f"  negative couplings (not an M-matrix): {nc['count']} of {nc['edges']} edges "
                     f"({100 * nc['share']:.1f} %), worst {nc['worst_ratio']:.3g} of the largest, "
                     f"{100 * nc['sum_ratio']:.1f} % of the positive sum"
                     + ("; geometry.operator = \"m-matrix\" removes them" if nc["count"] else ""))
        if "wall_thickness_mm" in info:
            w = info["wall_thickness_mm"]
            lines.append(f"  wall thickness {w['min']:.2f}-{w['max']:.2f} mm (median {w['median']:.2f})")
        lines.append("  boundaries: " + ", ".join(f"{k} ({v} facets)" for k, v in info["boundaries"].items()))
    else:
        lines.append(f"  grid {info['shape']} at {info['spacing_mm']} mm, {info['tissue_voxels']} tissue voxels")
    lines.append("  region volumes: " + ", ".join(f"{k} {v:.3g} mm^3" for k, v in info["region_volumes_mm3"].items()))
    return "\n".join(lines)
