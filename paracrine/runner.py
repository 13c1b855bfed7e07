"""`paracrine run`: a scenario through the solver into a run folder, with checkpoints and resume.

The simulated time is cut into chunks fixed by the scenario alone (whole numbers of
output intervals, about a day each), so an interrupted run that resumes from a
checkpoint computes exactly the chunks an uninterrupted run would: the results are
identical. The run writes into `OUT.partial/` and renames it to `OUT` only when every
output is complete; checkpoints (`OUT.partial/checkpoints/NNNNN.npz`, each written to a
temporary name and renamed) hold the outputs of the chunks since the previous one and the
state at its end (fields, budget, and the exposure accumulator `solver.Exposure` that the time
loop updates at every step), and are deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from . import report
from .build import _region_share, build, make_geometry
from .scenario import Scenario, loads, save_times

DAY = 86400.0
STATE_KEYS = ("c", "b", "metrics", "budget", "steps", "stages", "limited", "chunk", "status")


class RunError(RuntimeError):
    """A run folder problem (exists, not resumable); the message says what to do."""


def partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def chunk_plan(ts: np.ndarray, interval: float, target: float = DAY) -> list[tuple[int, int]]:
    """Chunks of save indices [i, j): about `target` seconds each, all of equal length where possible
    (one compiled program); depends on the save times only."""
    n = len(ts)
    k = max(1, min(n, int(round(target / interval))))
    near = [m for m in range(max(1, k // 2), min(n, 2 * k) + 1) if n % m == 0]
    if near:
        k = min(near, key=lambda m: abs(m - k))
    return [(i, min(i + k, n)) for i in range(0, n, k)]


def _atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_geometry(path: Path, geom, sites) -> None:
    import geometry

    arrays = {"sites_count": np.array(len(sites))}
    for k, s in enumerate(sites):
        arrays[f"site{k}"] = np.zeros((0, 3)) if s is None else np.asarray(s)
        arrays[f"site{k}_none"] = np.array(s is None)
    if isinstance(geom, geometry.Mesh):
        arrays.update(kind="mesh", points=geom.points, cells=geom.cells, cell_regions=geom.cell_regions,
                      region_names=json.dumps(geom.region_names), facets=geom.facets, facet_tags=geom.facet_tags,
                      boundary_names=json.dumps(geom.boundary_names))
    else:
        arrays.update(kind="grid", labels=geom.labels, spacing=np.asarray(geom.spacing), origin=np.asarray(geom.origin),
                      region_names=json.dumps(geom.region_names))
    _atomic_savez(path, **arrays)


def load_geometry(path: Path):
    import geometry

    z = np.load(path)
    names = json.loads(str(z["region_names"]))
    if str(z["kind"]) == "mesh":
        geom = geometry.Mesh(z["points"], z["cells"], z["cell_regions"], names, z["facets"], z["facet_tags"],
                             json.loads(str(z["boundary_names"])))
    else:
        geom = geometry.Grid(z["labels"], tuple(z["spacing"]), tuple(z["origin"]), names)
    sites = [None if bool(z[f"site{k}_none"]) else z[f"site{k}"] for k in range(int(z["sites_count"]))]
    return geom, geometry.discretise(geom), sites


def _versions() -> dict:
    import platform

    import jax
    import jaxlib

    from . import __version__

    return {"paracrine": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _device() -> dict:
    import jax

    d = jax.devices()[0]
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count()}


def run(scenario: Scenario | None, out, *, resume: bool = False, checkpoint_every: float = 60.0,
        progress: bool | None = None, dtype=None, figures: bool = True, log=print,
        _stop_after: int | None = None) -> Path:
    """Run `scenario` into the folder `out` (must not exist); with resume=True continue the
    interrupted run in `out.partial` (the scenario stored there is used). Returns the run folder.

    checkpoint_every: wall-clock seconds between checkpoints (0: after every chunk).
    progress: a progress bar on stderr (None: only on a terminal).
    """
    import jax.numpy as jnp

    out = Path(out)
    dtype = dtype or jnp.result_type(float)
    if out.name.endswith(".partial"):
        out = out.with_name(out.name[: -len(".partial")])
    part = partial_dir(out)
    t_start = time.perf_counter()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out} exists and is not empty; choose another --out (runs never overwrite)")
    if resume:
        if not (part / "scenario.toml").is_file() or not (part / "run-start.json").is_file():
            raise RunError(f"nothing to resume: {part} holds no interrupted run")
        meta = json.loads((part / "run-start.json").read_text())
        scenario = loads((part / "scenario.toml").read_text(), source=meta["source"], base=Path(meta["base"]))
    else:
        if scenario is None:
            raise ValueError("run needs a scenario (or resume=True)")
        if part.exists():
            raise RunError(f"{part} holds an interrupted run; continue it with --resume {out} or remove it")
        part.mkdir(parents=True)
        (part / "checkpoints").mkdir()
        _atomic_text(part / "scenario.toml", scenario.text)
        _atomic_text(part / "run-start.json", json.dumps(
            {"source": scenario.source, "base": str(Path(scenario.source).parent.resolve()) if
             Path(scenario.source).is_file() else str(Path.cwd())}))
    try:
        return _execute(scenario, out, part, resume=resume, dtype=dtype, checkpoint_every=checkpoint_every,
                        progress=progress, figures=figures, log=log, t_start=t_start, stop_after=_stop_after)
    except BaseException:
        if not resume and part.exists() and not any((part / "checkpoints").glob("*.npz")):
            shutil.rmtree(part, ignore_errors=True)  # nothing to resume: leave nothing behind
        raise


def _execute(scenario, out, part, *, resume, dtype, checkpoint_every, progress, figures, log, t_start, stop_after):
    import jax.numpy as jnp

    import solver

    timings: dict = {}
    t0 = time.perf_counter()
    stored = part / "geometry.npz"
    if stored.is_file():  # a resumed run continues on exactly the stored mesh and sites
        geom, disc, sites = load_geometry(stored)
    else:
        geom, disc, sites = make_geometry(scenario)
    built = build(scenario, dtype=dtype, geometry_and_sites=(geom, disc, sites))
    if not stored.is_file():
        save_geometry(stored, geom, sites)
    timings["geometry_s"] = time.perf_counter() - t0
    model, params = built.model, built.params
    d = scenario.data
    ts = save_times(scenario)
    chunks = chunk_plan(ts, d["output"]["interval"], d["time"]["chunk"])
    fixed = d["time"]["dt"] is not None
    # fixed steps: the stepper planned once (RKL2's stage count); error control: simulate plans it
    stepper = (solver.plan(model, params, dt=d["time"]["dt"], method=d["time"]["method"]) if fixed
               else solver.steppers.make_stepper(d["time"]["method"]))
    steps_kw = dict(dt=d["time"]["dt"]) if fixed else dict(rtol=d["time"]["rtol"])
    S, R = model.n_factors, model.n_regions
    share = _region_share(disc)
    mass = np.asarray(disc.mass, float).reshape(-1)
    W = share * mass[:, None]                      # (N, R) region volume per node
    thresholds = np.array([d["factors"][f]["threshold"] or np.inf for f in model.factors])
    binding = params.binding is not None
    exposure = solver.Exposure(W, thresholds, dtype=dtype)  # AUC, peaks, time above: every step, in the loop

    # state, from the checkpoints on resume
    state = {"c": np.zeros(model.state_shape), "b": np.zeros(model.state_shape) if binding else np.zeros(0),
             "metrics": None, "budget": {}, "steps": 0, "stages": 0, "limited": np.zeros(S),
             "chunk": 0, "status": 0}
    records: list[dict] = []   # per chunk: stats (T_k, S, R, 4) and snapshots
    ckdir = part / "checkpoints"
    ck_files = sorted(ckdir.glob("[0-9]*.npz"))
    for f in ck_files:
        z = np.load(f, allow_pickle=False)
        for k in range(int(z["n_records"])):
            records.append({"stats": z[f"stats{k}"], "snap_idx": z[f"snap_idx{k}"], "snaps": z[f"snaps{k}"],
                            "snaps_b": z[f"snaps_b{k}"]})
        state = {"c": z["c"], "b": z["b"], "metrics": {k[len("metrics."):]: z[k] for k in z.files
                                                         if k.startswith("metrics.")},
                 "budget": json.loads(str(z["budget"])),
                 "steps": int(z["steps"]), "stages": int(z["stages"]), "limited": z["limited"],
                 "chunk": int(z["chunk"]), "status": int(z["status"])}
        if "control" in z.files:   # the step controller's counts (error-controlled runs)
            state.update(rejected=int(z["control"][0]), error_max=float(z["control"][1]), h_max=float(z["control"][2]))
            if len(z["control"]) > 3 and float(z["control"][3]) > 0:
                state["h_next"] = float(z["control"][3])
    if resume:
        log(f"resuming {part}: {state['chunk']} of {len(chunks)} chunks done (day {ts[chunks[state['chunk'] - 1][1] - 1] / DAY:.2f})"
            if state["chunk"] else f"resuming {part}: no checkpoint yet, starting over")

    bar = _progress(progress, d["time"]["end"], ts[chunks[state["chunk"] - 1][1] - 1] if state["chunk"] else 0.0)
    t_sim = time.perf_counter()
    pending: list[dict] = []
    last_ck = time.perf_counter()
    every = d["output"]["fields_every"]
    map_idx = [int(np.argmin(np.abs(ts - m))) for m in d["output"]["maps"]]  # maps get snapshots of their own
    c = jnp.asarray(state["c"], dtype)
    b = jnp.asarray(state["b"], dtype) if binding else None
    acc = None if not state["metrics"] else {k: jnp.asarray(v, dtype) for k, v in state["metrics"].items()}
    first_chunk_s = None
    for ci in range(state["chunk"], len(chunks)):
        i, j = chunks[ci]
        t0 = 0.0 if i == 0 else float(ts[i - 1])
        tc = time.perf_counter()
        # error control continues from the step the controller proposed at the end of the last chunk
        carry_h = {"dt0": state["h_next"]} if not fixed and state.get("h_next", 0.0) > 0 else {}
        sol = solver.simulate(model, params, t0=t0, t_end=float(ts[j - 1]), save_at=ts[i:j], method=stepper,
                              c0=c, b0=b, budget=True, metrics=exposure, metrics0=acc, **steps_kw, **carry_h)
        ys = sol.ys
        cf, bf = (ys if binding else (ys, None))
        cf = np.asarray(cf, float)                   # (T_k, S, *space)
        cf = cf.reshape(cf.shape[0], S, -1)
        bf = None if bf is None else np.asarray(bf, float).reshape(cf.shape)
        if first_chunk_s is None:
            first_chunk_s = time.perf_counter() - tc
        # host reductions: region mean, max, free and bound amounts
        amounts = cf @ W                             # (T, S, R)
        bound = np.zeros_like(amounts) if bf is None else bf @ W
        vol = W.sum(axis=0)
        means = amounts / np.where(vol > 0, vol, 1.0)
        maxes = np.stack([np.where(share[:, r] > 0, cf, -np.inf).max(axis=-1) for r in range(R)], axis=-1)
        stats = np.stack([means, maxes, amounts, bound], axis=-1)   # (T, S, R, 4)
        glob = np.arange(i, j)
        snap = ((glob + 1) % every == 0) | (glob == len(ts) - 1) | np.isin(glob, map_idx)
        rec = {"stats": stats, "snap_idx": glob[snap], "snaps": cf[snap].astype(np.float32),
               "snaps_b": (bf[snap] if bf is not None else np.zeros((0,))).astype(np.float32)}
        records.append(rec)
        pending.append(rec)
        c, b, acc = sol.final, sol.bound, sol.metrics
        state["metrics"] = acc
        for k, v in sol.budget.items():
            state["budget"][k] = (np.asarray(state["budget"].get(k, np.zeros(S))) + np.asarray(v, float)).tolist()
        state["steps"] += int(sol.stats["steps"])
        state["stages"] += int(sol.stats["stages"])
        state["rejected"] = state.get("rejected", 0) + int(sol.stats.get("rejected", 0))
        state["error_max"] = max(state.get("error_max", 0.0), float(sol.stats.get("error_max", 0.0)))
        state["h_max"] = max(state.get("h_max", 0.0), float(sol.stats.get("h_max", 0.0)))
        if "h_next" in sol.stats:
            state["h_next"] = float(sol.stats["h_next"])
        state["limited"] = np.asarray(state["limited"]) + np.asarray(sol.stats["limited"], float)
        state["status"] = state["status"] or int(sol.status)   # the first failure is the one to report
        state["chunk"] = ci + 1
        if bar is not None:
            bar.update(float(ts[j - 1] - t0) / 3600.0)
            bar.set_postfix_str(f"{state['steps'] / max(time.perf_counter() - t_sim, 1e-9):.0f} steps/s")
        if time.perf_counter() - last_ck >= checkpoint_every or ci == len(chunks) - 1:
            _checkpoint(ckdir, pending, state, c, b)
            pending, last_ck = [], time.perf_counter()
        if stop_after is not None and ci + 1 >= stop_after and ci + 1 < len(chunks):
            if bar is not None:
                bar.close()
            raise KeyboardInterrupt(f"stopped after chunk {ci + 1} (test)")
    if bar is not None:
        bar.close()
    timings["simulate_s"] = time.perf_counter() - t_sim
    timings["first_chunk_s"] = first_chunk_s

    t_out = time.perf_counter()
    stats = np.concatenate([r["stats"] for r in records])
    snap_idx = np.concatenate([r["snap_idx"] for r in records])
    snaps = np.concatenate([r["snaps"] for r in records])
    snaps_b = np.concatenate([r["snaps_b"] for r in records]) if binding else None
    final_c, final_b = np.asarray(c, float), (None if b is None else np.asarray(b, float))
    result = report.Result(built=built, ts=ts, stats=stats, snap_idx=snap_idx, snaps=snaps, snaps_b=snaps_b,
                           exposure={k: np.asarray(v, float) for k, v in acc.items()},
                           step_s=(float(solver.step_lengths(ts[-1], d["time"]["dt"], ts).max()) if fixed
                                   else state["h_max"]),
                           budget={k: np.asarray(v) for k, v in state["budget"].items()},
                           final_c=final_c, final_b=final_b, W=W, share=share, status=state["status"],
                           steps=state["steps"], stages=state["stages"], limited=np.asarray(state["limited"]))
    report.write_all(part, result, figures=figures)
    timings["outputs_s"] = time.perf_counter() - t_out
    timings["total_s"] = time.perf_counter() - t_start
    run_info = {"scenario": d, "source": scenario.source, "versions": _versions(), "device": _device(),
                "precision": "double" if np.dtype(dtype) == np.float64 else "single",
                "stepper": repr(stepper), "steps": state["steps"], "stages": state["stages"],
                **({} if fixed else {"steps_rejected": state.get("rejected", 0), "rtol": d["time"]["rtol"],
                                     "error_estimate": {"largest_scaled_local_error": state.get("error_max", 0.0),
                                                        "largest_relative_local_error":
                                                            state.get("error_max", 0.0) * d["time"]["rtol"]},
                                     "longest_step_s": state.get("h_max", 0.0)}),
                "status": solver.STATUS_MESSAGES[state["status"]], "chunks": len(chunks),
                "resumed": bool(resume), "geometry": _geometry_info(geom), "timings": timings}
    _atomic_text(part / "run.json", json.dumps(run_info, indent=1, default=float))
    shutil.rmtree(ckdir)
    (part / "run-start.json").unlink()
    if out.exists():
        out.rmdir()
    os.replace(part, out)
    return out


def _geometry_info(geom) -> dict:
    import geometry

    info = geometry.summary(geom)
    return {k: v for k, v in info.items() if k in ("kind", "nodes", "cells", "shape", "tissue_voxels",
                                                   "region_volumes_mm3", "worst_aspect_ratio", "obtuse_share",
                                                   "negative_couplings")}


def _checkpoint(ckdir: Path, pending: list, state: dict, c, b) -> None:
    arrays = {"n_records": np.array(len(pending)), "c": np.asarray(c), "b": np.zeros(0) if b is None else np.asarray(b),
              "budget": json.dumps(state["budget"]), "steps": np.array(state["steps"]),
              "stages": np.array(state["stages"]), "limited": np.asarray(state["limited"]),
              "chunk": np.array(state["chunk"]), "status": np.array(state["status"]),
              "control": np.array([state.get("rejected", 0), state.get("error_max", 0.0), state.get("h_max", 0.0),
                                   state.get("h_next", 0.0)])}
    arrays.update({f"metrics.{k}": np.asarray(v) for k, v in state["metrics"].items()})
    for k, r in enumerate(pending):
        for key in ("stats", "snap_idx", "snaps", "snaps_b"):
            arrays[f"{key}{k}"] = r[key]
    _atomic_savez(ckdir / f"{state['chunk']:05d}.npz", **arrays)


def _progress(enabled, end: float, done: float):
    if enabled is False:
        return None
    from tqdm import tqdm

    return tqdm(total=round(end / 3600.0, 3), initial=round(done / 3600.0, 3), unit="h", unit_scale=False,
                desc="simulated", disable=None if enabled is None else False, delay=1.0,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} h [{elapsed}<{remaining}{postfix}]")
