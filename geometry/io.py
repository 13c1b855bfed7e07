"""Mesh files through meshio: Gmsh .msh (physical groups), VTU and XDMF.

Region labels and boundary tags travel as the cell data ``gmsh:physical`` of the
cell and facet blocks; their names as meshio field data ``name -> [tag, dim]``
(Gmsh physical names; a VTU ``FieldData`` and an XDMF ``Information`` element,
which meshio reads but does not write, so they are added here).
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

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


def read(path) -> Mesh:
    """Read a triangle or tetrahedron mesh with region and boundary names."""
    import meshio

    path = Path(path)
    fmt = _format(path)
    if not path.exists():
        raise GeometryError(f"{path}: no such file")
    try:
        m = meshio.read(path, file_format="gmsh" if fmt == "gmsh22" else fmt)
    except (Exception, SystemExit) as err:  # meshio raises many types (and exits on some); report the file
        raise GeometryError(f"{path}: meshio could not read it as {fmt}: {err}") from err
    dim = 3 if any(b.type == "tetra" for b in m.cells) else 2
    if not any(b.type == _CELL[dim] for b in m.cells):
        raise GeometryError(f"{path}: no triangle or tetra cells (found {[b.type for b in m.cells]})")
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
    points = np.asarray(m.points, float)
    if dim == 2 and points.shape[1] == 3:
        if np.any(points[:, 2] != 0):
            raise GeometryError(f"{path}: triangle mesh with non-zero z coordinates (surface meshes are not supported)")
        points = points[:, :2]
    facets = np.concatenate(facets) if facets else None
    ftags = np.concatenate(ftags) if ftags else None
    if facets is not None and boundary_names is not None:
        keep = np.isin(ftags, list(boundary_names.values()))
        facets, ftags = facets[keep], ftags[keep]
    mesh = Mesh(points, np.concatenate(cells), np.concatenate(regions), region_names, facets, ftags, boundary_names)
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
