"""Bad geometry inputs are refused with one message naming the file, the element and the value.

Each bad mesh is written with meshio in tmp_path, then read through `geometry.read` and through
`paracrine mesh --input` in-process (exit status 2, the message on stderr, no traceback, no
output folder). No simulations.
"""

import os
import types

import meshio
import numpy as np
import pytest

from paracrine import geometry
from paracrine.geometry import GeometryError, validate
from paracrine.cli import main

FORMATS = {".vtu": {}, ".msh": {"file_format": "gmsh22", "binary": False}, ".xdmf": {}}


def box(n=3, size=4.0):
    """A tetrahedral box mesh (mm) as plain points and cells."""
    m = geometry.box_mesh([0, 0, 0], [size, size, size], n)
    return m.points.copy(), m.cells.copy()


def write(path, points, cells, kind="tetra"):
    blocks = [(kind, np.asarray(cells))] if len(cells) else []
    meshio.write(path, meshio.Mesh(np.asarray(points, float), blocks), **FORMATS[path.suffix])
    return path


def cli_refuses(tmp_path, capsys, p, *words, flag="--input", extra=()):
    out = tmp_path / "o"
    capsys.readouterr()  # what writing the bad file printed
    rc = main(["mesh", flag, str(p), "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(p) in err and "Traceback" not in err
    for w in words:
        assert w in err, err
    assert len(err.strip().splitlines()) == 1  # one paragraph
    assert not out.exists()
    return err


# ---------- bad meshes: topology, indices, emptiness, dimension ----------

def dup_node():
    p, c = box()
    k = int(c[5, 2])
    p = np.vstack([p, p[k]])
    c[5, 2] = len(p) - 1  # cell 5 uses a copy of node k: not connected to its neighbours
    return p, c


def crack():
    p, c = box(4)
    plane = np.flatnonzero(np.isclose(p[:, 0], 2.0))
    copy = np.arange(len(p))
    copy[plane] = len(p) + np.arange(len(plane))
    p = np.vstack([p, p[plane]])
    right = p[c].mean(axis=1)[:, 0] > 2.0
    c[right] = copy[c[right]]  # the cells right of x = 2 use copies of the plane's nodes
    return p, c


def dup_cell():
    p, c = box()
    return p, np.vstack([c, c[7][[2, 0, 3, 1]]])


def fin():
    p, c = box()
    s = np.sort(np.concatenate([np.delete(c, i, axis=1) for i in range(4)]), axis=1)
    key, counts = np.unique(s, axis=0, return_counts=True)
    f = key[np.flatnonzero(counts == 2)[0]]  # an interior facet, shared by two cells
    a, b, d = p[f]
    normal = np.cross(b - a, d - a)
    p = np.vstack([p, [(a + b + d) / 3 + normal / np.linalg.norm(normal)]])
    return p, np.vstack([c, np.append(f, len(p) - 1)])  # a third cell on it


def out_of_range(value):
    def make():
        p, c = box()
        c[4, 1] = value if value >= 0 else -1
        return p, c
    return make


def degenerate():
    p, c = box(1, 4.0)
    flat = np.flatnonzero(np.isclose(p[:, 2], 0.0))  # four corners of the z = 0 face
    return p, np.vstack([c, flat[:4]])


MESHES = {
    "duplicated node": (dup_node, ["1 duplicated node (the same coordinates as another node", "Coherence"]),
    "crack": (crack, ["25 duplicated nodes, all on the plane x = 2: a crack"]),
    "duplicated cell": (dup_cell, ["1 duplicated cell (the same 4 nodes as another cell, in any order): "
                                   "cell 162 = cell 7"]),
    "non-manifold facet": (fin, ["is shared by 3 cells", "fin"]),
    "node index too large": (out_of_range(1000), ["cell 4 refers to node 1000, allowed 0..63"]),
    "negative node index": (out_of_range(-1), ["cell 4 refers to node -1, allowed 0..63"]),
    "degenerate cell": (degenerate, ["is degenerate: volume", "allowed: cells of volume above"]),
}


@pytest.mark.parametrize("case", MESHES)
def test_bad_mesh_is_refused_by_reader_and_cli(tmp_path, capsys, case):
    make, words = MESHES[case]
    ext = ".msh" if case in ("crack", "non-manifold facet") else ".vtu"
    if "index" in case:
        ext = ".xdmf"  # meshio's gmsh reader cannot hold such a file, its VTU writer refuses it
    p = write(tmp_path / f"bad{ext}", *make())
    with pytest.raises(GeometryError) as err:
        geometry.read(p)
    assert str(err.value).startswith(f"{p}: ")
    for w in words:
        assert w in str(err.value)
    cli_refuses(tmp_path, capsys, p, *words)


def test_mesh_construction_refuses_the_same_without_a_file():
    p, c = crack()
    with pytest.raises(GeometryError, match=r"duplicated nodes, all on the plane x = 2"):
        geometry.Mesh(p, c)
    p, c = dup_cell()
    with pytest.raises(GeometryError, match=r"1 duplicated cell \(the same 4 nodes as another cell, in any "
                                            r"order\): cell 162 = cell 7"):
        geometry.Mesh(p, c)
    tri = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [-1, -1]], float)  # triangles: an edge in three cells
    with pytest.raises(GeometryError, match=r"edge with nodes \[1, 2\] is shared by 3 cells \[0, 1, 2\]"):
        geometry.Mesh(tri, [[0, 1, 2], [1, 3, 2], [1, 2, 4]])


FOUR = np.random.default_rng(0).random((4, 3))
EMPTY = {
    "vtu without cells": (".vtu", FOUR, [], "holds no tetrahedra (4 points, 0 cells)"),
    "msh of lines": (".msh", FOUR, [[0, 1], [1, 2]],
                     "holds no tetrahedra (or triangles): found 4 points and cells {'line': 2}"),
    "xdmf with an empty block": (".xdmf", np.zeros((0, 3)), np.zeros((0, 4), int),
                                 "holds no tetrahedra (or triangles): found 0 points and no cells"),
}


@pytest.mark.parametrize("case", EMPTY)
def test_empty_mesh_says_what_the_file_holds(tmp_path, capsys, case):
    ext, pts, cells, words = EMPTY[case]
    p = write(tmp_path / f"empty{ext}", pts, cells, kind="line" if "lines" in case else "tetra")
    with pytest.raises(GeometryError, match="holds no tetrahedra"):
        geometry.read(p)
    cli_refuses(tmp_path, capsys, p, words)


def test_flat_and_two_dimensional_meshes_where_3d_is_needed(tmp_path, capsys):
    p, c = box(2)
    p[:, 2] = 1.5  # every tetrahedron flat
    flat = write(tmp_path / "flat.vtu", p, c)
    cli_refuses(tmp_path, capsys, flat, "all 27 nodes have z = 1.5", "3-D tetrahedral mesh is needed")
    tri = geometry.box_mesh([0, 0], [4, 4], 3)
    for name, pts in (("tri.xdmf", tri.points), ("tri.vtu", np.column_stack([tri.points, np.zeros(tri.n_nodes)]))):
        f = write(tmp_path / name, pts, tri.cells, kind="triangle")
        assert geometry.read(f).dim == 2  # a planar mesh stays readable where 2-D is fine
        with pytest.raises(GeometryError, match=r"holds a 2-D mesh \(18 triangles, no tetrahedra; "
                                                r"(2 coordinates per point|all z = 0)\), but a 3-D tetrahedral"):
            geometry.read(f, dim=3)


def test_scenario_geometry_reads_3d_meshes_in_the_length_unit(tmp_path):
    from paracrine.build import make_geometry

    def scenario(path, **g):
        data = {"geometry": {"kind": "file", "path": str(path), **g}, "injections": [], "media": []}
        return types.SimpleNamespace(data=data, source=str(tmp_path / "s.toml"))

    m = geometry.box_mesh([0, 0, 0], [4, 4, 2], [4, 4, 2])
    metres = write(tmp_path / "m.vtu", m.points * 1e-3, m.cells)
    geom, _, _ = make_geometry(scenario(metres, length_unit="m"))
    np.testing.assert_allclose(geom.points, m.points, rtol=1e-12)
    with pytest.raises(GeometryError, match=r'm\.vtu: bounding box 0\.004 x 0\.004 x 0\.002 mm .*length_unit = "m"'):
        make_geometry(scenario(metres))  # length_unit defaults to mm
    tri = geometry.box_mesh([0, 0], [4, 4], 2)
    flat = write(tmp_path / "t.vtu", np.column_stack([tri.points, np.zeros(tri.n_nodes)]), tri.cells, kind="triangle")
    with pytest.raises(GeometryError, match=r"t\.vtu: the file holds a 2-D mesh"):
        make_geometry(scenario(flat))


# ---------- length unit and size ----------

@pytest.mark.parametrize("unit,factor", [("m", 1e-3), ("cm", 0.1), ("um", 1e3), ("µm", 1e3), ("mm", 1.0)])
def test_mesh_in_another_unit_reads_equal_to_the_mm_one(tmp_path, unit, factor):
    m = geometry.box_mesh([-5, -5, -8], [5, 5, 4], [3, 3, 4],
                          regions={"remote": True, "core": geometry.halfspace(2, 0)})
    scaled = geometry.Mesh(m.points * factor, m.cells, m.cell_regions, m.region_names, m.facets, m.facet_tags,
                           m.boundary_names)
    r = geometry.read(geometry.write(tmp_path / f"{unit.replace('µ', 'u')}.vtu", scaled), length_unit=unit)
    np.testing.assert_allclose(r.points, m.points, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(r.cells, m.cells)
    assert r.region_names == m.region_names and r.boundary_names == m.boundary_names


@pytest.mark.parametrize("factor,unit", [(1e-3, "m"), (1e3, "um")])
def test_mesh_in_the_wrong_unit_is_refused_with_the_unit_to_set(tmp_path, capsys, factor, unit):
    p, c = box(2, 10.0)  # a rat-sized box, written in another unit
    f = write(tmp_path / "lv.vtu", p * factor, c)
    small = "small" if factor < 1 else "large"
    with pytest.raises(GeometryError, match=rf"far too {small} for a heart.*geometry\.length_unit = \"{unit}\""):
        geometry.read(f)
    size = f"{10 * factor:.4g} x {10 * factor:.4g} x {10 * factor:.4g} mm"
    err = cli_refuses(tmp_path, capsys, f, f"bounding box {size}", f'geometry.length_unit = "{unit}"')
    assert "mouse" in err and "human" in err
    assert geometry.read(f, length_unit=unit).points.max() == pytest.approx(10.0)
    assert geometry.read(f, check_size=False).n_nodes == 27


def test_unknown_length_unit(tmp_path):
    f = write(tmp_path / "b.vtu", *box())
    with pytest.raises(GeometryError, match=r"length unit 'inch'; allowed: \['mm', 'cm', 'm', 'um'"):
        geometry.read(f, length_unit="inch")


# ---------- what the reader opens ----------

def good_xdmf(tmp_path):
    return geometry.write(tmp_path / "m.xdmf", geometry.box_mesh([0, 0, 0], [2, 2, 2], 2))


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_xdmf_data_outside_its_folder_is_refused_before_reading(tmp_path, capsys, where):
    x = good_xdmf(tmp_path)
    h5 = tmp_path / "m.h5"
    sub = tmp_path / "sub"
    sub.mkdir()
    target = str(h5) if where == "absolute" else "../m.h5"
    moved = sub / "m.xdmf"
    moved.write_text(x.read_text().replace("m.h5:", f"{target}:"))
    with pytest.raises(GeometryError, match=rf"m\.xdmf: DataItem points at '{target}', outside the XDMF file's folder"):
        geometry.read(moved)
    cli_refuses(tmp_path, capsys, moved, "DataItem points at", target)
    assert geometry.read(x).n_nodes == 27  # data next to it: read


def test_not_regular_files_are_refused_without_reading(tmp_path, capsys):
    link = tmp_path / "zero.vtu"
    link.symlink_to("/dev/zero")
    cli_refuses(tmp_path, capsys, link, "is a device (a link to /dev/zero), not a file")
    fifo = tmp_path / "pipe.msh"
    os.mkfifo(fifo)
    cli_refuses(tmp_path, capsys, fifo, "is a FIFO (named pipe), not a file")  # would block if opened
    folder = tmp_path / "folder.xdmf"
    folder.mkdir()
    with pytest.raises(GeometryError, match=r"folder\.xdmf: is a directory, not a file"):
        geometry.read(folder)
    pipe = tmp_path / "pipe.npz"
    os.mkfifo(pipe)
    with pytest.raises(GeometryError, match=r"pipe\.npz: is a FIFO \(named pipe\), not a file; allowed: a regular "
                                            r"label image file"):
        geometry.read_labels(pipe)


def test_files_above_the_size_limit_are_refused(tmp_path, monkeypatch, capsys):
    f = write(tmp_path / "big.vtu", *box())
    n = f.stat().st_size
    monkeypatch.setattr(validate, "MAX_BYTES", 1000)
    cli_refuses(tmp_path, capsys, f, f"({n} bytes) is larger than the limit of 1000 bytes")
    img = tmp_path / "big.npz"
    np.savez_compressed(img, labels=np.full((40, 40), 2), spacing=[0.5, 0.5])
    assert img.stat().st_size < 1000  # compressed below the limit, but not when unpacked
    with pytest.raises(GeometryError, match=r"big\.npz: array 'labels' unpacks to 12928 bytes, above the limit of "
                                            r"1000 bytes"):
        geometry.read_labels(img)
    np.save(tmp_path / "big.npy", np.full((40, 40), 2))
    with pytest.raises(GeometryError, match=r"big\.npy: 12\.6 KiB \(12928 bytes\) is larger than the limit"):
        geometry.read_labels(tmp_path / "big.npy", spacing=0.5)


GARBAGE = {
    "random bytes .msh": (".msh", lambda: os.urandom(3000), "as a Gmsh mesh", "binary data"),
    "random bytes .vtu": (".vtu", lambda: os.urandom(3000), "as a VTK XML unstructured grid", "binary data"),
    "random bytes .xdmf": (".xdmf", lambda: os.urandom(3000), "as an XDMF file", "binary data"),
    "VTU named .msh": (".msh", None, "as a Gmsh mesh", "text starting '<?xml"),
    "empty .vtu": (".vtu", lambda: b"", "as a VTK XML", "the file is empty"),
    "broken XML .vtu": (".vtu", lambda: b"<?xml version='1.0'?>\n<VTKFile type='Unstr", "as a VTK XML", "meshio"),
}


@pytest.mark.parametrize("case", GARBAGE)
def test_garbage_names_the_file_and_the_format(tmp_path, capsys, case):
    ext, content, fmt, what = GARBAGE[case]
    p = tmp_path / f"g{ext}"
    if content is None:
        p.write_bytes(write(tmp_path / "real.vtu", *box()).read_bytes())
    else:
        p.write_bytes(content())
    with pytest.raises(GeometryError, match=f"g\\{ext}: meshio could not read it {fmt}"):
        geometry.read(p)
    cli_refuses(tmp_path, capsys, p, fmt, what)


# ---------- label images ----------

def image(n=40, h=0.25):
    ax = (np.arange(n) - n / 2 + 0.5) * h
    x, y = np.meshgrid(ax, ax, indexing="ij")
    r = np.hypot(x, y)
    lab = np.zeros((n, n), np.int16)
    lab[r < 2] = 1
    lab[(r >= 2) & (r < 4.5)] = 2
    lab[(r >= 2) & (r < 4.5) & (y > 2)] = 3
    return lab, h


def truncated(p):
    lab, h = image()
    np.savez_compressed(p, labels=lab, spacing=[h, h])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def pickled(p):
    lab, h = image()
    np.savez(p, labels=lab.astype(object), spacing=[h, h])


def not_zip(p):
    p.write_bytes(os.urandom(2000))


def garbage_npy(p):
    p.write_bytes(b"\x93NUMPY\x01\x00" + os.urandom(100))


LABELS = {
    "truncated .npz": ("img.npz", truncated, "truncated or corrupt"),
    "pickled .npz": ("img.npz", pickled, "pickled Python objects (object arrays)"),
    "random bytes .npz": ("img.npz", not_zip, "cannot be read as a NumPy .npz label image"),
    "pickled grid.npz": ("grid.npz", pickled, "pickled Python objects"),
    "garbage .npy": ("img.npy", garbage_npy, "cannot be read as a NumPy .npy label array"),
}


@pytest.mark.parametrize("case", LABELS)
def test_bad_label_files_are_named(tmp_path, capsys, case):
    name, make, words = LABELS[case]
    p = tmp_path / name
    make(p)
    with pytest.raises(GeometryError, match=words.replace("(", r"\(").replace(")", r"\)")):
        geometry.read_labels(p, spacing=0.25)
    cli_refuses(tmp_path, capsys, p, words, flag="--labels", extra=["--spacing", "0.25"])


def test_border_band_narrower_than_a_voxel(tmp_path, capsys):
    lab, h = image(20, 0.5)
    with pytest.raises(GeometryError, match=r"border_width 0\.3 mm is narrower than a voxel \(spacing 0\.5 x 0\.5 mm\)"
                                            r".*allowed: border_width >= 0\.5 mm .* or a finer image"):
        geometry.from_labels(lab, h, border_width=0.3)
    assert set(geometry.from_labels(lab, h, border_width=0.5).region_names) == {"remote", "border", "core"}
    assert set(geometry.from_labels(lab, h, border_width=0.0).region_names) == {"remote", "core"}  # asked for
    p = tmp_path / "coarse.npz"
    np.savez(p, labels=lab, spacing=[h, h])
    cli_refuses(tmp_path, capsys, p, "narrower than a voxel", flag="--labels", extra=["--border-width", "0.3"])


def test_unexpected_labels_are_all_named(tmp_path):
    lab, h = image()
    lab[0, 0], lab[1, :3] = 9, 7
    with pytest.raises(GeometryError, match=r"label 7 at voxel \(1, 0\) is not an EMIDEC label \(unexpected labels: "
                                            r"7 \(3 voxels\), 9 \(1 voxels\)\)"):
        geometry.from_labels(lab, h)
    with pytest.raises(GeometryError, match=r"spacing \[0\.25, 0\.25, 0\.25\] for a 2-D image"):
        geometry.from_labels(image()[0], [0.25] * 3)


def test_grid_npz_is_read_as_its_regions(tmp_path):
    import json

    g = geometry.box_grid([0, 0, 0], [4, 4, 2], [8, 8, 4], regions={"remote": True, "border": geometry.halfspace(0, 2),
                                                                  "core": geometry.halfspace(0, 3)})
    p = tmp_path / "grid.npz"  # as `paracrine mesh --spacing` writes it
    np.savez_compressed(p, labels=g.labels, spacing=g.spacing, origin=g.origin, names=json.dumps(g.region_names))
    r = geometry.read_labels(p)
    assert r.region_names == g.region_names and r.spacing == g.spacing
    np.testing.assert_array_equal(r.labels, g.labels)  # not taken for EMIDEC labels (1 would be the cavity)


def test_validation_is_fast_on_a_large_mesh():
    m = geometry.box_mesh([0, 0, 0], [10, 10, 10], 24)  # 15.6k nodes, 83k cells
    import time

    t = time.perf_counter()
    validate.duplicate_nodes(m.points, m.cells)
    validate.cell_topology(m.cells, m.n_nodes)
    assert time.perf_counter() - t < 2.0


def test_scenario_file_with_a_mesh_in_metres(tmp_path):
    """The scenario's own check of geometry.file reads the mesh in geometry.length_unit."""
    from paracrine import scenario as sc
    from paracrine.units import ScenarioError

    m = geometry.box_mesh([-5, -5, -8], [5, 5, 4], [3, 3, 4],
                          regions={"remote": True, "border": geometry.halfspace(2, 0.0),
                                   "core": geometry.halfspace(2, -4.0)})
    metres = geometry.Mesh(m.points * 1e-3, m.cells, m.cell_regions, m.region_names, m.facets, m.facet_tags,
                           m.boundary_names)
    geometry.write(tmp_path / "heart.vtu", metres)
    text = sc.default_text()
    start, end = text.index("[geometry]"), text.index("\n[", text.index("[geometry]") + 1)
    body = text[:start] + '[geometry]\nfile = "heart.vtu"\nlength_unit = "m"\n' + text[end:]
    body = "\n".join(line for line in body.splitlines() if not line.startswith("route") and "sites" not in line)
    (tmp_path / "s.toml").write_text(body)
    s = sc.load(tmp_path / "s.toml")
    assert s.data["geometry"]["length_unit"] == "m"
    (tmp_path / "s2.toml").write_text(body.replace('length_unit = "m"\n', ""))
    with pytest.raises(ScenarioError, match=r'geometry\.file = .heart\.vtu.: .*bounding box .*length_unit = "m"'):
        sc.load(tmp_path / "s2.toml")


# ---------- VTK images (.vti) ----------

def good_vti(p):
    g = geometry.box_grid([0, 0, 0], [12, 12, 6], [6, 6, 3], regions={"remote": True, "core": geometry.halfspace(0, 6)})
    return geometry.write(p, g)


def _edit(old, new):
    def make(p):
        good_vti(p)
        text = p.read_text()
        assert old in text
        p.write_text(text.replace(old, new, 1))
    return make


def _cut(p):
    good_vti(p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) * 2 // 3])


def _vtu_as_vti(p):
    write(p.with_suffix(".vtu"), *box())
    p.write_bytes(p.with_suffix(".vtu").read_bytes())


BAD_VTI = {
    "truncated": (_cut, "not well-formed XML"),
    "an unstructured grid": (_vtu_as_vti, "holds 'UnstructuredGrid', not ImageData"),
    "extent not matching the data": (_edit('WholeExtent="0 6', 'WholeExtent="0 7'), "has 108 values for 7 x 6 x 3 cells"),
    "rotated": (_edit("<ImageData ", '<ImageData Direction="0 1 0 1 0 0 0 0 1" '), "Direction '0 1 0 1 0 0 0 0 1' is "
                                                                                  "not the identity"),
    "LZ4": (_edit("vtkZLibDataCompressor", "vtkLZ4DataCompressor"), "compressor 'vtkLZ4DataCompressor' is not supported"),
    "corrupt data": (_edit("=eJx", "=AAAA"), "array 'region': the compressed data is corrupt"),
    "random bytes": (lambda p: p.write_bytes(os.urandom(2000)), "the file holds binary data"),
}


@pytest.mark.parametrize("case", BAD_VTI)
def test_bad_vti_is_refused_naming_the_file(tmp_path, capsys, case):
    make, words = BAD_VTI[case]
    p = tmp_path / "g.vti"
    make(p)
    with pytest.raises(GeometryError, match=r"g\.vti: "):
        geometry.read(p)
    cli_refuses(tmp_path, capsys, p, words)
