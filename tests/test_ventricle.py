"""The truncated-ellipsoid LV: volumes, AHA segments, infarct zones, boundaries, refinement."""

import numpy as np
import pytest

from paracrine import geometry
from paracrine.geometry import GeometryError

REF = geometry.lv_shape("reference")


@pytest.fixture(scope="module")
def lv_mesh():
    return geometry.lv_ellipsoid(mesh_size=1.0)


def test_shell_volume_matches_the_analytic_value(lv_mesh):
    # V(a, c) = pi a^2 [(h + c) - (h^3 + c^3) / (3 c^2)]: 3234.73 mm^3 for the Land reference
    assert REF.volume() == pytest.approx(3234.734353, rel=1e-9)
    assert lv_mesh.volumes.sum() == pytest.approx(REF.volume(), rel=5e-3)
    grid = geometry.lv_ellipsoid(grid_spacing=0.5, territory=None)
    assert sum(grid.region_volumes().values()) == pytest.approx(REF.volume(), rel=1e-2)


def test_species_shapes_are_scaled_references():
    rat = geometry.lv_shape("rat")
    assert rat.a_endo == pytest.approx(5.9 / 2) and rat.a_epi - rat.a_endo == pytest.approx(1.5)
    assert rat.c_endo / rat.a_endo == pytest.approx(17 / 7)
    mouse = geometry.lv_shape("mouse")
    assert mouse.c_endo + mouse.base == pytest.approx(7.4)  # endocardial length
    m = geometry.lv_ellipsoid("rat", mesh_size=0.5, territory=None)
    assert m.volumes.sum() == pytest.approx(rat.volume(), rel=1e-2)


def test_boundary_tags(lv_mesh):
    names = lv_mesh.boundary_names
    assert set(names) == {"endo", "epi", "base"}
    for name, (a, c) in {"endo": (REF.a_endo, REF.c_endo), "epi": (REF.a_epi, REF.c_epi)}.items():
        p = lv_mesh.points[np.unique(lv_mesh.facets[lv_mesh.facet_tags == names[name]])]
        q = (p[:, 0] ** 2 + p[:, 1] ** 2) / a ** 2 + p[:, 2] ** 2 / c ** 2
        np.testing.assert_allclose(q, 1.0, atol=1e-3)
    base = lv_mesh.points[np.unique(lv_mesh.facets[lv_mesh.facet_tags == names["base"]])]
    np.testing.assert_allclose(base[:, 2], REF.base, atol=1e-9)


def test_transmural_coordinate_is_zero_on_endo_and_one_on_epi():
    ang = np.linspace(0.1, 3.0, 7)
    endo = np.stack([REF.a_endo * np.sin(ang), 0 * ang, REF.c_endo * -np.cos(ang)], 1)
    epi = np.stack([REF.a_epi * np.sin(ang), 0 * ang, REF.c_epi * -np.cos(ang)], 1)
    np.testing.assert_allclose(REF.transmural(endo), 0.0, atol=1e-9)
    np.testing.assert_allclose(REF.transmural(epi), 1.0, atol=1e-9)
    mid = 0.5 * (endo + epi)
    assert np.all((REF.transmural(mid) > 0.3) & (REF.transmural(mid) < 0.7))


def test_aha_segments(lv_mesh):
    seg = geometry.aha_segments(lv_mesh.points[lv_mesh.cells].mean(1), REF)
    assert set(np.unique(seg)) == set(range(1, 18))
    r = 8.5  # mid-wall at z = 0
    probes = {  # (x, y, z) -> segment, with anterior +y, septal -x, inferior -y, lateral +x
        (0.0, r, 3.0): 1, (-r * 0.87, r * 0.5, 3.0): 2, (0.0, -r, 3.0): 4, (r * 0.87, r * 0.5, 3.0): 6,
        (0.0, r, -3.0): 7, (-r, 0.0, -3.0): 9, (r, 0.0, -3.0): 12,
        (0.0, 5.0, -12.0): 13, (-5.0, 0.0, -12.0): 14, (0.0, -5.0, -12.0): 15, (5.0, 0.0, -12.0): 16,
        (0.0, 0.0, -18.5): 17,
    }
    got = geometry.aha_segments(np.array(list(probes)), REF)
    assert got.tolist() == list(probes.values())


def test_lad_infarct_and_border_zone_width():
    grid = geometry.lv_ellipsoid(grid_spacing=0.5, territory="LAD", transmural=0.5, border_width=1.5)
    x = grid.centres()
    lab = grid.labels
    core, border, remote = (x[lab == grid.region_names[k]] for k in ("core", "border", "remote"))
    assert set(np.unique(geometry.aha_segments(core, REF))) <= {7, 8, 13, 14, 17}
    assert REF.transmural(core).max() <= 0.5
    from scipy.spatial import cKDTree

    tree = cKDTree(core)
    d_border, _ = tree.query(border)
    d_remote, _ = tree.query(remote)
    assert d_border.max() <= 1.5 and d_border.max() > 1.5 - 0.5  # the band is as wide as asked, to a voxel
    assert d_remote.min() > 1.5
    full = geometry.lv_ellipsoid(grid_spacing=0.5, territory="LAD", transmural=1.0)
    assert full.region_volumes()["core"] > 1.5 * grid.region_volumes()["core"]


def test_refinement_near_injection_sites():
    site = np.array([[8.5, 0.0, -4.0]])
    m = geometry.lv_ellipsoid(mesh_size=1.5, refine_at=site, refine_size=0.3, territory=None)
    c = m.points[m.cells].mean(1)
    edge = np.cbrt(6 * np.sqrt(2) * m.volumes)  # edge of the regular tetrahedron of the same volume
    near = np.linalg.norm(c - site, axis=1) < 0.6
    far = np.linalg.norm(c - site, axis=1) > 8
    assert near.sum() > 10
    assert np.median(edge[near]) < 0.5 and np.median(edge[far]) > 1.0
    assert len(m.unreferenced) == 0


@pytest.mark.parametrize("kw,match", [
    (dict(species="cat", mesh_size=1.0), r"unknown species 'cat'"),
    (dict(territory="LMCA", grid_spacing=1.0), r"unknown coronary territory 'LMCA'"),
    (dict(territory=[7, 18], grid_spacing=1.0), r"AHA segments 1-17"),
    (dict(transmural=1.5, grid_spacing=1.0), r"transmural extent 1.5"),
    (dict(mesh_size=1.0, grid_spacing=1.0), r"exactly one of mesh_size"),
    (dict(grid_spacing=-1.0), r"grid spacing -1.0"),
    (dict(mesh_size=1.0, refine_at=[[0, 0, 0]]), r"refine_at needs"),
])
def test_ventricle_errors(kw, match):
    with pytest.raises(GeometryError, match=match):
        geometry.lv_ellipsoid(**kw)


def test_bad_shape():
    with pytest.raises(GeometryError, match="endocardial < epicardial"):
        geometry.LVShape(7.0, 17.0, 6.0, 20.0, 5.0)


def test_voxel_lv_from_python_refuses_a_border_band_narrower_than_a_voxel():
    """The generator itself (not only the scenario and `paracrine mesh`) refuses a grid that would have
    no border zone, naming the width, the spacing and what to change."""
    import pytest

    from paracrine import geometry

    with pytest.raises(geometry.GeometryError, match=r"border_width 0\.4 mm is narrower than a voxel \(grid_spacing 0\.6 mm\)"):
        geometry.lv_ellipsoid("rat", grid_spacing=0.6, border_width=0.4)
    g = geometry.lv_ellipsoid("rat", grid_spacing=0.6, border_width=0.6)
    assert set(g.region_names) == {"remote", "border", "core"}
    geometry.lv_ellipsoid("rat", grid_spacing=0.6, border_width=0.4, territory=None)   # no infarct: no band needed
