"""Shared helpers of the benchmark scripts: timing, device description, JSON records."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def pin_threads(n: int | None) -> None:
    """Restrict this process to the first n cores; call before importing jax."""
    if n:
        cores = sorted(os.sched_getaffinity(0))[:n]
        os.sched_setaffinity(0, cores)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory in the heap instead of returning large blocks (> 32 MB,
    always mmap'd) to the system, as tcmalloc or jemalloc would: then a call's buffers reuse the last
    call's pages instead of page-faulting fresh ones. Call before importing jax; False where there
    is no glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2 ** 31 - 1))
    except (OSError, AttributeError):
        return False


def timeit(fn, *, repeat: int = 3, min_time: float = 0.2):
    """(first call seconds, median seconds of later calls); fn must block on its result."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times, spent = [], 0.0
    while len(times) < repeat or (spent < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return first, statistics.median(times)


def environment() -> dict:
    import jax
    import numpy as np

    dev = jax.devices()[0]
    info = {
        "platform": dev.platform,
        "device": getattr(dev, "device_kind", str(dev)),
        "device_count": jax.device_count(),
        "cpu_threads": len(os.sched_getaffinity(0)),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "x64": bool(jax.config.jax_enable_x64),
    }
    try:
        import jaxlib

        info["jaxlib"] = jaxlib.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    return info


def write_record(name: str, record: dict, out: Path | None = None) -> Path:
    out = Path(out) if out else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    env = record["environment"]
    path = out / f"{name}-{env['platform']}-{env['cpu_threads']}t-{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=float))
    os.replace(tmp, path)
    return path
