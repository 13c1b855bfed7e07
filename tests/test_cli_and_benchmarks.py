"""The command line and the benchmark scripts' quick modes."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_commands():
    from paracrine.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0


def test_demo_runs_and_budget_closes(capsys):
    from paracrine import demo

    out = demo.main(days=0.25, dt=300.0, mesh_size=0.6)
    assert out["status"] == "success"
    means = out["means"]
    assert np.all(np.isfinite(means)) and means.min() >= 0
    # the border zone holds the injection sites: highest mean concentration of both factors
    assert np.all(means[-1].argmax(axis=1) == list(out["regions"]).index("border"))
    assert "closes to" in capsys.readouterr().out


def test_demo_rejects_bad_options(capsys):
    from paracrine.cli import main

    with pytest.raises(SystemExit):
        main(["demo", "--dt", "-1"])
    assert "--dt must be > 0, got -1.0" in capsys.readouterr().err
    assert main(["demo", "--method", "euler", "--dt", "1e4", "--days", "1", "--mesh-size", "1.0"]) == 2
    assert "largest stable dt" in capsys.readouterr().err


def test_forward_benchmark_quick_writes_a_record(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "forward.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.glob("forward-*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["quick"] and rec["environment"]["jax"]
    methods = {(r["case"].split(",")[0], r["method"]) for r in rec["results"]}
    assert {"euler", "rkl2", "cn"} <= {m for _, m in methods}
    assert all(r["ok"] and r["run_s"] > 0 for r in rec["results"])
    # accuracy at the quick size is set by the coarse voxels (50 um), not by the steppers
    assert all(r["rel_error_vs_V1"] < 2e-2 for r in rec["results"])
    assert rec["baselines"] and rec["bandwidth"]["copy_GBps"] > 0
