"""Mesh files through meshio (Gmsh .msh with physical groups, VTU, VTK, XDMF, MED, medit, netgen ...),
with region tags from a named integer cell array and a region map; voxel grids as .vti or .npz.

Region labels and boundary tags travel as the cell data ``gmsh:physical`` of the
cell and facet blocks; their names as meshio field data ``name -> [tag, dim]``
(Gmsh physical names; a VTU ``FieldData`` and an XDMF ``Information`` element,
which meshio reads but does not write, so they are added here).
"""

from __future__ import annotations

import os
import tempfile
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from . import validate
from .errors import GeometryError
from .mesh import Mesh

_CELL = {2: "triangle", 3: "tetra"}
_FACET = {2: "line", 3: "triangle"}
#: formats with their own checks before meshio reads them (magic bytes, sizes, data files)
_FORMATS = {".msh": "gmsh22", ".vtu": "vtu", ".xdmf": "xdmf", ".xmf": "xdmf", ".vtk": "vtk"}
#: meshio formats that hold surfaces only (no volume cells): refused by their suffix
_SURFACE_ONLY = {".stl", ".obj", ".off", ".ply", ".wkt", ".svg"}
#: voxel grids, read by geometry.images
_GRIDS = (".vti", ".npz")
_WRITE = {".msh": "gmsh22", ".vtu": "vtu", ".xdmf": "xdmf"}


def _meshio_suffix(path: Path) -> str | None:
    """The meshio suffix of a path (".vtu", ".dato.gz", ...), None if meshio knows none."""
    import meshio

    name = path.name.lower()
    known = sorted(set(meshio.extension_to_filetypes) - _SURFACE_ONLY, key=len, reverse=True)
    return next((k for k in known if name.endswith(k)), None)


def formats() -> list[str]:
    """The suffixes `read` accepts: meshio's volume-mesh formats and the voxel grids .vti and .npz."""
    import meshio

    return sorted(set(meshio.extension_to_filetypes) - _SURFACE_ONLY) + list(_GRIDS)


def _format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is not None:
        return fmt
    if _meshio_suffix(path) is not None:
        return "meshio"
    raise GeometryError(f"{path}: unsupported mesh format {path.suffix!r}; allowed: a volume mesh that meshio reads "
                        f"({', '.join(formats())}); surface meshes ({', '.join(sorted(_SURFACE_ONLY))}) hold no "
                        "volume: mesh the volume first")


def _meshio_read(path: Path, fmt: str):
    """meshio's reader for the format, its console output kept out of the way (what matters is raised)."""
    import contextlib
    import io as _io

    import meshio

    readers = {"gmsh22": meshio.gmsh.read, "vtu": meshio.vtu.read, "xdmf": meshio.xdmf.read, "vtk": meshio.vtk.read}
    reader = readers.get(fmt, meshio.read)
    sink = _io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return reader(str(path))
    except (Exception, SystemExit) as err:  # meshio raises many types (and exits on some); report the file
        text = " ".join(str(err).split()) or type(err).__name__
        text = text if len(text) <= 200 else text[:200] + "..."
        if fmt == "gmsh22":
            text += _gmsh_hint(path, err)
        what = validate.expected_format(fmt) if fmt != "meshio" else f"a {_meshio_suffix(path)} mesh"
        raise GeometryError(f"{path}: meshio could not read it as {what}: {type(err).__name__}: {text}") from None


def _gmsh_hint(path: Path, err: BaseException) -> str:
    """What an ASCII .msh that meshio refused lacks, where it can be told from its sections."""
    import re

    with open(path, "rb") as f:
        head = f.read(1 << 20).decode("ascii", "replace")
    fmt = re.search(r"\$MeshFormat\s+(\d+)", head)
    nodes = re.search(r"\$Nodes\s+(\d+)(?:\s+(\d+))?", head)
    if fmt and nodes:
        n = int(nodes.group(1)) if fmt.group(1) == "2" or nodes.group(2) is None else int(nodes.group(2))
        if n == 0:
            return " (the $Nodes section lists no nodes: the file holds no mesh; allowed: a meshed volume)"
    if isinstance(err, (IndexError, KeyError)):
        return " (an element refers to a node that the $Nodes section does not list)"
    return ""


def _census(m) -> str:
    kinds: dict[str, int] = {}
    for b in m.cells:
        kinds[b.type] = kinds.get(b.type, 0) + len(b.data)
    return f"{len(m.points)} points and " + (f"cells {kinds}" if kinds else "no cells")


def read(path, *, length_unit: str = "mm", dim: int | None = None, check_size: bool = True,
         regions: dict | None = None, tags: str | None = None):
    """Read a triangle or tetrahedron mesh with region and boundary names, or a voxel grid.

    Meshes: any volume format meshio reads (.msh, .vtu, .vtk, .xdmf, .med, .mesh, ...; an Abaqus
    .inp is read without regions, meshio keeps no element-set tags). Regions come from an integer
    cell-data array: `tags` names it (default: gmsh's physical groups, or else the
    file's only integer cell array); `regions` maps names to its values, {name: tag or [tags]}
    (default: gmsh physical names, or names "tissue<tag>"). Cells whose tag is in no region are
    left out, with one warning naming those tags and their cell counts; a region none of whose tags
    occurs, and tags that are not integers, are refused. Grids (a Grid is returned): a VTK image
    .vti (`geometry.images.read_vti`, the same `regions` and `tags`) or a .npz as `paracrine mesh`
    writes it (`geometry.read_labels`).

    length_unit: the unit of the file's coordinates ("mm", "cm", "m", "um" or "µm"); points are
    scaled to mm. dim: 3 refuses anything but a tetrahedral mesh or 3-D grid (2 anything but 2-D).
    check_size: refuse a geometry whose bounding box is far too small or large for any species'
    heart (`geometry.validate.check_size`: a mesh in metres read as mm). Before reading, the path
    must be a regular file below `geometry.validate.MAX_BYTES` (of the format its suffix names,
    where that can be told from its first bytes), and the data of an XDMF file must lie in its
    folder. Every refusal is a GeometryError naming the file.
    """
    path = Path(path)
    if dim not in (None, 2, 3):
        raise GeometryError(f"dim {dim!r}; allowed: 2 (triangles), 3 (tetrahedra) or None (either)")
    scale = validate.length_scale(length_unit)
    if regions is not None:
        regions = validate.region_map(regions)
    if tags is not None and (not isinstance(tags, str) or not tags):
        raise GeometryError(f"tags = {tags!r}; allowed: the name of the file's integer cell-data array (text)")
    if path.name.lower().endswith(_GRIDS):
        return _read_grid(path, scale, length_unit, dim, check_size, regions, tags)
    fmt = _format(path)
    validate.input_file(path, "mesh")
    if fmt != "meshio":
        validate.sniff(path, fmt)
    if fmt == "xdmf":
        validate.xdmf_data_files(path)
    if fmt == "vtu":
        counts = validate.vtu_counts(path)
        if counts is not None and min(counts) == 0:
            raise GeometryError(f"{path}: the file holds no tetrahedra ({counts[0]} points, {counts[1]} cells); "
                                "allowed: a mesh of tetrahedra (3-D) or triangles (2-D) with their points")
    m = _meshio_read(path, fmt)
    try:
        return _mesh_from_meshio(m, path, scale, length_unit, dim, check_size, regions, tags)
    except GeometryError as err:
        msg = str(err)
        raise GeometryError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None


def _read_grid(path: Path, scale: float, length_unit: str, dim, check_size: bool, regions, tags):
    from . import images
    from .grid import Grid

    if path.name.lower().endswith(".vti"):
        grid = images.read_vti(path, regions=regions, tags=tags)
    else:
        if regions is not None or tags is not None:
            raise GeometryError(f"{path}: regions and tags apply to meshes and .vti images; a .npz grid carries "
                                "its region names (or EMIDEC labels)")
        grid = images.read_labels(path)
    try:
        if dim is not None and grid.dim != dim:
            raise GeometryError(f"the file holds a {grid.dim}-D grid of shape {grid.shape}, but a {dim}-D geometry "
                                "is needed")
        if scale != 1.0:
            grid = Grid(grid.labels, np.asarray(grid.spacing) * scale, np.asarray(grid.origin) * scale,
                        grid.region_names)
        if check_size:
            x = grid.centres()[grid.labels > 0]
            validate.check_size(np.concatenate([x - np.asarray(grid.spacing) / 2, x + np.asarray(grid.spacing) / 2]),
                                length_unit)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None
    return grid


def _is_int_array(blocks) -> bool:
    try:
        arrays = [np.asarray(b) for b in blocks]
    except (TypeError, ValueError):
        return False
    return all(np.issubdtype(a.dtype, np.integer) and (a.ndim == 1 or a.ndim == 2 and a.shape[1] == 1)
               for a in arrays)


def _arrays(m) -> str:
    if not m.cell_data:
        return "none"
    return ", ".join(f"{k!r} ({np.asarray(v[0]).dtype})" for k, v in m.cell_data.items())


def _tag_name(m, tags: str | None, regions) -> str | None:
    """The cell-data array that holds the region tags (None: every cell in one region)."""
    if tags is not None:
        if tags not in m.cell_data:
            raise GeometryError(f"no cell-data array {tags!r} (tags = {tags!r}); the file's cell-data arrays: "
                                f"{_arrays(m)}; allowed: one of them")
        return tags
    if "gmsh:physical" in m.cell_data:
        return "gmsh:physical"
    ints = [k for k, v in m.cell_data.items() if k != "gmsh:geometrical" and _is_int_array(v)]
    if len(ints) == 1:
        return ints[0]
    if len(ints) > 1:
        raise GeometryError(f"the file has {len(ints)} integer cell-data arrays ({', '.join(map(repr, ints))}) and no "
                            "gmsh physical groups: which one holds the regions? allowed: name it with tags "
                            "(geometry.tags in the scenario, --tags for paracrine mesh)")
    if regions is not None:
        raise GeometryError(f"a region map is given but the file has no integer cell-data array to apply it to (its "
                            f"cell-data arrays: {_arrays(m)}); allowed: name the tag array with tags (it may hold "
                            "whole numbers stored as floats)")
    return None


def _mesh_from_meshio(m, path: Path, scale: float, length_unit: str, need: int | None, check_size: bool,
                      region_map=None, tag_key=None) -> Mesh:
    n_of = {t: sum(len(b.data) for b in m.cells if b.type == t) for t in ("tetra", "triangle")}
    if n_of["tetra"]:
        dim = 3
    elif n_of["triangle"]:
        dim = 2
    else:
        raise GeometryError(f"the file holds no tetrahedra (or triangles): found {_census(m)}; allowed: a mesh "
                            "of tetrahedra (3-D) or triangles (2-D); in gmsh, mesh the volume (Mesh 3) and save "
                            "it with its physical groups")
    if len(m.points) == 0:
        raise GeometryError(f"the file holds no points (found {_census(m)}); allowed: a mesh with its nodes")
    points = np.asarray(m.points, float)
    if points.ndim != 2 or points.shape[1] not in (2, 3):
        raise GeometryError(f"points have shape {points.shape}; allowed: (n, 2) or (n, 3) coordinates")
    if need == 3 and dim == 2:
        what = ("2 coordinates per point" if points.shape[1] == 2 else
                "all z = 0" if not np.any(points[:, 2]) else "points in 3-D")
        raise GeometryError(
            f"the file holds a 2-D mesh ({n_of['triangle']} triangles, no tetrahedra; {what}), but a 3-D "
            "tetrahedral mesh is needed; mesh the volume (in gmsh: Mesh 3, or `gmsh -3`) and save the tetrahedra")
    if need == 2 and dim == 3:
        raise GeometryError(f"the file holds a 3-D mesh ({n_of['tetra']} tetrahedra), but a 2-D triangle mesh "
                            "is needed")
    if dim == 3 and points.shape[1] == 2:
        raise GeometryError(f"the file holds {n_of['tetra']} tetrahedra on points with 2 coordinates; allowed: "
                            "tetrahedra on (n, 3) points")
    key = _tag_name(m, tag_key, region_map)
    tags = m.cell_data.get(key) if key is not None else None
    cells, regions, facets, ftags = [], [], [], []
    for k, block in enumerate(m.cells):
        if block.type not in (_CELL[dim], _FACET[dim]):
            continue
        t = validate.integer_tags(tags[k], key) if tags is not None else np.zeros(len(block.data), np.int64)
        if len(t) != len(block.data):
            raise GeometryError(f"tag array {key!r} has {len(t)} values for {len(block.data)} {block.type} cells")
        if block.type == _CELL[dim]:
            cells.append(block.data)
            regions.append(t)
        else:
            facets.append(block.data)
            ftags.append(t)
    names = {}
    for k, v in m.field_data.items():
        v = np.asarray(v).ravel()
        if len(v) == 2 and np.issubdtype(v.dtype, np.number):  # gmsh physical names: name -> [tag, dim]
            names[str(k)] = (int(v[0]), int(v[1]))
    region_names = {k: t for k, (t, d) in names.items() if d == dim} or None
    boundary_names = {k: t for k, (t, d) in names.items() if d == dim - 1} or None
    if key != "gmsh:physical":
        region_names = boundary_names = None  # field data names gmsh's physical tags only
    if dim == 2 and points.shape[1] == 3:
        if np.any(points[:, 2] != 0):
            raise GeometryError("triangle mesh with non-zero z coordinates (surface meshes are not supported); "
                                "allowed: a planar mesh with z = 0, or tetrahedra")
        points = points[:, :2]
    cells = np.concatenate(cells)
    if not np.issubdtype(cells.dtype, np.integer):
        raise GeometryError(f"cells hold {cells.dtype} node indices; allowed: integers")
    bad = (cells < 0) | (cells >= len(points))
    if bad.any():
        c, k = np.argwhere(bad)[0]
        raise GeometryError(f"cell {c} refers to node {cells[c, k]}, allowed 0..{len(points) - 1} (the file has "
                            f"{len(points)} points; {int(bad.any(axis=1).sum())} cells in all refer to missing nodes)")
    cell_tags = np.concatenate(regions)
    if region_map is not None:
        cell_tags, region_names, note = validate.apply_region_map(cell_tags, region_map, what="cells",
                                                                  array=key)
        if note:
            warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
        keep = cell_tags > 0
        cells, cell_tags = cells[keep], cell_tags[keep]
    used = np.unique(cells)
    if not np.all(np.isfinite(points[used])):
        pass  # named by Mesh
    elif dim == 3:
        validate.check_flat(points[used])
    points = points * scale
    if check_size and np.all(np.isfinite(points[used])):
        validate.check_size(points[used], length_unit)
    facets = np.concatenate(facets) if facets else None
    ftags = np.concatenate(ftags) if ftags else None
    if facets is not None and boundary_names is not None:
        keep = np.isin(ftags, list(boundary_names.values()))
        facets, ftags = facets[keep], ftags[keep]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # unreferenced nodes: pruned below
        mesh = Mesh(points, cells, cell_tags, region_names, facets, ftags, boundary_names)
    return mesh.prune() if len(mesh.unreferenced) else mesh


def _add_xdmf_names(path: Path, field_data: dict) -> None:
    tree = ET.parse(path)
    grid = tree.getroot().find("Domain/Grid")
    main = ET.Element("main")
    for name, (tag, dim) in field_data.items():
        e = ET.SubElement(main, "entry", key=name, dim=str(dim))
        e.text = str(tag)
    info = ET.Element("Information", Name="Information", Value=str(len(field_data)))
    info.text = ET.tostring(main, encoding="unicode")
    grid.insert(0, info)
    tree.write(path)


def _add_vtu_names(path: Path, field_data: dict) -> None:
    tree = ET.parse(path)
    grid = tree.getroot().find("UnstructuredGrid")
    fd = ET.Element("FieldData")
    for name, (tag, dim) in field_data.items():
        e = ET.SubElement(fd, "DataArray", type="Int64", Name=name, NumberOfTuples="2", format="ascii")
        e.text = f"{tag} {dim}"
    grid.insert(0, fd)
    tree.write(path)


def write(path, mesh, *, point_data: dict | None = None) -> Path:
    """Write `mesh` (and optional nodal fields) to .msh, .vtu or .xdmf, atomically; a Grid to a VTK
    image .vti (`geometry.images.write_vti`, ParaView opens it) or the .npz `geometry.read` reads back."""
    import meshio

    from .grid import Grid

    path = Path(path)
    if isinstance(mesh, Grid):
        from . import images

        if path.suffix.lower() == ".vti":
            return images.write_vti(path, mesh)
        if path.suffix.lower() == ".npz":
            return images.write_npz(path, mesh)
        raise GeometryError(f"{path}: a grid is written as .vti (VTK image data) or .npz; got {path.suffix!r}")
    fmt = _WRITE.get(path.suffix.lower())
    if fmt is None:
        raise GeometryError(f"{path}: unsupported mesh format {path.suffix!r} for writing; allowed: {sorted(_WRITE)}")
    dim = mesh.dim
    cells = [(_CELL[dim], mesh.cells)]
    tags = [mesh.cell_regions.astype(int)]
    if len(mesh.facets):
        cells.append((_FACET[dim], mesh.facets))
        tags.append(mesh.facet_tags.astype(int))
    field_data = {k: np.array([v, dim]) for k, v in mesh.region_names.items()}
    field_data.update({k: np.array([v, dim - 1]) for k, v in mesh.boundary_names.items()})
    cell_data = {"gmsh:physical": tags}
    if fmt == "gmsh22":
        cell_data["gmsh:geometrical"] = tags
    points = mesh.points if dim == 3 else np.column_stack([mesh.points, np.zeros(mesh.n_nodes)])
    m = meshio.Mesh(points, cells, point_data=point_data or {}, cell_data=cell_data, field_data=field_data)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_path = Path(tmp) / path.name
        kwargs = {"binary": False} if fmt == "gmsh22" else {}
        meshio.write(tmp_path, m, file_format=fmt, **kwargs)
        names = {k: (int(v[0]), int(v[1])) for k, v in field_data.items()}
        if fmt == "vtu":
            _add_vtu_names(tmp_path, names)
        if fmt == "xdmf":
            _add_xdmf_names(tmp_path, names)
            os.replace(tmp_path.with_suffix(".h5"), path.with_suffix(".h5"))
        os.replace(tmp_path, path)
    return path
