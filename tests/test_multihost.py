"""The multi-host sweep as the README gives it: two processes on one machine joined by
`jax.distributed` (CPU collectives by gloo, two CPU devices each) give the one-process result."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from paracrine import build as B, calibrate, scenario as sc
from test_sweep import TEXT

ROOT = Path(__file__).resolve().parents[1]
VARY = {"cells.dose": [1e5, 1e6, 1e7], "VEGF.uptake.border": [1e-4, 1e-3]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_with_jax_distributed_equal_one(tmp_path):
    (tmp_path / "s.toml").write_text(TEXT)
    port = _free_port()
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env.pop("JAX_PLATFORMS", None)
    cmd = [sys.executable, str(ROOT / "examples" / "multihost_sweep.py"), "s.toml", "--double", "--out", "out.json",
           "--coordinator", f"localhost:{port}", "--processes", "2"]
    for name, values in VARY.items():
        cmd += ["--vary", f"{name}={','.join(map(str, values))}"]
    procs = [subprocess.Popen(cmd + ["--id", str(i)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=400) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "6 members on 4 devices in 2 processes" in outs[0][0]
    got = json.loads((tmp_path / "out.json").read_text())
    assert got["processes"] == 2 and got["devices"] == 4
    ref = calibrate.sweep(B.build(sc.loads(TEXT, source="s.toml")), VARY, shard=False)
    np.testing.assert_allclose(np.array(got["values"]), ref["values"], rtol=0)
    np.testing.assert_allclose(np.array(got["means_pg_per_mm3"]), ref["means"], rtol=1e-13, atol=0)
    for a, b in zip(got["metrics"], ref["metrics"]):
        assert a.keys() == b.keys()
        np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=1e-12)
