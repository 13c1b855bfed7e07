"""Meshes as they come: any meshio volume format with a named integer cell-tag array and a region
map, grids as VTK image data (.vti), the grid.npz round trip, and the voxel LV's border band.

Small meshes written in tmp_path with meshio; no simulations (the discretisation arrays are
compared instead: equal arrays give equal simulations).
"""

import base64
import json
import warnings
import xml.etree.ElementTree as ET
import zlib

import meshio
import numpy as np
import pytest

from paracrine import geometry
from paracrine import scenario as sc
from paracrine.cli import main
from paracrine.geometry import GeometryError
from paracrine.units import ScenarioError

TAGS = {"remote": 10, "border": 20, "core": 30}   # the file's own tag values


def heart():
    """A 10 x 10 x 12 mm box with three regions stacked in z (remote 600, border 200, core 400 mm^3)."""
    return geometry.box_mesh([-5, -5, -8], [5, 5, 4], [4, 4, 6],
                             regions={"remote": True, "border": geometry.halfspace(2, -2.0),
                                      "core": geometry.halfspace(2, 0.0)})


def tagged(m, dtype=np.int32, extra=None):
    """The mesh as a plain meshio mesh: a "region" cell array of TAGS, no names, no facets."""
    inv = {v: TAGS[k] for k, v in m.region_names.items()}
    tags = np.array([inv[r] for r in m.cell_regions], dtype)
    data = {"region": [tags]}
    data.update(extra or {})
    return meshio.Mesh(m.points, [("tetra", m.cells)], cell_data=data)


def same_discretisation(a, b):
    da, db = geometry.discretise(a), geometry.discretise(b)
    assert da.regions == db.regions
    for key in ("mass", "mass_region", "edges", "couplings"):
        np.testing.assert_allclose(np.asarray(getattr(da, key)), np.asarray(getattr(db, key)), rtol=1e-12, atol=0,
                                   err_msg=key)


@pytest.mark.parametrize("suffix", [".vtu", ".vtk", ".xdmf", ".med", ".mesh"])
def test_tag_array_and_region_map_equal_the_msh_path(tmp_path, suffix):
    m = heart()
    assert set(np.unique(m.cell_regions)) == {1, 2, 3}
    msh = geometry.read(geometry.write(tmp_path / "heart.msh", m))
    p = tmp_path / f"heart{suffix}"
    tagged(m).write(p)
    regions = {"remote": TAGS["remote"], "border": [TAGS["border"]], "core": TAGS["core"]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # every tag is in a region: no warning
        r = geometry.read(p, regions=regions)   # "region" is the only integer cell array
    assert r.region_names == msh.region_names == {"remote": 1, "border": 2, "core": 3}
    v_msh, v = msh.region_volumes(), r.region_volumes()
    assert v == pytest.approx(v_msh, rel=1e-12) and [v_msh[k] for k in TAGS] == pytest.approx([600.0, 200.0, 400.0])
    same_discretisation(msh, r)
    if suffix == ".mesh":
        return   # medit keeps one integer array of its own (medit:ref), found without a name
    # named explicitly, and next to another (float) cell array
    q = tmp_path / f"two{suffix}"
    tagged(m, extra={"fibre": [np.linspace(0, 1, m.n_cells)]}).write(q)
    same_discretisation(msh, geometry.read(q, regions=regions, tags="region"))
    # without a map, the tags are regions named by their values
    assert geometry.read(p).region_names == {"tissue10": 10, "tissue20": 20, "tissue30": 30}


def test_whole_floats_are_tags_and_lists_merge_regions(tmp_path):
    m = heart()
    p = tmp_path / "f.vtu"
    tagged(m, dtype=np.float64).write(p)
    r = geometry.read(p, regions={"remote": [10, 20], "core": 30}, tags="region")
    v = m.region_volumes()
    assert r.region_volumes() == pytest.approx({"remote": v["remote"] + v["border"], "core": v["core"]})


def test_unused_tags_are_warned_once_and_left_out(tmp_path):
    m = heart()
    mm = tagged(m)
    top = m.points[m.cells].mean(axis=1)[:, 2] > 2.0   # a cavity-like slab tagged 99, and 7 for 3 cells
    mm.cell_data["region"][0][top] = 99
    mm.cell_data["region"][0][:3] = 7
    p = tmp_path / "cavity.vtu"
    mm.write(p)
    with pytest.warns(UserWarning) as rec:
        r = geometry.read(p, regions=TAGS)
    msgs = [str(w.message) for w in rec if "no region" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert f"7 (3 cells), 99 ({int(top.sum())} cells)" in msgs[0] and "left out" in msgs[0] and str(p) in msgs[0]
    assert r.n_cells == m.n_cells - int(top.sum()) - 3
    assert sum(r.region_volumes().values()) == pytest.approx(m.volumes.sum() - m.volumes[top].sum()
                                                             - m.volumes[:3].sum())
    assert r.n_nodes < m.n_nodes   # nodes of the dropped cells only are pruned


def test_empty_region_is_refused_with_the_file_s_tags(tmp_path):
    p = tmp_path / "h.vtu"
    tagged(heart()).write(p)
    with pytest.raises(GeometryError, match=r"h\.vtu: regions\.border = 2: no cell has this tag, so region 'border' "
                                            r"would be empty; the values of the file's 'region' array: 10 \(\d+ cells\), "
                                            r"20 \(\d+ cells\), 30"):
        geometry.read(p, regions={"remote": 10, "border": 2, "core": 30})
    with pytest.raises(GeometryError, match=r"regions\.core = \[4, 5\]: no cell has any of these tags"):
        geometry.read(p, regions={"remote": 10, "core": [4, 5]})


def test_bad_tags_and_maps_are_refused(tmp_path):
    m = heart()
    p = tmp_path / "frac.vtu"
    t = np.array(tagged(m).cell_data["region"][0], float)
    t[5] = 1.5
    meshio.Mesh(m.points, [("tetra", m.cells)], cell_data={"region": [t]}).write(p)
    with pytest.raises(GeometryError, match=r"frac\.vtu: tag array 'region' holds float64 values that are not "
                                            r"integers: cell 5 has 1\.5"):
        geometry.read(p, regions=TAGS, tags="region")
    with pytest.raises(GeometryError, match=r"no integer cell-data array .* name the tag array with tags"):
        geometry.read(p, regions=TAGS)   # a float array is not taken for tags unless named
    q = tmp_path / "two.vtu"
    tagged(m, extra={"other": [np.zeros(m.n_cells, np.int32)]}).write(q)
    with pytest.raises(GeometryError, match=r"2 integer cell-data arrays \('region', 'other'\) .* tags"):
        geometry.read(q, regions=TAGS)
    with pytest.raises(GeometryError, match=r"no cell-data array 'regoin' .* 'region' \(int32\), 'other' \(int32\)"):
        geometry.read(q, regions=TAGS, tags="regoin")
    for bad, words in (({"remote": True}, "remote = True"), ({"remote": 1.0}, "remote = 1.0"),
                       ({"remote": []}, r"remote = \[\]"), ({"remote": -1}, "remote = -1"),
                       ({"a": 10, "b": [20, 10]}, "tag 10 is given to both 'a' and 'b'"), ({}, r"regions = \{\}")):
        with pytest.raises(GeometryError, match=words):
            geometry.read(q, regions=bad, tags="region")


def test_gmsh_names_stay_and_a_map_overrides_them(tmp_path):
    m = heart()
    p = geometry.write(tmp_path / "h.msh", m)
    r = geometry.read(p, regions={"healthy": [1, 2], "scar": 3})
    assert r.region_names == {"healthy": 1, "scar": 2}
    assert r.boundary_names == m.boundary_names   # gmsh boundaries kept
    v = m.region_volumes()
    assert r.region_volumes()["healthy"] == pytest.approx(v["remote"] + v["border"])


# ---------- grids as VTK image data ----------

def _vti_array(path):
    """The region labels of a .vti decoded here from its XML (zlib, UInt64 headers), not by the reader."""
    root = ET.parse(path).getroot()
    assert root.get("type") == "ImageData" and root.get("compressor") == "vtkZLibDataCompressor"
    img = root.find("ImageData")
    ext = [int(v) for v in img.get("WholeExtent").split()]
    e = img.find("Piece/CellData/DataArray")
    assert e.get("Name") == "region" and e.get("type") == "Int32" and e.get("format") == "binary"
    text = e.text.strip()
    head = np.frombuffer(base64.b64decode(text[:44]), "<u8")   # 4 words (32 bytes): 1 block, its sizes
    assert head[0] == 1
    data = np.frombuffer(zlib.decompress(base64.b64decode(text[44:])), "<i4")
    assert len(zlib.compress(data.tobytes(), 6)) == head[3]
    assert data.nbytes == head[1] == head[2]
    names = {d.get("Name"): int(d.text) for d in img.find("FieldData")}
    return img, ext, data, names


@pytest.mark.parametrize("dim", [3, 2])
def test_vti_written_and_read_back_equal(tmp_path, dim):
    if dim == 3:
        g = geometry.lv_ellipsoid("rat", grid_spacing=0.5)
    else:
        from test_images import synthetic

        lab, h, _ = synthetic(40, 0.3)
        g = geometry.from_labels(lab, [h, 0.2], origin=[-6.0, 1.5])
    p = geometry.write(tmp_path / "g.vti", g)
    img, ext, data, names = _vti_array(p)
    n = list(g.shape) + [0] * (3 - dim)
    assert ext == [0, n[0], 0, n[1], 0, n[2]]
    h = np.array(list(g.spacing) + [1.0] * (3 - dim))
    corner = np.array(list(np.asarray(g.origin) - np.asarray(g.spacing) / 2) + [0.0] * (3 - dim))
    np.testing.assert_allclose([float(v) for v in img.get("Spacing").split()], h)
    np.testing.assert_allclose([float(v) for v in img.get("Origin").split()], corner)   # a voxel's corner
    np.testing.assert_array_equal(data, g.labels.ravel(order="F"))   # x fastest, as VTK stores cells
    assert names == g.region_names
    r = geometry.read(p, check_size=False)
    assert isinstance(r, geometry.Grid) and r.region_names == g.region_names and r.spacing == pytest.approx(g.spacing)
    np.testing.assert_allclose(r.origin, g.origin, atol=1e-12)
    np.testing.assert_array_equal(r.labels, g.labels)
    assert r.region_volumes() == pytest.approx(g.region_volumes())


# A 5 x 6 x 7 point image with labels 4 (a block) and 7 (one voxel), written by VTK 9.7
# (vtkXMLImageDataWriter: appended raw data, zlib, UInt32 headers, as ParaView saves by default).
VTK_POINT_FILE = (
    "PFZUS0ZpbGUgdHlwZT0iSW1hZ2VEYXRhIiB2ZXJzaW9uPSIwLjEiIGJ5dGVfb3JkZXI9IkxpdHRsZUVuZGlhbiIgaGVhZGVyX3R5cGU9IlVJbn"
    "QzMiIgY29tcHJlc3Nvcj0idnRrWkxpYkRhdGFDb21wcmVzc29yIj4KICA8SW1hZ2VEYXRhIFdob2xlRXh0ZW50PSIwIDQgMCA1IDAgNiIgT3Jp"
    "Z2luPSIxIDIgMyIgU3BhY2luZz0iMC41IDAuNSAwLjUiIERpcmVjdGlvbj0iMSAwIDAgMCAxIDAgMCAwIDEiPgogICAgPFBpZWNlIEV4dGVudD"
    "0iMCA0IDAgNSAwIDYiICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgID4KICAgICAgPFBvaW50"
    "RGF0YT4KICAgICAgICA8RGF0YUFycmF5IHR5cGU9IkludDE2IiBOYW1lPSJsYWJlbHMiIGZvcm1hdD0iYXBwZW5kZWQiIFJhbmdlTWluPSIwIi"
    "AgICAgICAgICAgICAgICAgICAgUmFuZ2VNYXg9IjciICAgICAgICAgICAgICAgICAgICBvZmZzZXQ9IjAiICAgICAgICAgICAgICAgICAgIC8+"
    "CiAgICAgIDwvUG9pbnREYXRhPgogICAgICA8Q2VsbERhdGE+CiAgICAgIDwvQ2VsbERhdGE+CiAgICA8L1BpZWNlPgogIDwvSW1hZ2VEYXRhPg"
    "ogIDxBcHBlbmRlZERhdGEgZW5jb2Rpbmc9InJhdyI+CiAgIF8BAAAAAIAAAKQBAAAdAAAAeF5jYKAOYAFDwixCetkp0EuJvfTUSyoAAMqwAPQK"
    "ICA8L0FwcGVuZGVkRGF0YT4KPC9WVEtGaWxlPgo="
)


def test_vti_from_vtk_with_point_data_and_a_region_map(tmp_path):
    p = tmp_path / "vtk.vti"
    p.write_bytes(base64.b64decode(VTK_POINT_FILE))
    lab = np.zeros((5, 6, 7), np.int64)
    lab[1:4, 1:5, 1:6] = 4
    lab[2, 2, 2] = 7
    g = geometry.read(p, check_size=False)
    np.testing.assert_array_equal(g.labels, lab)
    assert g.origin == (1.0, 2.0, 3.0) and g.spacing == (0.5, 0.5, 0.5)   # point data: points are voxel centres
    with pytest.warns(UserWarning, match=r"'labels' array in no region .*: 7 \(1 voxels\)"):
        r = geometry.read(p, regions={"remote": 4}, check_size=False)
    assert r.region_names == {"remote": 1} and (r.labels > 0).sum() == (lab == 4).sum()


# ---------- paracrine mesh: grid.npz, grid.vti, --input with --length-unit and --regions ----------

def test_grid_npz_and_vti_round_trip_keep_every_region(tmp_path, capsys):
    out = tmp_path / "g"
    assert main(["mesh", "--species", "rat", "--spacing", "0.4", "--out", str(out)]) == 0
    assert {"grid.npz", "grid.vti"} <= {p.name for p in out.iterdir()}
    made = geometry.lv_ellipsoid("rat", grid_spacing=0.4)
    assert set(made.region_names) == {"remote", "border", "core"}
    for back in (geometry.read(out / "grid.npz"), geometry.read_labels(out / "grid.npz"),
                 geometry.read(out / "grid.vti")):
        assert back.region_names == made.region_names   # remote included (label 1 is not the EMIDEC cavity)
        np.testing.assert_array_equal(back.labels, made.labels)
        assert back.region_volumes() == pytest.approx(made.region_volumes())
    # and back in through a scenario, as geometry.file and as geometry.labels
    for key in ("file", "labels"):
        s = sc.loads(_scenario(f'{key} = "g/grid.npz"'), base=tmp_path)
        assert s.regions == ("remote", "border", "core")
    # a grid fed to paracrine mesh --input is written again as it was
    assert main(["mesh", "--input", str(out / "grid.vti"), "--out", str(tmp_path / "again")]) == 0
    again = geometry.read(tmp_path / "again" / "grid.npz")
    np.testing.assert_array_equal(again.labels, made.labels)
    info = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert info["vtk_file"] == "grid.vti" and set(info["region_volumes_mm3"]) == {"remote", "border", "core"}


def test_mesh_input_with_length_unit_regions_and_tags(tmp_path, capsys):
    m = heart()
    mm = tagged(m)
    mm.points = mm.points * 1e-3   # metres
    top = m.points[m.cells].mean(axis=1)[:, 2] > 2.0
    mm.cell_data["region"][0][top] = 99
    p = tmp_path / "heart_m.vtu"
    mm.write(p)
    out = tmp_path / "o"
    rc = main(["mesh", "--input", str(p), "--length-unit", "m", "--tags", "region",
               "--regions", "remote=10,border=20,core=30", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "paracrine mesh: warning:" in err and f"99 ({int(top.sum())} cells)" in err
    info = json.loads((out / "summary.json").read_text())
    v = m.region_volumes()
    assert info["region_volumes_mm3"] == pytest.approx({"remote": v["remote"], "border": v["border"],
                                                        "core": v["core"] - m.volumes[top].sum()})
    back = geometry.read(out / "mesh.vtu")
    assert back.region_names == {"remote": 1, "border": 2, "core": 3}
    np.testing.assert_allclose(back.points.max(axis=0), m.points[np.unique(m.cells[~top])].max(axis=0))
    # merged tags, and the errors
    rc = main(["mesh", "--input", str(p), "--length-unit", "m", "--regions", "tissue=10+20+30+99",
               "--out", str(tmp_path / "one")])
    assert rc == 0 and json.loads((tmp_path / "one" / "summary.json").read_text())["region_volumes_mm3"][
        "tissue"] == pytest.approx(m.volumes.sum())
    capsys.readouterr()
    for args, words in ((["--regions", "remote=10,border"], "'border' is not NAME=TAG"),
                        (["--regions", "remote=10,border=2"], "regions.border = 2: no cell has this tag"),
                        ([], "far too small for a heart"),
                        (["--tags", "nope", "--length-unit", "m"], "no cell-data array 'nope'")):
        rc = main(["mesh", "--input", str(p), *args, "--out", str(tmp_path / "bad")])
        err = capsys.readouterr().err
        assert rc == 2 and words in err and "Traceback" not in err, err
        assert not (tmp_path / "bad").exists()
    rc = main(["mesh", "--species", "rat", "--size", "1", "--regions", "a=1", "--out", str(tmp_path / "bad")])
    assert rc == 2 and "--regions applies to a mesh or image file given with --input" in capsys.readouterr().err


# ---------- the scenario keys ----------

def _scenario(geometry_lines: str) -> str:
    text = sc.default_text()
    start, end = text.index("[geometry]"), text.index("\n[", text.index("[geometry]") + 1)
    body = text[:start] + "[geometry]\n" + geometry_lines + "\n" + text[end:]
    return "\n".join(line for line in body.splitlines() if not line.startswith("route") and "sites" not in line)


def test_scenario_tags_and_regions(tmp_path):
    from paracrine import build

    m = heart()
    mm = tagged(m)
    mm.cell_data["region"][0][:4] = 5
    mm.write(tmp_path / "heart.vtu")
    text = _scenario('file = "heart.vtu"\ntags = "region"\nregions = {remote = 10, border = [20], core = 30}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # checked here, warned once: when the run builds the geometry
        s = sc.loads(text, base=tmp_path)
    assert s.regions == ("remote", "border", "core")
    assert s.data["geometry"]["regions"] == {"remote": 10, "border": [20], "core": 30}
    assert s.data["geometry"]["tags"] == "region"
    with pytest.warns(UserWarning, match=r"5 \(4 cells\)"):
        geom, disc, _ = build.make_geometry(s)   # the build reads the file with the same map
    assert geom.n_cells == m.n_cells - 4 and tuple(disc.regions) == s.regions
    bad = {
        'regions = {remote = 1.5}': r"geometry\.regions\.remote = 1\.5; allowed: an integer tag >= 0",
        'regions = {remote = true}': r"geometry\.regions\.remote = True; allowed",
        'regions = {remote = [10, 20], core = [20]}': r"geometry\.regions\.core = \[20\]: tag 20 is also in region "
                                                      r"'remote'",
        'regions = {"bad name" = 1}': r"geometry\.regions\.bad name: .* not allowed as a region name",
        'regions = 3': r"geometry\.regions = 3; allowed: a table",
        'tags = 3': r"geometry\.tags = 3; allowed: the name of the mesh file's integer cell-data array",
        'regions = {remote = 10, border = 7}': r"geometry\.file = 'heart\.vtu': .*regions\.border = 7: no cell has",
        'tags = "nope"': r"no cell-data array 'nope'",
    }
    for line, words in bad.items():
        with pytest.raises(ScenarioError, match=words):
            sc.loads(_scenario(f'file = "heart.vtu"\n{line}'), base=tmp_path)
    with pytest.raises(ScenarioError, match=r"geometry\.regions = .*only with geometry\.file"):
        sc.loads(_scenario('species = "rat"\nregions = {remote = 1}'), base=tmp_path)
    assert "regions" in sc.GEOMETRY_KEYS and "tags" in sc.GEOMETRY_KEYS


# ---------- a voxel LV whose border band is narrower than a voxel ----------

def test_voxel_lv_without_border_band_is_refused(tmp_path, capsys):
    # the criterion: a band of one voxel spacing keeps a border zone, anything narrower loses it
    assert "border" in geometry.lv_ellipsoid("rat", grid_spacing=0.6, border_width=0.6).region_names
    with pytest.raises(geometry.GeometryError, match="narrower than a voxel"):   # the generator refuses too
        geometry.lv_ellipsoid("rat", grid_spacing=0.6, border_width=0.59)
    geometry.validate.border_band(0.6, 0.6)
    with pytest.raises(GeometryError, match=r"border_width 0\.59 mm is narrower than a voxel"):
        geometry.validate.border_band(0.6, 0.59)
    with pytest.raises(ScenarioError, match=r"geometry\.border_width 0\.5 mm \(the default, a third of the wall\) is "
                                            r"narrower than a voxel \(geometry\.grid_spacing 0\.6 mm\).*no border zone; "
                                            r"allowed: geometry\.border_width >= 0\.6 mm, or a geometry\.grid_spacing "
                                            r"<= 0\.5 mm"):
        sc.loads(_scenario('species = "rat"\ngrid_spacing = "0.6 mm"'))
    with pytest.raises(ScenarioError, match=r"geometry\.border_width 0\.3 mm is narrower"):
        sc.loads(_scenario('species = "rat"\ngrid_spacing = "0.6 mm"\nborder_width = "0.3 mm"'))
    sc.loads(_scenario('species = "rat"\ngrid_spacing = "0.5 mm"'))   # a band of one voxel: accepted
    rc = main(["mesh", "--species", "rat", "--spacing", "0.6", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "--border-width 0.5 mm (the default, a third of the wall) is narrower than a voxel (--spacing " \
                       "0.6 mm)" in err, err
    assert not (tmp_path / "o").exists()
