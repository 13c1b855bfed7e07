"""`paracrine mesh`: generate or read a geometry, summarise it, write it with a picture."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from . import estimate as E


def run(args) -> Path:
    from paracrine import geometry
    from paracrine.geometry import validate

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
    regions, tags, unit = parse_regions(getattr(args, "regions", None)), getattr(args, "tags", None), \
        getattr(args, "length_unit", None)
    if not args.input:
        for flag, val in (("--regions", regions), ("--tags", tags), ("--length-unit", unit)):
            if val is not None:
                raise ValueError(f"{flag} applies to a mesh or image file given with --input; allowed: --input FILE "
                                 f"{flag} ...")
    if args.labels:
        geom = geometry.read_labels(args.labels, spacing=args.spacing, border_width=args.border_width or 1.0)
    elif args.input:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            geom = geometry.read(args.input, length_unit=unit or "mm", regions=regions, tags=tags)
        for w in caught:
            print(f"paracrine mesh: warning: {w.message}", file=sys.stderr, flush=True)
    else:
        territory = None if args.territory == "none" else args.territory
        if args.spacing is not None and territory is not None:
            shape = geometry.lv_shape(args.species)
            bw = (shape.a_epi - shape.a_endo) / 3 if args.border_width is None else args.border_width
            if math.isfinite(args.spacing) and args.spacing > 0:
                validate.border_band(args.spacing, bw, spacing_key="--spacing", width_key="--border-width",
                                     default=args.border_width is None)
        geom = geometry.lv_ellipsoid(args.species, mesh_size=args.size, grid_spacing=args.spacing,
                                     territory=territory, transmural=args.transmural,
                                     border_width=args.border_width)
        if isinstance(geom, geometry.Grid) and territory is not None and "border" not in geom.region_names \
                and "remote" in geom.region_names and (args.border_width is None or args.border_width > 0):
            raise ValueError(f"--spacing {args.spacing:g} mm left no voxel in the border band (--border-width "
                             f"{bw:g} mm) around the infarct, so the grid has no border zone; allowed: a smaller "
                             "--spacing or a wider --border-width")
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
            geometry.write(tmp / "grid.npz", geom)
            geometry.write(tmp / "grid.vti", geom)   # VTK image data: ParaView opens it
            info["file"] = "grid.npz"
            info["vtk_file"] = "grid.vti"
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


def parse_regions(text: str | None) -> dict | None:
    """--regions "remote=1,border=2+4,core=3" -> {"remote": 1, "border": [2, 4], "core": 3}."""
    if text is None:
        return None
    out: dict = {}
    for part in text.split(","):
        name, sep, tags = part.partition("=")
        name = name.strip()
        try:
            if not sep or not name:
                raise ValueError
            vals = [int(t) for t in tags.split("+")]
        except ValueError:
            raise ValueError(f"--regions {text!r}: {part.strip()!r} is not NAME=TAG; allowed: comma-separated "
                             "NAME=TAG or NAME=TAG+TAG, e.g. \"remote=1,border=2+4,core=3\" (tags: integer values of "
                             "the file's cell tag array)") from None
        if name in out:
            raise ValueError(f"--regions {text!r}: region {name!r} is given twice; allowed: each name once")
        out[name] = vals[0] if len(vals) == 1 else vals
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
        lines.append(f"  grid {info['shape']} at {info['spacing_mm']} mm, {info['tissue_voxels']} tissue voxels "
                     f"(grid.npz; grid.vti for ParaView)")
    lines.append("  region volumes: " + ", ".join(f"{k} {v:.3g} mm^3" for k, v in info["region_volumes_mm3"].items()))
    return "\n".join(lines)
