"""`paracrine run`: a scenario through the solver into a run folder, with checkpoints and resume.

The simulated time is cut into chunks fixed by the scenario alone (whole numbers of
output intervals, about a day each), so an interrupted run that resumes from a
checkpoint computes exactly the chunks an uninterrupted run would: the results are
identical. The run writes into `OUT.partial/` and renames it to `OUT` only when every
output is complete; checkpoints (`OUT.partial/checkpoints/NNNNN.npz`, each written to a
temporary name and renamed) hold the outputs of the chunks since the previous one and the
state at its end (fields, budget, and the exposure accumulator `solver.Exposure` that the time
loop updates at every step), and are deleted at the end.

`run-start.json` records hashes of the resolved scenario, of geometry.npz and of the code
(version and precision); `--resume` recomputes them and refuses a mismatch, saying what changed.
`OUT.partial/.lock` (PID and host, created atomically) keeps a second process off the folder.
A checkpoint that does not read back (truncated, missing arrays, wrong shapes, NaN) is named and
set aside, and the run resumes from the last good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from . import estimate as E
from . import report
from .build import _region_share, build, make_geometry, region_volumes
from .runchecks import closure_warnings, split_warnings
from .scenario import Scenario, ScenarioError, loads, save_times
from .logs import logger

LOG = logger("run")

DAY = 86400.0
STATE_KEYS = ("c", "b", "metrics", "budget", "steps", "stages", "limited", "chunk", "status")
#: seconds without a visible update after which a running chunk says so (stderr)
HEARTBEAT_S = 60.0


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


def note(msg: str) -> None:
    """A note of `paracrine run` (INFO of the `paracrine.run` logger: on stderr unless -q)."""
    LOG.info(msg)


def _geometry_arrays(geom, sites) -> dict:
    from paracrine import geometry

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
    return arrays


def _array_hashes(arrays: dict) -> dict:
    """sha256 of each array (dtype, shape and bytes), by name."""
    out = {}
    for k in sorted(arrays):
        a = np.asarray(arrays[k])
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        out[k] = h.hexdigest()[:16]
    return out


def save_geometry(path: Path, geom, sites) -> dict:
    """Write geometry.npz (mesh or grid and the injection sites); returns the hashes of its arrays."""
    arrays = _geometry_arrays(geom, sites)
    _atomic_savez(path, **arrays)
    return _array_hashes({k: np.asarray(v) for k, v in arrays.items()})


def _read_geometry_arrays(path: Path) -> dict:
    """Every array of geometry.npz, read in full; a truncated or corrupt file is a RunError naming it."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        for key in ("kind", "region_names", "sites_count"):
            if key not in arrays:
                raise KeyError(f"no array {key!r}")
        need = ("points", "cells", "cell_regions", "facets", "facet_tags", "boundary_names") \
            if str(arrays["kind"]) == "mesh" else ("labels", "spacing", "origin")
        for key in need + tuple(f"site{k}{s}" for k in range(int(arrays["sites_count"])) for s in ("", "_none")):
            if key not in arrays:
                raise KeyError(f"no array {key!r}")
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as err:
        raise RunError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); the run cannot continue on "
                       f"exactly its mesh. Start it again: paracrine run {path.parent / 'scenario.toml'} --out NEW "
                       f"(or remove {path.parent} first)") from None
    return arrays


def _geometry_from_arrays(z: dict):
    from paracrine import geometry

    names = json.loads(str(z["region_names"]))
    if str(z["kind"]) == "mesh":
        geom = geometry.Mesh(z["points"], z["cells"], z["cell_regions"], names, z["facets"], z["facet_tags"],
                             json.loads(str(z["boundary_names"])))
    else:
        geom = geometry.Grid(z["labels"], tuple(z["spacing"]), tuple(z["origin"]), names)
    sites = [None if bool(z[f"site{k}_none"]) else z[f"site{k}"] for k in range(int(z["sites_count"]))]
    return geom, geometry.discretise(geom), sites


def load_geometry(path: Path):
    return _geometry_from_arrays(_read_geometry_arrays(Path(path)))


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


# ---------------------------------------------------------------------------------------------------------
# what a resumed run must find unchanged


def _plain(obj):
    """The resolved scenario as plain JSON values (tuples as lists, NumPy as Python)."""
    def default(x):
        if isinstance(x, np.ndarray):
            return x.tolist()
        if isinstance(x, np.generic):
            return x.item()
        return str(x)
    return json.loads(json.dumps(obj, default=default))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True).encode()).hexdigest()[:16]


def _code(dtype) -> dict:
    """The code whose results a resumed run continues: the version and the precision."""
    from . import __version__

    return {"paracrine": __version__, "precision": "double" if np.dtype(dtype) == np.float64 else "single"}


def _diff(a, b, path: str = "", out: list | None = None, most: int = 6) -> list:
    """Up to `most` differences between two plain JSON values, as 'key old -> new'."""
    out = [] if out is None else out
    if len(out) >= most:
        return out
    fmt = lambda v: f"{v:g}" if isinstance(v, float) else json.dumps(v)  # noqa: E731
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in b:
                out.append(f"{p} removed (was {fmt(a[k])})")
            elif k not in a:
                out.append(f"{p} added ({fmt(b[k])})")
            else:
                _diff(a[k], b[k], p, out, most)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for k, (x, y) in enumerate(zip(a, b)):
            _diff(x, y, f"{path}[{k}]", out, most)
    elif a != b:
        out.append(f"{path} {fmt(a)} -> {fmt(b)}")
    return out[:most]


def _verify_resume(part: Path, meta: dict, scenario: Scenario, dtype) -> None:
    """Refuse to resume when the stored scenario, the code or the precision changed since the run started."""
    stored = part / "scenario.toml"
    if "scenario_hash" not in meta:
        note(f"{part} was started by an older version that recorded no hashes; the scenario, geometry and code "
             "are not verified")
        return
    now = _plain(scenario.data)
    if _digest(now) != meta["scenario_hash"]:
        changes = _diff(meta.get("scenario", {}), now)
        text_same = hashlib.sha256(scenario.text.encode()).hexdigest()[:16] == meta.get("text_hash")
        what = (f"{stored} resolves differently with this version of paracrine" if text_same else
                f"{stored} was edited after the run started")
        raise RunError(f"{what}: {'; '.join(changes) or 'the resolved scenario differs'} (internal units: mm, s, pg). "
                       f"Resuming would mix two scenarios: restore the file, or start the edited scenario as a new run "
                       f"(paracrine run {stored} --out NEW)")
    code = _code(dtype)
    old = meta.get("code", {})
    if code != old:
        changes = _diff(old, code)
        hint = (f"; resume with --precision {old['precision']}" if old.get("precision") != code["precision"] else
                "; resume it with the version that started it, or start it again")
        raise RunError(f"{part} was started with other code: {'; '.join(changes)}{hint}")


def _verify_geometry(path: Path, arrays: dict, meta: dict) -> None:
    want = meta.get("geometry_hashes")
    if not want:
        return
    have = _array_hashes(arrays)
    changed = [k for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
    if changed:
        raise RunError(f"{path} changed after the run started (arrays {', '.join(changed)} differ from those it "
                       f"recorded); resuming would continue the fields on another mesh. Restore it, or start the run "
                       f"again: paracrine run {path.parent / 'scenario.toml'} --out NEW")


# ---------------------------------------------------------------------------------------------------------
# one process per run folder


class Lock:
    """OUT.partial/.lock: {"pid", "host"}, created with O_CREAT | O_EXCL; a stale lock (its process is not
    alive on this host) is taken over with a note; release() removes it (only if it is still ours)."""

    def __init__(self, folder: Path):
        self.path = folder / ".lock"
        self.held = False

    def acquire(self) -> "Lock":
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = self._read()
                if other is None:
                    raise RunError(f"{self.path} exists but does not say which process holds it (it may be being "
                                   f"written); if no run is using {self.path.parent}, remove {self.path}") from None
                if other.get("host") != me["host"]:
                    raise RunError(f"{self.path.parent} is in use by process {other.get('pid')} on host "
                                   f"{other.get('host')} ({self.path}); if that run has ended, remove {self.path}") \
                        from None
                if _alive(other.get("pid")) and other.get("pid") != me["pid"]:
                    raise RunError(f"{self.path.parent} is in use by process {other['pid']} on this host "
                                   f"({self.path}); wait for it to finish or stop it, then resume") from None
                note(f"taking over the stale lock {self.path} of process {other.get('pid')} (no longer running)")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self.held = True
            return self
        raise RunError(f"{self.path}: another process took the lock at the same time; try again")

    def _read(self):
        try:
            info = json.loads(self.path.read_text())
            return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.held:
            info = self._read()
            if info is not None and info.get("pid") == os.getpid():
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            self.held = False


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------------


def _resume_target(out: Path, part: Path) -> None:
    """Refuse --resume on what is not an interrupted run, saying what it is."""
    if not part.exists():
        if out.is_dir() and (out / "run.json").is_file():
            raise RunError(f"{out} is a completed run (run.json is there and there is no {part.name}); nothing to "
                           "resume: its results are in it")
        if out.exists():
            raise RunError(f"nothing to resume: {out} is not a run folder (no run.json, and no {part.name} beside it)")
        raise RunError(f"nothing to resume: neither {out} nor {part} exists")
    if not part.is_dir():
        raise RunError(f"nothing to resume: {part} is a file, not a run folder")
    if out.exists():
        raise RunError(f"{out} and {part} both exist; a completed run is never resumed: move one of them away")
    missing = [n for n in ("scenario.toml", "run-start.json") if not (part / n).is_file()]
    if missing:
        raise RunError(f"nothing to resume: {part} holds no interrupted run (no {' and no '.join(missing)})")


def run(scenario: Scenario | None, out, *, resume: bool = False, checkpoint_every: float = 60.0,
        progress: bool | None = None, dtype=None, figures: bool = True, log=print, force: bool = False,
        _stop_after: int | None = None) -> Path:
    """Run `scenario` into the folder `out` (must not exist); with resume=True continue the
    interrupted run in `out.partial` (the scenario stored there is used, and checked against the hashes
    recorded when the run started). Returns the run folder.

    checkpoint_every: wall-clock seconds between checkpoints (0: after every chunk).
    progress: a progress bar on stderr (None: only on a terminal).
    force: start even when the work estimate is above estimate.LIMITS.
    """
    import jax.numpy as jnp

    out = Path(out)
    dtype = dtype or jnp.result_type(float)
    if out.name.endswith(".partial"):
        out = out.with_name(out.name[: -len(".partial")])
    part = partial_dir(out)
    t_start = time.perf_counter()
    if resume:
        _resume_target(out, part)
        try:
            meta = json.loads((part / "run-start.json").read_text())
            source, base = meta["source"], Path(meta["base"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunError(f"{part / 'run-start.json'} is truncated or corrupt ({type(err).__name__}: {err}); start "
                           f"the run again: paracrine run {part / 'scenario.toml'} --out NEW") from None
        lock = Lock(part).acquire()
        try:
            try:
                scenario = loads((part / "scenario.toml").read_text(), source=str(part / "scenario.toml"), base=base)
            except ScenarioError as err:
                raise RunError(f"{err} (the scenario stored in {part} was edited after the run started and no longer "
                               "loads; restore it)") from None
            scenario.source = source
            _verify_resume(part, meta, scenario, dtype)
            est = E.run_estimate(scenario.data, itemsize=np.dtype(dtype).itemsize)
            est.check(force or bool(meta.get("force")), say=note)
            return _execute(scenario, out, part, resume=True, dtype=dtype, checkpoint_every=checkpoint_every,
                            progress=progress, figures=figures, log=log, t_start=t_start, stop_after=_stop_after,
                            lock=lock, meta=meta, force=force or bool(meta.get("force")))
        finally:
            lock.release()
    if scenario is None:
        raise ValueError("run needs a scenario (or resume=True)")
    problem = E.out_problem(out)
    if problem:
        raise RunError(problem + (" (runs never overwrite)" if "not empty" in problem else ""))
    if part.exists():
        raise RunError(f"{part} holds an interrupted run; continue it with --resume {out} or remove it")
    est = E.run_estimate(scenario.data, itemsize=np.dtype(dtype).itemsize)
    est.check(force, say=note)
    made = E.make_parents(part)
    try:
        part.mkdir()
    except FileExistsError:
        raise RunError(f"{part} holds an interrupted run; continue it with --resume {out} or remove it") from None
    except OSError as err:
        E.remove_created(made)
        raise RunError(f"--out {out}: cannot create {part}: {err.strerror}; choose another --out") from None
    lock = Lock(part).acquire()
    try:
        (part / "checkpoints").mkdir()
        _atomic_text(part / "scenario.toml", scenario.text)
        meta = {"source": scenario.source,
                "base": str(Path(scenario.source).parent.resolve()) if Path(scenario.source).is_file() else str(Path.cwd()),
                "scenario_hash": _digest(scenario.data), "text_hash": hashlib.sha256(scenario.text.encode()).hexdigest()[:16],
                "scenario": _plain(scenario.data), "code": _code(dtype), "force": bool(force)}
        _atomic_text(part / "run-start.json", json.dumps(meta, indent=1))
        return _execute(scenario, out, part, resume=False, dtype=dtype, checkpoint_every=checkpoint_every,
                        progress=progress, figures=figures, log=log, t_start=t_start, stop_after=_stop_after,
                        lock=lock, meta=meta, force=force)
    except BaseException:
        if part.exists() and not any((part / "checkpoints").glob("*.npz")):
            lock.release()
            shutil.rmtree(part, ignore_errors=True)  # nothing to resume: leave nothing behind
            E.remove_created(made)
        raise
    finally:
        lock.release()


def _execute(scenario, out, part, *, resume, dtype, checkpoint_every, progress, figures, log, t_start, stop_after,
             lock, meta, force):
    import jax.numpy as jnp

    from paracrine import solver

    timings: dict = {}
    t0 = time.perf_counter()
    stored = part / "geometry.npz"
    if stored.is_file():  # a resumed run continues on exactly the stored mesh and sites
        arrays = _read_geometry_arrays(stored)
        _verify_geometry(stored, arrays, meta)
        geom, disc, sites = _geometry_from_arrays(arrays)
    elif meta.get("geometry_hashes"):
        raise RunError(f"{stored} is missing (the run recorded it when it started); the run cannot continue on "
                       f"exactly its mesh: start it again (paracrine run {part / 'scenario.toml'} --out NEW)")
    else:
        geom, disc, sites = make_geometry(scenario)
        if scenario.data["geometry"].get("kind") != "lv":   # a file or label image: counted once read
            est = E.run_estimate(scenario.data, nodes=int(np.prod(disc.mass.shape)), cells=_cell_count(geom),
                                 itemsize=np.dtype(dtype).itemsize, grid=disc.kind != "mesh")
            est.check(force, say=note)
    built = build(scenario, dtype=dtype, geometry_and_sites=(geom, disc, sites))
    if not stored.is_file():
        meta["geometry_hashes"] = save_geometry(stored, geom, sites)
        _atomic_text(part / "run-start.json", json.dumps(meta, indent=1))
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
    split = split_warnings(model, params, d["time"]["dt"])
    for w in split:
        note("warning: " + w)
    S, R = model.n_factors, model.n_regions
    share = _region_share(disc)
    W = region_volumes(disc, share)                # (N, R) region volume per node
    thresholds = np.array([d["factors"][f]["threshold"] or np.inf for f in model.factors])
    binding = params.binding is not None
    exposure = solver.Exposure(W, thresholds, dtype=dtype)  # AUC, peaks, time above: every step, in the loop
    observer = solver.observe.RegionStats(jnp.asarray(W, dtype), fields=True)   # what regions.csv and fields.h5 need

    # state, from the checkpoints on resume
    state = {"c": np.zeros(model.state_shape), "b": np.zeros(model.state_shape) if binding else np.zeros(0),
             "metrics": None, "budget": {}, "steps": 0, "stages": 0, "limited": np.zeros(S),
             "chunk": 0, "status": 0}
    records: list[dict] = []   # per chunk: stats (T_k, S, R, 4) and snapshots
    ckdir = part / "checkpoints"
    ck_files = sorted(ckdir.glob("[0-9]*.npz"))
    N = int(np.prod(model.state_shape[1:]))
    for n, f in enumerate(ck_files):
        try:
            loaded = _read_checkpoint(f, state["chunk"], chunks, model.state_shape, binding, S, R, N)
        except _BadCheckpoint as err:
            _set_aside(ck_files[n:])
            done = state["chunk"]
            note(f"{f} is truncated or corrupt ({err}); set aside as {f.name}.corrupt"
                 + (f" with the {len(ck_files) - n - 1} later one(s) (.skipped)" if n + 1 < len(ck_files) else "")
                 + (f"; resuming from the last good checkpoint {ck_files[n - 1].name} (chunk {done} of {len(chunks)})"
                    if n else "; no good checkpoint before it: starting over") + " and recomputing the rest")
            break
        new_records, state = loaded
        records.extend(new_records)
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
    beat = _Heartbeat(bar, progress, d["time"]["end"], len(chunks))
    try:
        for ci in range(state["chunk"], len(chunks)):
            i, j = chunks[ci]
            t0 = 0.0 if i == 0 else float(ts[i - 1])
            beat.start(ci, t0, float(ts[j - 1]))
            tc = time.perf_counter()
            # error control continues from the step the controller proposed at the end of the last chunk
            carry_h = {"dt0": state["h_next"]} if not fixed and state.get("h_next", 0.0) > 0 else {}
            glob = np.arange(i, j)
            snap = ((glob + 1) % every == 0) | (glob == len(ts) - 1) | np.isin(glob, map_idx)
            rows = np.flatnonzero(snap)
            # region statistics are reduced on the device at every save time; only they and the
            # snapshot rows that fields.h5 keeps are moved to the host
            sol = solver.simulate(model, params, t0=t0, t_end=float(ts[j - 1]), save_at=ts[i:j], method=stepper,
                                  c0=c, b0=b, budget=True, metrics=exposure, metrics0=acc, observe=observer,
                                  **steps_kw, **carry_h)
            stats = np.asarray(sol.ys["stats"], float)   # (T_k, S, R, 4)
            snaps = np.asarray(sol.ys["c"][rows], np.float32)
            snaps_b = np.asarray(sol.ys["b"][rows], np.float32) if binding else np.zeros((0,), np.float32)
            if first_chunk_s is None:
                first_chunk_s = time.perf_counter() - tc
            rec = {"stats": stats, "snap_idx": glob[snap], "snaps": snaps, "snaps_b": snaps_b}
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
            LOG.debug(f"chunk {ci + 1} of {len(chunks)}: {t0 / 3600:.4g}-{float(ts[j - 1]) / 3600:.4g} h, "
                      f"{int(sol.stats['steps'])} steps, {time.perf_counter() - tc:.2f} s")
            if bar is not None:
                bar.update(float(ts[j - 1] - t0) / 3600.0)
                bar.set_postfix_str(f"{state['steps'] / max(time.perf_counter() - t_sim, 1e-9):.0f} steps/s")
            beat.updated()
            if time.perf_counter() - last_ck >= checkpoint_every or ci == len(chunks) - 1:
                _checkpoint(ckdir, pending, state, c, b)
                pending, last_ck = [], time.perf_counter()
            if stop_after is not None and ci + 1 >= stop_after and ci + 1 < len(chunks):
                if bar is not None:
                    bar.close()
                raise KeyboardInterrupt(f"stopped after chunk {ci + 1} (test)")
    finally:
        beat.stop()
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
    m = report.write_all(part, result, figures=figures)
    precision = "double" if np.dtype(dtype) == np.float64 else "single"
    warnings = split + closure_warnings(m, precision)
    m["warnings"] = warnings      # in metrics.json too, next to the numbers they concern
    report._write_json(part / "metrics.json", m)
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
                "resumed": bool(resume), "geometry": _geometry_info(geom), "warnings": warnings, "timings": timings}
    run_info = _plain(run_info)
    run_info["units"] = report.run_json_units(run_info)   # the unit of every number, by dotted path
    _atomic_text(part / "run.json", json.dumps(run_info, indent=1, default=float))
    shutil.rmtree(ckdir)
    (part / "run-start.json").unlink()
    lock.release()
    if out.exists():
        out.rmdir()
    os.replace(part, out)
    return out


def _cell_count(geom) -> int:
    from paracrine import geometry

    return int(len(geom.cells)) if isinstance(geom, geometry.Mesh) else int((np.asarray(geom.labels) > 0).sum())


class _BadCheckpoint(Exception):
    pass


def _read_checkpoint(f: Path, done: int, chunks, state_shape, binding: bool, S: int, R: int, N: int):
    """(records, state) of one checkpoint that continues after `done` chunks; _BadCheckpoint (with what is
    wrong) when it does not read back whole and consistent."""
    try:
        with np.load(f, allow_pickle=False) as z:
            z = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise _BadCheckpoint(f"{type(err).__name__}: {err}") from None
    try:
        n = int(z["n_records"])
        chunk = int(z["chunk"])
        if chunk != done + n or not 0 < chunk <= len(chunks):
            raise _BadCheckpoint(f"it holds chunks {done + 1}-{done + n} but says it ends at chunk {chunk}")
        status = int(z["status"])
        shapes = {"c": tuple(state_shape), "b": tuple(state_shape) if binding else (0,), "limited": (S,)}
        for k, want in shapes.items():
            if z[k].shape != want:
                raise _BadCheckpoint(f"array {k} has shape {z[k].shape}, the run needs {want}")
        records = []
        for k in range(n):
            i, j = chunks[done + k]
            r = {"stats": z[f"stats{k}"], "snap_idx": z[f"snap_idx{k}"], "snaps": z[f"snaps{k}"],
                 "snaps_b": z[f"snaps_b{k}"]}
            K = len(r["snap_idx"])
            want = {"stats": (j - i, S, R, 4), "snaps": (K, S, N), "snaps_b": (K, S, N) if binding else (0,)}
            for key, w in want.items():
                if r[key].shape != w:
                    raise _BadCheckpoint(f"array {key}{k} has shape {r[key].shape}, the run needs {w}")
            records.append(r)
        metrics = {k[len("metrics."):]: z[k] for k in z if k.startswith("metrics.")}
        if not metrics:
            raise _BadCheckpoint("it holds no exposure metrics")
        if status == 0:   # a failed run may hold non-finite values; a successful one never
            arrays = [("c", z["c"]), ("b", z["b"])] + [(f"metrics.{k}", v) for k, v in metrics.items()
                                                       if np.issubdtype(v.dtype, np.floating)]
            arrays += [(f"{key}{k}", r[key]) for k, r in enumerate(records) for key in ("stats", "snaps", "snaps_b")]
            for key, a in arrays:
                if key.startswith("metrics.") and np.isinf(a).any() and not np.isnan(a).any():
                    continue   # peaks of factors never reached may be -inf
                if not np.isfinite(a).all():
                    raise _BadCheckpoint(f"array {key} holds NaN or infinite values")
        state = {"c": z["c"], "b": z["b"], "metrics": metrics, "budget": json.loads(str(z["budget"])),
                 "steps": int(z["steps"]), "stages": int(z["stages"]), "limited": z["limited"],
                 "chunk": chunk, "status": status}
        if "control" in z:   # the step controller's counts (error-controlled runs)
            state.update(rejected=int(z["control"][0]), error_max=float(z["control"][1]), h_max=float(z["control"][2]))
            if len(z["control"]) > 3 and float(z["control"][3]) > 0:
                state["h_next"] = float(z["control"][3])
    except KeyError as err:
        raise _BadCheckpoint(f"no array {err}") from None
    except (ValueError, TypeError) as err:
        raise _BadCheckpoint(f"{type(err).__name__}: {err}") from None
    return records, state


def _set_aside(files: list[Path]) -> None:
    """A bad checkpoint becomes NAME.corrupt, the later ones (which continue it) NAME.skipped: no longer read."""
    for k, f in enumerate(files):
        os.replace(f, f.with_name(f.name + (".corrupt" if k == 0 else ".skipped")))


class _Heartbeat:
    """A line on stderr when a chunk has run for HEARTBEAT_S without a visible update (the first chunk
    compiles the program and may take minutes), and every HEARTBEAT_S after; nothing with progress off."""

    def __init__(self, bar, progress, end: float, n_chunks: int):
        self.bar, self.enabled, self.end, self.n = bar, progress is not False, end, n_chunks
        self.last = time.perf_counter()
        self.what = None
        self.first = None
        self._stop = threading.Event()
        self._thread = None
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def start(self, ci: int, t0: float, t1: float) -> None:
        self.what = (ci, t0, t1, time.perf_counter())
        if self.first is None:
            self.first = ci

    def updated(self) -> None:
        self.last = time.perf_counter()

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, HEARTBEAT_S / 4)):
            now = time.perf_counter()
            if self.what is None or now - self.last < HEARTBEAT_S:
                continue
            ci, t0, t1, since = self.what
            msg = (f"paracrine run: simulating {t0 / 3600:.1f}-{t1 / 3600:.1f} h of {self.end / 3600:.1f} h "
                   f"(chunk {ci + 1} of {self.n}{', compiling the program first' if ci == self.first else ''}), "
                   f"{now - since:.0f} s in this chunk")
            if self.bar is not None and not getattr(self.bar, "disable", True):
                self.bar.write(msg, file=sys.stderr)
            else:
                print(msg, file=sys.stderr, flush=True)
            self.last = now

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


def _geometry_info(geom) -> dict:
    from paracrine import geometry

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
