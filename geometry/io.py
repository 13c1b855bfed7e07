"""Mesh files through meshio: Gmsh .msh (physical groups), VTU and XDMF.

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
_FORMATS = {".msh": "gmsh22", ".vtu": "vtu", ".xdmf": "xdmf"}


def _format(path: Path) -> str:
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise GeometryError(f"{path}: unsupported mesh format {path.suffix!r}; allowed: {sorted(_FORMATS)}")
    return fmt


def _meshio_read(path: Path, fmt: str):
    """meshio's reader for the format, its console output kept out of the way (what matters is raised)."""
    import contextlib
    import io as _io

    import meshio

    reader = {"gmsh22": meshio.gmsh.read, "vtu": meshio.vtu.read, "xdmf": meshio.xdmf.read}[fmt]
    sink = _io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            return reader(str(path))
    except (Exception, SystemExit) as err:  # meshio raises many types (and exits on some); report the file
        text = " ".join(str(err).split()) or type(err).__name__
        text = text if len(text) <= 200 else text[:200] + "..."
        if fmt == "gmsh22":
            text += _gmsh_hint(path, err)
        raise GeometryError(f"{path}: meshio could not read it as {validate.expected_format(fmt)}: "
                            f"{type(err).__name__}: {text}") from None


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


def read(path, *, length_unit: str = "mm", dim: int | None = None, check_size: bool = True) -> Mesh:
    """Read a triangle or tetrahedron mesh with region and boundary names.

    length_unit: the unit of the file's coordinates ("mm", "cm", "m", "um" or "µm"); points are
    scaled to mm. dim: 3 refuses anything but a tetrahedral mesh (2 anything but triangles).
    check_size: refuse a mesh whose bounding box is far too small or large for any species' heart
    (`geometry.validate.check_size`: a mesh in metres read as mm). Before reading, the path must be
    a regular file below `geometry.validate.MAX_BYTES` of the format its suffix names, and the data
    of an XDMF file must lie in its folder. Every refusal is a GeometryError naming the file.
    """
    path = Path(path)
    fmt = _format(path)
    scale = validate.length_scale(length_unit)
    if dim not in (None, 2, 3):
        raise GeometryError(f"dim {dim!r}; allowed: 2 (triangles), 3 (tetrahedra) or None (either)")
    validate.input_file(path, "mesh")
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
        return _mesh_from_meshio(m, path, scale, length_unit, dim, check_size)
    except GeometryError as err:
        msg = str(err)
        raise GeometryError(msg if msg.startswith(f"{path}:") else f"{path}: {msg}") from None


def _mesh_from_meshio(m, path: Path, scale: float, length_unit: str, need: int | None, check_size: bool) -> Mesh:
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
    tags = m.cell_data.get("gmsh:physical")
    cells, regions, facets, ftags = [], [], [], []
    for k, block in enumerate(m.cells):
        t = tags[k] if tags is not None else np.zeros(len(block.data), int)
        if block.type == _CELL[dim]:
            cells.append(block.data)
            regions.append(np.asarray(t, int))
        elif block.type == _FACET[dim]:
            facets.append(block.data)
            ftags.append(np.asarray(t, int))
    names = {str(k): (int(v[0]), int(v[1])) for k, v in m.field_data.items()}
    region_names = {k: t for k, (t, d) in names.items() if d == dim} or None
    boundary_names = {k: t for k, (t, d) in names.items() if d == dim - 1} or None
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
        mesh = Mesh(points, cells, np.concatenate(regions), region_names, facets, ftags, boundary_names)
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


def write(path, mesh: Mesh, *, point_data: dict | None = None) -> Path:
    """Write `mesh` (and optional nodal fields) to .msh, .vtu or .xdmf, atomically."""
    import meshio

    path = Path(path)
    fmt = _format(path)
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
