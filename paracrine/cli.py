"""The `paracrine` command."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="paracrine",
        description="Reaction-diffusion of factors secreted by cells injected into the infarcted heart.")
    ap.add_argument("--version", action="version", version=f"paracrine {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run a demonstration: MSCs in a rat heart with an LAD infarct",
                          description="1e6 MSCs at 3 border-zone sites of a rat LV with an LAD infarct secrete VEGF "
                                      "and HGF; prints region means, VEGF exposure of the border zone and the "
                                      "mass budget.")
    demo.add_argument("--days", type=float, default=7.0, help="simulated time in days (default 7)")
    demo.add_argument("--dt", type=float, default=60.0, help="time step in seconds (default 60)")
    demo.add_argument("--method", choices=["rkl2", "cn", "euler"], default="rkl2")
    demo.add_argument("--mesh-size", type=float, default=0.4, help="tetrahedral edge length in mm (default 0.4)")
    demo.add_argument("--precision", choices=["single", "double"], default="single")
    mesh = sub.add_parser("mesh", help="generate (or read) a geometry, summarise it and write it with a picture",
                          description="A truncated-ellipsoid LV with an infarct (default), a mesh file (--input) "
                                      "or an EMIDEC label image (--labels); writes mesh.vtu or grid.npz, "
                                      "summary.json and sections.png into --out.")
    mesh.add_argument("--species", default="rat", help="reference, mouse, rat, pig or human (default rat)")
    mesh.add_argument("--size", type=float, help="tetrahedral mesh edge length (mm)")
    mesh.add_argument("--spacing", type=float, help="voxel spacing (mm); with --labels: the image spacing")
    mesh.add_argument("--territory", default="LAD", help="LAD, LAD+, RCA, LCx or none (default LAD)")
    mesh.add_argument("--transmural", type=float, default=1.0, help="infarct extent from the endocardium (0-1]")
    mesh.add_argument("--border-width", type=float, default=None, help="border-zone band (mm; default wall / 3)")
    mesh.add_argument("--input", help="a mesh file (.msh, .vtu, .xdmf) to summarise instead")
    mesh.add_argument("--labels", help="an EMIDEC label image (.npy, .npz, .nii[.gz]) instead")
    mesh.add_argument("--out", default="mesh", help="output folder (new or empty; default ./mesh)")
    return ap


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 0
    if args.command == "mesh":
        from geometry import GeometryError

        from . import meshcmd

        try:
            meshcmd.run(args)
        except (GeometryError, ValueError) as err:
            print(f"paracrine mesh: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "demo":
        for key in ("days", "dt", "mesh_size"):
            value = getattr(args, key)
            if not value > 0:
                ap.error(f"--{key.replace('_', '-')} must be > 0, got {value}")
        import jax

        if args.precision == "double":
            jax.config.update("jax_enable_x64", True)
        from . import demo

        try:
            demo.main(days=args.days, dt=args.dt, method=args.method, mesh_size=args.mesh_size)
        except ValueError as err:  # e.g. an unstable forward-Euler step
            print(f"paracrine demo: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
