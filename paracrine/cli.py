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
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more detail on stderr (debug notes)")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run a scenario file (default: the built-in rat LAD scenario) into a run folder",
                         description="Runs SCENARIO (TOML with units; without it the built-in default: a rat LV with "
                                     "an LAD infarct, 1e6 MSCs at 3 border-zone sites, VEGF and HGF, 7 days) and "
                                     "writes fields.h5/.xdmf, regions.csv, cells.csv, metrics.json, figures/ and "
                                     "run.json into --out. The run works in OUT.partial and renames it when done.")
    run.add_argument("scenario", nargs="?", help="scenario file (.toml); omit for the default scenario")
    run.add_argument("--out", help="run folder to create (default: runs/<scenario name>)")
    run.add_argument("--device", choices=["cpu", "gpu"], help="JAX platform (default: JAX's choice)")
    run.add_argument("--precision", choices=["single", "double"], default="single")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run (RUN_DIR or RUN_DIR.partial)")
    run.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                     help="wall-clock seconds between checkpoints (default 60; 0: after every simulated chunk)")
    run.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    run.add_argument("--progress", choices=["auto", "on", "off"], default="auto",
                     help="progress bar on stderr (auto: on a terminal)")
    run.add_argument("--print-default", action="store_true", help="print the default scenario file and exit")
    run.add_argument("--force", action="store_true",
                     help="start even when the work estimate (nodes, time steps, memory) is above the limits")
    from . import fitcmd

    fitcmd.add_parser(sub)
    fitcmd.add_sweep_parser(sub)
    from . import designcmd

    designcmd.add_parser(sub)
    from . import compare

    compare.add_parser(sub)
    mesh = sub.add_parser("mesh", help="generate (or read) a geometry, summarise it and write it with a picture",
                          description="A truncated-ellipsoid LV with an infarct (default), a mesh file (--input) "
                                      "or an EMIDEC label image (--labels); writes mesh.vtu or grid.npz and grid.vti, "
                                      "summary.json and sections.png into --out.")
    mesh.add_argument("--species", default="rat", help="reference, mouse, rat, pig or human (default rat)")
    mesh.add_argument("--size", type=float, help="tetrahedral mesh edge length (mm)")
    mesh.add_argument("--spacing", type=float, help="voxel spacing (mm); with --labels: the image spacing")
    mesh.add_argument("--territory", default="LAD", help="LAD, LAD+, RCA, LCx or none (default LAD)")
    mesh.add_argument("--transmural", type=float, default=1.0, help="infarct extent from the endocardium (0-1]")
    mesh.add_argument("--border-width", type=float, default=None, help="border-zone band (mm; default wall / 3)")
    mesh.add_argument("--input", help="a mesh file (.msh, .vtu, .vtk, .xdmf, .med, .inp, ... any volume mesh meshio "
                                      "reads) or a grid (.vti, grid.npz) to summarise instead")
    mesh.add_argument("--length-unit", choices=["mm", "cm", "m", "um"],
                      help="with --input: the unit of the file's coordinates (default mm)")
    mesh.add_argument("--regions", metavar="NAME=TAG,...",
                      help="with --input: region map from the file's cell tags, e.g. \"remote=1,border=2,core=3\" "
                           "(several tags: border=2+4); tags in no region are left out, with a warning")
    mesh.add_argument("--tags", metavar="ARRAY", help="with --input: the cell-data array holding the tags (default: "
                                                      "gmsh physical groups, or the only integer cell array)")
    mesh.add_argument("--labels", help="an EMIDEC label image (.npy, .npz, .nii[.gz]) instead")
    mesh.add_argument("--out", default="mesh", help="output folder (new or empty; default ./mesh)")
    mesh.add_argument("--force", action="store_true", help="mesh even when the estimate is above the node limit")
    return ap


def main(argv=None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    if args.command is None:
        ap.print_help()
        return 0
    from .logs import configure

    configure(-1 if args.quiet else args.verbose)
    try:
        return _dispatch_logging_warnings(args)
    except OSError as err:   # a folder or file that cannot be written or read: one line, no traceback
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        print(f"paracrine {args.command}: {where}{err.strerror or err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - a bug of ours, not bad input: say so, keep the traceback in a log
        log = _crash_log(args, err)
        print(f"paracrine {args.command}: internal error ({type(err).__name__}: {err}). This is a bug in paracrine, "
              f"not a problem with your input as far as its checks can tell; the traceback is in {log}. Please "
              "report it with that file and the command line.", file=sys.stderr)
        return 70


def _dispatch_logging_warnings(args) -> int:
    """Run the command with Python warnings (a mesh's unused tags, duplicate data rows, ...) shown as
    the command's own warnings: one line 'paracrine COMMAND: warning: ...' through its logger."""
    import warnings

    from .logs import logger

    log = logger(args.command)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *a, **k: log.warning(str(message))
        return _dispatch(args)


def _crash_log(args, err) -> str:
    """Write the traceback of an unexpected error to a new file in the temporary folder; its path."""
    import os
    import platform
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="paracrine-error-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(f"paracrine {__version__}, Python {platform.python_version()}, {platform.platform()}\n")
        f.write(f"command: {' '.join(sys.argv)}\n\n")
        f.write("".join(traceback.format_exception(err)))
    return path


def _dispatch(args) -> int:
    if args.command == "mesh":
        from paracrine.geometry import GeometryError

        from . import meshcmd

        try:
            meshcmd.run(args)
        except KeyboardInterrupt:
            print("paracrine mesh: interrupted; nothing written", file=sys.stderr)
            return 130
        except (GeometryError, ValueError) as err:
            print(f"paracrine mesh: {err}", file=sys.stderr)
            return 2
        return 0
    if args.command == "run":
        return _run(args)
    if args.command == "compare":
        from . import compare

        return compare.run(args)
    if args.command == "design":
        from . import designcmd

        try:
            return designcmd.run(args, _set_platform)
        except ValueError as err:  # ScenarioError and bad arguments
            print(f"paracrine design: {err}", file=sys.stderr)
            return 2
    if args.command in ("fit", "sweep"):
        from . import fitcmd

        try:
            return (fitcmd.run if args.command == "fit" else fitcmd.run_sweep)(args, _set_platform)
        except ValueError as err:  # ScenarioError, DataError and bad arguments
            print(f"paracrine {args.command}: {err}", file=sys.stderr)
            return 2
    return 0


def _set_platform(device: str | None, precision: str) -> None:
    import jax

    if device is not None:
        jax.config.update("jax_platforms", "cuda" if device == "gpu" else "cpu")
        try:
            platform = jax.devices()[0].platform
        except Exception as err:  # RuntimeError, or an AssertionError from inside JAX with no backend at all
            platform = f"none ({type(err).__name__}: {err})" if str(err) else "none"
        if platform != device:
            raise ValueError(f"--device {device}: JAX has no such device here (it found: {platform}); for a GPU "
                             "install the extra: pip install 'paracrine-pde[gpu]'")
    if precision == "double":
        jax.config.update("jax_enable_x64", True)


def _run(args) -> int:
    from pathlib import Path

    from . import runner, scenario as sc

    if args.print_default:
        print(sc.default_text(), end="")
        return 0
    out = None
    try:
        if args.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every {args.checkpoint_every}; allowed: seconds >= 0")
        if args.resume and args.scenario:
            raise ValueError("give a SCENARIO or --resume RUN_DIR, not both (a resumed run uses its stored scenario)")
        _set_platform(args.device, args.precision)
        if args.resume:
            scen, out = None, Path(args.out or args.resume)
        else:
            scen = sc.load(args.scenario) if args.scenario else sc.default()
            out = Path(args.out) if args.out else Path("runs") / (Path(args.scenario).stem if args.scenario else "default")
        progress = {"auto": None, "on": True, "off": False}[args.progress]
        folder = runner.run(scen, out, resume=bool(args.resume), checkpoint_every=args.checkpoint_every,
                            progress=progress, figures=not args.no_figures, force=args.force)
    except (ValueError, runner.RunError) as err:  # ScenarioError and GeometryError are ValueErrors
        print(f"paracrine run: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        folder = None if out is None else Path(str(out).removesuffix(".partial"))
        if folder is not None and runner.partial_dir(folder).is_dir():
            print(f"paracrine run: interrupted; continue with --resume {folder}", file=sys.stderr)
        else:
            print("paracrine run: interrupted before the first checkpoint; nothing to resume, nothing left behind",
                  file=sys.stderr)
        return 130
    status = _summary(folder)
    if status != "success":
        print(f"paracrine run: the solver reported: {status} (outputs written; see run.json)", file=sys.stderr)
        return 3
    return 0


def _summary(folder) -> str:
    import json

    m = json.loads((folder / "metrics.json").read_text())
    info = json.loads((folder / "run.json").read_text())
    t = info["timings"]
    print(f"paracrine run: {folder}  ({info['status']}; {info['steps']} steps, {t['total_s']:.1f} s in all, "
          f"{t['geometry_s']:.1f} s geometry, {t['simulate_s']:.1f} s simulation)")
    for f, v in m["factors"].items():
        b = v["budget_pg"]
        line = f"  {f}: secreted {b.get('secreted', 0):.4g} pg, budget closes to {v['budget_closure_fraction']:.1e}"
        if "border" in v["regions"]:
            r = v["regions"]["border"]
            line += (f"; border zone: peak mean {r['peak_mean_pg_per_mL']:.4g} pg/mL at {r['peak_mean_time_h']:.1f} h, "
                     f"AUC {r['auc_pg_per_mL_h']:.4g} pg/mL h")
            if "mean_above_threshold_h" in r:
                line += (f", {r['mean_above_threshold_h']:.0f} h above {v['threshold_pg_per_mL']:g} pg/mL, "
                         f"{100 * r['exposed_volume_fraction']:.1f} % of its volume above it for "
                         f">= {v['exposure_h']:g} h")
        print(line)
    from .logs import logger

    for w in info.get("warnings", []):
        logger("run").warning(w)
    return info["status"]


if __name__ == "__main__":
    sys.exit(main())
