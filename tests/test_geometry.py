import warnings

import numpy as np
import pytest

from paracrine import geometry
from paracrine.geometry import GeometryError, Grid, Mesh


def unit_triangles():
    pts = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    return pts, np.array([[0, 1, 2], [0, 2, 3]])


# ---------- Mesh validation: one test per error ----------

def test_nonfinite_point_is_named():
    pts, cells = unit_triangles()
    pts[2, 1] = np.nan
    with pytest.raises(GeometryError, match=r"point 2 has non-finite"):
        Mesh(pts, cells)


def test_index_out_of_range_is_named():
    pts, cells = unit_triangles()
    cells[1, 2] = 7
    with pytest.raises(GeometryError, match=r"cell 1 refers to node 7, allowed 0\.\.3"):
        Mesh(pts, cells)


def test_degenerate_cell_is_named_with_volume():
    pts = np.array([[0, 0], [1, 0], [2, 0], [0, 1]], float)
    with pytest.raises(GeometryError, match=r"cell 1 is degenerate: volume 0"):
        Mesh(pts, [[0, 1, 3], [0, 1, 2]])


def test_inverted_cell_is_fixed_or_rejected():
    pts, cells = unit_triangles()
    cells[1] = cells[1, [0, 2, 1]]
    m = Mesh(pts, cells)
    assert np.all(m.volumes > 0)
    np.testing.assert_allclose(m.volumes.sum(), 1.0)
    with pytest.raises(GeometryError, match=r"cell 1 is inverted: signed volume -5\.000e-01"):
        Mesh(pts, cells, orientation="error")


def test_inverted_tets_are_reoriented():
    m = geometry.box_mesh([0, 0, 0], [1, 1, 1], 2)
    cells = m.cells.copy()
    cells[::3] = cells[::3][:, [0, 2, 1, 3]]
    fixed = Mesh(m.points, cells)
    assert np.all(fixed.volumes > 0)
    np.testing.assert_allclose(fixed.volumes.sum(), 1.0)


def test_unreferenced_nodes_are_reported_and_pruned():
    pts, cells = unit_triangles()
    pts = np.vstack([pts, [[5.0, 5.0]]])
    with pytest.warns(UserWarning, match=r"1 nodes that no cell uses \(first: \[4\]\)"):
        m = Mesh(pts, cells)
    with pytest.raises(GeometryError, match="zero mass"):
        geometry.discretise(m)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.prune().n_nodes == 4


def test_wrong_cell_shape():
    pts, _ = unit_triangles()
    with pytest.raises(GeometryError, match=r"cells of a 2-D mesh must have shape \(m, 3\)"):
        Mesh(pts, [[0, 1, 2, 3]])


def test_unnamed_region_label():
    pts, cells = unit_triangles()
    with pytest.raises(GeometryError, match=r"region label 5 \(first at element 1\) has no name"):
        Mesh(pts, cells, [1, 5], {"remote": 1})


def test_facet_out_of_range():
    pts, cells = unit_triangles()
    with pytest.raises(GeometryError, match=r"facet 0 refers to node 9"):
        Mesh(pts, cells, facets=[[0, 9]], facet_tags=[1], boundary_names={"wall": 1})


# ---------- Grid validation ----------

def test_grid_bad_spacing():
    with pytest.raises(GeometryError, match=r"spacing along axis 1 is -1\.0"):
        Grid(np.ones((3, 3), int), (1.0, -1.0))


def test_grid_unnamed_label():
    labels = np.ones((3, 3), int)
    labels[2, 1] = 4
    with pytest.raises(GeometryError, match=r"label 4 \(first at voxel \(2, 1\)\) has no name"):
        Grid(labels, 0.1, region_names={"remote": 1})


def test_grid_negative_label_and_empty():
    labels = np.ones((3, 3), int)
    labels[0, 0] = -2
    with pytest.raises(GeometryError, match=r"label at voxel \(0, 0\) is -2"):
        Grid(labels, 0.1)
    with pytest.raises(GeometryError, match="no tissue voxels"):
        Grid(np.zeros((3, 3), int), 0.1)


def test_grid_region_label_zero_is_rejected():
    with pytest.raises(GeometryError, match=r"region 'bad' has label 0"):
        Grid(np.ones((2, 2), int), 0.1, region_names={"bad": 0, "ok": 1})


# ---------- generators ----------

@pytest.mark.parametrize("dim", [2, 3])
def test_box_mesh_volume_regions_and_boundaries(dim):
    lo, hi = np.zeros(dim), np.array([1.0, 2.0, 3.0][:dim])
    m = geometry.box_mesh(lo, hi, 4, regions={"remote": True, "core": geometry.halfspace(0, 0.5)})
    vols = m.region_volumes()
    np.testing.assert_allclose(sum(vols.values()), np.prod(hi))
    np.testing.assert_allclose(vols["core"], np.prod(hi) / 2)
    assert set(m.boundary_names) == {f"{a}{s}" for a in "xyz"[:dim] for s in ("min", "max")}
    # every boundary facet is tagged, and the tagged area of each side equals the face area
    assert np.all(np.isin(m.facet_tags, list(m.boundary_names.values())))
    assert np.all(m.volumes > 0)


def test_box_mesh_uncovered_cells_are_an_error():
    with pytest.raises(GeometryError, match="matches no region predicate"):
        geometry.box_mesh([0, 0], [1, 1], 2, regions={"left": geometry.halfspace(0, 0.5, above=False)})


def test_box_errors():
    with pytest.raises(GeometryError, match="lower < upper"):
        geometry.box_grid([0, 0], [1, -1], 3)
    with pytest.raises(GeometryError, match="n \\(cells per axis\\)"):
        geometry.box_mesh([0, 0], [1, 1], 0)


def test_box_grid_mask_and_regions():
    g = geometry.box_grid([0, 0, 0], [1, 1, 1], 10, regions={"remote": True, "border": geometry.halfspace(2, 0.5)},
                          mask=lambda x: x[..., 0] < 0.8)
    d = geometry.discretise(g)
    assert not d.homogeneous
    np.testing.assert_allclose(sum(g.region_volumes().values()), 0.8)
    np.testing.assert_allclose(d.mass.sum(), 0.8)


# ---------- locate ----------

def test_locate_mesh_weights_reproduce_point():
    m = geometry.box_mesh([0, 0, 0], [1, 1, 1], 3)
    d = geometry.discretise(m)
    x = np.array([[0.21, 0.33, 0.71], [1.0, 1.0, 1.0]])
    nodes, w = d.locate(x)
    np.testing.assert_allclose((m.points[nodes] * w[..., None]).sum(1), x, atol=1e-12)
    np.testing.assert_allclose(w.sum(1), 1.0)
    with pytest.raises(GeometryError, match=r"point 0 at \[1\.5, 0\.5, 0\.5\] lies outside the mesh"):
        d.locate([[1.5, 0.5, 0.5]])


def test_locate_grid_outside_tissue():
    g = geometry.box_grid([0, 0], [1, 1], 4, mask=lambda x: x[..., 0] < 0.5)
    d = geometry.discretise(g)
    idx, _ = d.locate([[0.1, 0.1]])
    assert idx[0, 0] == 0
    with pytest.raises(GeometryError, match="point 0 at \\[0.9, 0.1\\] lies outside the tissue"):
        d.locate([[0.9, 0.1]])


# ---------- I/O ----------

@pytest.mark.parametrize("ext", [".msh", ".vtu", ".xdmf"])
@pytest.mark.parametrize("dim", [2, 3])
def test_roundtrip_keeps_regions_and_boundaries(tmp_path, ext, dim):
    m = geometry.box_mesh(np.zeros(dim), np.ones(dim), 3,
                          regions={"remote": True, "border": geometry.halfspace(0, 0.3), "core": geometry.halfspace(0, 0.6)})
    r = geometry.read(geometry.write(tmp_path / f"m{ext}", m))
    np.testing.assert_array_equal(r.points, m.points)
    np.testing.assert_array_equal(r.cells, m.cells)
    np.testing.assert_array_equal(r.cell_regions, m.cell_regions)
    assert r.region_names == m.region_names
    assert r.boundary_names == m.boundary_names
    key = lambda f, t: sorted(zip(map(tuple, np.sort(f, 1)), t))  # noqa: E731
    assert key(r.facets, r.facet_tags) == key(m.facets, m.facet_tags)


def test_read_errors(tmp_path):
    with pytest.raises(GeometryError, match="unsupported mesh format '.stl'"):
        geometry.read(tmp_path / "a.stl")
    with pytest.raises(GeometryError, match="no such file"):
        geometry.read(tmp_path / "missing.vtu")
    bad = tmp_path / "bad.msh"
    bad.write_text("not a mesh")
    with pytest.raises(GeometryError, match="bad.msh: meshio could not read it"):
        geometry.read(bad)


def test_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import meshio

    m = geometry.box_mesh([0, 0], [1, 1], 2)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(meshio, "write", boom)
    with pytest.raises(RuntimeError):
        geometry.write(tmp_path / "m.vtu", m)
    assert list(tmp_path.iterdir()) == []
