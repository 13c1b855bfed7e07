"""Geometry summary (quality measures against known shapes) and `paracrine mesh`."""

import json

import numpy as np
import pytest

from paracrine import geometry
from paracrine.cli import main


def test_quality_of_known_simplices():
    regular = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], float)
    s = geometry.summary(geometry.Mesh(regular, [[0, 1, 2, 3]]))
    assert s["worst_aspect_ratio"] == pytest.approx(1.0)
    assert s["obtuse_share"] == 0.0
    equilateral = np.array([[0, 0], [1, 0], [0.5, np.sqrt(3) / 2]])
    assert geometry.summary(geometry.Mesh(equilateral, [[0, 1, 2]]))["worst_aspect_ratio"] == pytest.approx(1.0)
    obtuse = np.array([[0, 0], [1, 0], [0.5, 0.1]])
    assert geometry.summary(geometry.Mesh(obtuse, [[0, 1, 2]]))["obtuse_share"] == 1.0
    box = geometry.summary(geometry.box_mesh([0, 0, 0], [1, 1, 1], 3))
    assert box["obtuse_share"] == 0.0  # Kuhn tetrahedra: right and acute dihedral angles only


def test_lv_summary_wall_thickness_and_quality():
    s = geometry.summary(geometry.lv_ellipsoid(mesh_size=1.0))
    w = s["wall_thickness_mm"]
    assert 2.7 < w["min"] <= w["median"] <= w["max"] < 3.3  # the reference wall is 3 mm (1 mm mesh)
    assert s["worst_aspect_ratio"] < 5.0
    assert set(s["boundaries"]) == {"endo", "epi", "base"}


def test_mesh_command_writes_everything(tmp_path, capsys):
    out = tmp_path / "rat"
    assert main(["mesh", "--species", "rat", "--size", "0.6", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["mesh.vtu", "sections.png", "summary.json"]
    info = json.loads((out / "summary.json").read_text())
    assert info["kind"] == "mesh" and set(info["region_volumes_mm3"]) == {"remote", "border", "core"}
    back = geometry.read(out / "mesh.vtu")
    assert back.region_names == {"remote": 1, "border": 2, "core": 3}
    nc = info["negative_couplings"]  # gmsh tetrahedra: obtuse dihedral angles, negative P1 couplings
    assert nc["count"] > 0 and 0 < nc["share"] < 1 and nc["worst_ratio"] < 0 and set(nc["by_region"]) == {
        "remote", "border", "core"}
    printed = capsys.readouterr().out
    assert "wall thickness" in printed and "negative couplings (not an M-matrix)" in printed
    # a grid, and a summary of an existing file
    assert main(["mesh", "--species", "rat", "--spacing", "0.3", "--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / "grid.npz").exists()
    assert main(["mesh", "--input", str(out / "mesh.vtu"), "--out", str(tmp_path / "again")]) == 0


def test_mesh_command_errors_leave_nothing(tmp_path, capsys):
    assert main(["mesh", "--species", "cat", "--size", "1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown species 'cat'" in capsys.readouterr().err
    assert main(["mesh", "--out", str(tmp_path / "y")]) == 2
    assert "give --size" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert main(["mesh", "--size", "1", "--out", str(tmp_path / "full")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
