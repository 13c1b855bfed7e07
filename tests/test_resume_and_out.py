"""Run folders that cannot go silently wrong: resume checks what it continues, one process per
folder, corrupt checkpoints set aside, clear answers for --resume and --out, no chdir."""

import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from paracrine import runner, scenario as sc
from paracrine.cli import main

from test_run import COARSE

ROOT = Path(__file__).resolve().parents[1]
SHORT = COARSE.replace('end = "12 h"', 'end = "6 h"').replace('maps = ["3 h", "12 h"]', 'maps = ["3 h"]')


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A coarse 6-h run (3 chunks) stopped after 2 checkpoints: (scenario path, OUT.partial)."""
    tmp = tmp_path_factory.mktemp("interrupted")
    path = tmp / "short.toml"
    path.write_text(SHORT)
    with pytest.raises(KeyboardInterrupt):
        runner.run(sc.load(path), tmp / "run", progress=False, checkpoint_every=0, _stop_after=2, figures=False)
    part = runner.partial_dir(tmp / "run")
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["00001.npz", "00002.npz"]
    assert not (part / ".lock").exists()   # released on KeyboardInterrupt
    return path, part


def _copy(interrupted, tmp_path, name="r") -> Path:
    out = tmp_path / name
    shutil.copytree(interrupted[1], runner.partial_dir(out))
    return out


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture(scope="module")
def resumed(interrupted, tmp_path_factory):
    """The interrupted run resumed (over a stale lock left by a dead process): (folder, stderr, cwd before)."""
    out = _copy(interrupted, tmp_path_factory.mktemp("resumed"))
    part = runner.partial_dir(out)
    (part / ".lock").write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    cwd = os.getcwd()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        done = runner.run(None, out, resume=True, progress=False, figures=False)
    return done, err.getvalue(), cwd


def test_resume_takes_over_a_stale_lock_and_keeps_the_working_directory(resumed):
    import meshio

    out, err, cwd = resumed
    assert "taking over the stale lock" in err and "(no longer running)" in err
    assert "estimate: ~1.5k nodes" in err
    assert os.getcwd() == cwd
    assert not (out / ".lock").exists() and not runner.partial_dir(out).exists()
    info = json.loads((out / "run.json").read_text())
    assert info["resumed"] is True and info["warnings"] == []
    text = (out / "fields.xdmf").read_text()
    assert ">fields.h5:/" in text and str(out) not in text   # the .h5 named relative to the folder
    with meshio.xdmf.TimeSeriesReader(str(out / "fields.xdmf")) as r:
        r.read_points_cells()
        assert [r.read_data(k)[0] for k in range(r.num_steps)] == [3.0, 6.0]


def test_truncated_checkpoint_is_named_and_the_run_resumes_from_the_last_good_one(interrupted, resumed, tmp_path):
    out = _copy(interrupted, tmp_path)
    ck = runner.partial_dir(out) / "checkpoints" / "00002.npz"
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 2])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        runner.run(None, out, resume=True, progress=False, figures=False)
    msg = err.getvalue()
    assert f"{ck} is truncated or corrupt (BadZipFile" in msg
    assert "resuming from the last good checkpoint 00001.npz (chunk 1 of 3) and recomputing the rest" in msg
    ref = resumed[0]
    assert (out / "regions.csv").read_text() == (ref / "regions.csv").read_text()
    assert json.loads((out / "metrics.json").read_text()) == json.loads((ref / "metrics.json").read_text())


def test_checkpoints_with_nan_missing_arrays_or_wrong_shapes_are_refused(interrupted, tmp_path):
    ckdir = interrupted[1] / "checkpoints"
    first = dict(np.load(ckdir / "00001.npz"))
    z = dict(np.load(ckdir / "00002.npz"))
    scen = sc.load(interrupted[0])
    chunks = runner.chunk_plan(sc.save_times(scen), 3600.0, 7200.0)
    shape = first["c"].shape
    args = (1, chunks, shape, True, 2, 3, int(np.prod(shape[1:])))
    path = tmp_path / "00002.npz"
    np.savez(path, **z)
    records, state = runner._read_checkpoint(path, *args)   # the good one reads back
    assert state["chunk"] == 2 and len(records) == 1
    for change, want in [({"c": np.full(shape, np.nan)}, "array c holds NaN"),
                         ({"stats0": z["stats0"][:1]}, "array stats0 has shape"),
                         ({"n_records": np.array(2)}, "holds chunks 2-3 but says it ends at chunk 2")]:
        np.savez(path, **{**z, **change})
        with pytest.raises(runner._BadCheckpoint, match=want):
            runner._read_checkpoint(path, *args)
    np.savez(path, **{k: v for k, v in z.items() if k != "snaps0"})
    with pytest.raises(runner._BadCheckpoint, match="no array 'snaps0'"):
        runner._read_checkpoint(path, *args)


def test_an_edited_scenario_is_refused_saying_what_changed(interrupted, tmp_path, capsys):
    out = _copy(interrupted, tmp_path)
    stored = runner.partial_dir(out) / "scenario.toml"
    before = sorted(p.name for p in runner.partial_dir(out).rglob("*"))
    stored.write_text(SHORT.replace('dose = "1e6 cells"', 'dose = "2e6 cells"'))
    assert main(["run", "--resume", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert f"paracrine run: {stored} was edited after the run started: injections[0].dose 1e+06 -> 2e+06" in err
    assert "Traceback" not in err and f"paracrine run {stored} --out NEW" in err
    assert sorted(p.name for p in runner.partial_dir(out).rglob("*")) == before   # no lock left, nothing added
    # a comment or a reformatting resolves to the same scenario: accepted
    meta = json.loads((runner.partial_dir(out) / "run-start.json").read_text())
    runner._verify_resume(runner.partial_dir(out), meta, sc.loads("# a note\n" + SHORT), np.float64)


def test_another_precision_is_refused(interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    with pytest.raises(runner.RunError, match=r"started with other code: precision \"double\" -> \"single\"; resume "
                                              r"with --precision double"):
        runner.run(None, out, resume=True, progress=False, dtype=np.float32)
    assert not (runner.partial_dir(out) / ".lock").exists()


def test_a_corrupt_or_changed_geometry_is_refused(interrupted, tmp_path, capsys):
    out = _copy(interrupted, tmp_path)
    geo = runner.partial_dir(out) / "geometry.npz"
    data = geo.read_bytes()
    geo.write_bytes(data[:1000])
    assert main(["run", "--resume", str(out), "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert f"paracrine run: {geo} is truncated or corrupt (BadZipFile" in err and "Traceback" not in err
    z = dict(np.load(interrupted[1] / "geometry.npz"))
    z["points"] = z["points"] * 1.001
    np.savez(geo, **z)
    with pytest.raises(runner.RunError, match=r"geometry.npz changed after the run started \(arrays points differ"):
        runner.run(None, out, resume=True, progress=False)


def test_a_run_folder_in_use_is_refused(interrupted, tmp_path):
    out = _copy(interrupted, tmp_path)
    lock = runner.partial_dir(out) / ".lock"
    held = json.dumps({"pid": os.getppid(), "host": socket.gethostname()})
    lock.write_text(held)
    with pytest.raises(runner.RunError, match=rf"is in use by process {os.getppid()} on this host"):
        runner.run(None, out, resume=True, progress=False)
    assert lock.read_text() == held
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(runner.RunError, match="in use by process 1 on host elsewhere .*if that run has ended, remove"):
        runner.run(None, out, resume=True, progress=False)
    lock.write_text("")
    with pytest.raises(runner.RunError, match="does not say which process holds it"):
        runner.run(None, out, resume=True, progress=False)


def test_resume_answers_what_the_folder_is(resumed, tmp_path, capsys):
    done = resumed[0]
    assert main(["run", "--resume", str(done)]) == 2
    assert f"{done} is a completed run (run.json is there and there is no {done.name}.partial); nothing to resume" \
        in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "none")]) == 2
    assert "nothing to resume: neither" in capsys.readouterr().err
    junk = tmp_path / "junk.partial"
    junk.mkdir()
    (junk / "notes.txt").write_text("mine")
    assert main(["run", "--resume", str(junk)]) == 2
    err = capsys.readouterr().err
    assert f"nothing to resume: {junk} holds no interrupted run (no scenario.toml and no run-start.json)" in err
    assert (junk / "notes.txt").read_text() == "mine" and sorted(os.listdir(junk)) == ["notes.txt"]


def _commands(tmp_path, out):
    scen = tmp_path / "s.toml"
    scen.write_text(SHORT)
    ex = ROOT / "examples"
    return {"run": ["run", str(scen), "--out", out],
            "mesh": ["mesh", "--size", "0.7", "--out", out],
            "fit": ["fit", str(ex / "fit_yasuda.toml"), str(ex / "data" / "yasuda2005_normal.csv"), "--free",
                    "cells.washout", "--out", out],
            "sweep": ["sweep", str(scen), "--vary", "cells.dose=1e5,1e6", "--out", out],
            "design": ["design", str(scen), "--objective", "auc:VEGF", "--control", "injection[0].dose=1e5,2e6 cells",
                       "--out", out]}


@pytest.mark.parametrize("command", ["run", "mesh", "fit", "sweep", "design"])
def test_out_that_cannot_be_made_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command):
    from paracrine import estimate

    (tmp_path / "afile").write_text("mine")
    locked = tmp_path / "locked"
    locked.mkdir()
    commands = lambda out: _commands(tmp_path, str(out))[command]  # noqa: E731
    commands(tmp_path)
    real = os.access
    monkeypatch.setattr(estimate.os, "access", lambda p, m: False if Path(p) == locked else real(p, m))
    for out, want in [(tmp_path / "afile", f"--out {tmp_path / 'afile'} is an existing file"),
                      (tmp_path / "afile" / "sub", f"--out {tmp_path / 'afile' / 'sub'}: {tmp_path / 'afile'} is a "
                                                   "file, not a folder"),
                      (locked / "new" / "out", f"--out {locked / 'new' / 'out'}: the folder {locked} is not writable")]:
        before = sorted(p.name for p in tmp_path.rglob("*"))
        assert main(commands(out)) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"paracrine {command}: ") and want in err and "Traceback" not in err, err
        assert "estimate" not in err   # refused before the estimate, before any work
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
        assert (tmp_path / "afile").read_text() == "mine"
