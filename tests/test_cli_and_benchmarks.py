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


def test_python_m_paracrine_is_the_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "paracrine", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "fit", "sweep", "design", "mesh"):
        assert command in proc.stdout


def test_an_internal_error_says_so_and_keeps_the_traceback_in_a_log(monkeypatch, capsys, tmp_path):
    """A bug (not bad input) gives one paragraph naming a log file with the traceback, exit 70."""
    from paracrine import cli

    def boom(args):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(cli, "_dispatch", boom)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    assert cli.main(["mesh"]) == 70
    err = capsys.readouterr().err
    assert "internal error (ZeroDivisionError: deliberate)" in err and "report" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    logs = list(tmp_path.glob("paracrine-error-*.log"))
    assert len(logs) == 1 and "ZeroDivisionError: deliberate" in logs[0].read_text()
    assert str(logs[0]) in err


def quick_record(script: str, tmp_path, *extra: str) -> dict:
    """Run benchmarks/<script>.py --quick into tmp_path; the one JSON record it writes."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--quick", "--out", str(tmp_path),
                           *extra],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    files = list(tmp_path.glob(f"{script}-*.json"))
    assert len(files) == 1
    rec = json.loads(files[0].read_text())
    assert rec["quick"] and rec["environment"]["jax"]
    return rec


def test_forward_benchmark_quick_writes_a_record(tmp_path):
    # with the allocator option (glibc's mallopt; the record says whether it took)
    rec = quick_record("forward", tmp_path, "--keep-freed-memory")
    assert rec["keep_freed_memory"] is True
    methods = {(r["case"].split(",")[0], r["method"]) for r in rec["results"]}
    assert {"euler", "rkl2", "cn"} <= {m for _, m in methods}
    assert all(r["ok"] and r["run_s"] > 0 for r in rec["results"])
    # accuracy at the quick size is set by the coarse voxels (50 um), not by the steppers
    assert all(r["rel_error_vs_V1"] < 2e-2 for r in rec["results"])
    assert rec["baselines"] and rec["bandwidth"]["copy_GBps"] > 0


def test_operator_benchmark_quick_writes_a_record(tmp_path):
    """The mesh operator under three node orderings against SciPy's CSR matvec: same numbers, RCM
    narrows the shuffled matrix's bandwidth."""
    rec = quick_record("operator", tmp_path)
    rows = {(r["ordering"], r["impl"]): r for r in rec["rows"]}
    assert {o for o, _ in rows} == {"natural", "shuffled", "rcm"}
    assert all(r["ms_per_pass"] > 0 for r in rec["rows"])
    assert all(rows[(o, "scipy csr")]["max_rel_diff_vs_jax"] < 1e-5 for o in ("natural", "shuffled", "rcm"))
    assert rows[("rcm", "jax csr")]["bandwidth"] < rows[("shuffled", "jax csr")]["bandwidth"] / 5


def test_run_default_benchmark_quick_writes_a_record(tmp_path):
    rec = quick_record("run_default", tmp_path)
    assert rec["problem"]["geometry"]["nodes"] > 0
    run = rec["runs"][0]
    assert run["status"] == "success" and 0 < run["simulate_s"] < run["wall_s"]
    assert all(c < 1e-5 for c in run["budget_closure"].values())  # float32


def test_fit_benchmark_quick_writes_a_record(tmp_path):
    rec = quick_record("fit", tmp_path)
    assert rec["ours"]["max_rel_error"] < 1e-6 and rec["scipy_trf_fd"]["max_rel_error"] < 1e-6
    assert rec["forward_s"] > 0 and rec["gradient_ratio"] > 1 and rec["ours"]["passes"] > 0
    default = rec["gradient_modes"]["trbdf2, discrete adjoint"]   # backward solves to 1e-6
    assert 0 <= default["sensitivity_error_vs_tight"] < 1e-5


def test_design_benchmark_quick_writes_a_record(tmp_path):
    rec = quick_record("design", tmp_path)
    (case,) = rec["cases"]
    d = case["design"]
    assert d["converged"] and d["objective_exact_h"] >= d["objective_start_exact_h"] > 0
    assert case["grid"] and case["forward_s"] > 0 and case["gradient_ratio"] > 1
    assert "cell budget" in d["active"]


@pytest.mark.parametrize("command", ["fit", "sweep"])
def test_fit_and_sweep_keep_a_partial_folder_they_did_not_create(tmp_path, capsys, command):
    """An existing OUT.partial (an interrupted run's, or a user's) is left alone: the command refuses."""
    from paracrine.cli import main

    scen = ROOT / "examples" / "fit_yasuda.toml"
    keep = tmp_path / "out.partial"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    args = (["fit", str(scen), str(ROOT / "examples" / "data" / "yasuda2005_normal.csv"), "--free", "cells.washout"]
            if command == "fit" else ["sweep", str(scen), "--vary", "cells.dose=1e5,1e6"])
    assert main(args + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "out.partial exists" in err and (keep / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / "out").exists()


def test_fit_checks_the_data_file_before_building_the_mesh(tmp_path, capsys, monkeypatch):
    from paracrine import build
    from paracrine.cli import main

    def no_mesh(*a, **k):
        raise AssertionError("the mesh was built before the data file was checked")

    monkeypatch.setattr(build, "build", no_mesh)
    bad = tmp_path / "bad.csv"
    bad.write_text("time [h];quantity;where;value [cells]\n1;cells;tissue;5\n")
    assert main(["fit", str(ROOT / "examples" / "fit_yasuda.toml"), str(bad), "--free", "cells.washout",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "semicolon" in err and "mesh was built" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_quiet_and_verbose(tmp_path, capsys):
    """-q keeps notes off stderr (warnings stay), -v adds debug lines; the paracrine logger carries both."""
    import logging

    from paracrine import logs
    from paracrine.cli import main

    try:
        log = logs.logger("run")
        for verbosity, shown in ((-1, ["warning"]), (0, ["note", "warning"]), (1, ["debug", "note", "warning"])):
            logs.configure(verbosity)
            log.debug("d")
            log.info("n")
            log.warning("w")
            err = capsys.readouterr().err.splitlines()
            want = {"debug": "paracrine run: debug: d", "note": "paracrine run: n", "warning": "paracrine run: warning: w"}
            assert err == [want[k] for k in ("debug", "note", "warning") if k in shown], (verbosity, err)
        # the CLI's flags set the level before a command runs
        assert main(["-q", "run", "--print-default"]) == 0
        assert logs.LOG.level == logging.WARNING
        assert main(["-v", "run", "--print-default"]) == 0
        assert logs.LOG.level == logging.DEBUG
    finally:
        logs.configure(0)


def test_python_warnings_inside_a_command_are_its_own_warning_lines(monkeypatch, capsys):
    import warnings

    from paracrine import cli

    def warns(args):
        warnings.warn("cells with tags [7] (12 cells) are in no region; left out", UserWarning)
        return 0

    monkeypatch.setattr(cli, "_dispatch", warns)
    assert cli.main(["mesh"]) == 0
    assert capsys.readouterr().err == "paracrine mesh: warning: cells with tags [7] (12 cells) are in no region; left out\n"
    assert warnings.showwarning.__module__ == "warnings"   # restored after the command
