"""Checks of geometry inputs that refuse what would otherwise be silently wrong.

Topology (every Mesh, vectorised NumPy, a fraction of a second at 200k nodes):
duplicated nodes (a crack that stops diffusion), duplicated cells, facets shared by more
than two cells (non-manifold). Files (the readers): the path is a regular file of sane
size, data that an XDMF file points at stays in its folder, the length unit and the size
of a heart mesh in mm. Messages name the element and the value and say what is allowed;
the readers prefix the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np

from .errors import GeometryError

#: files above this size are refused before reading (bytes)
MAX_BYTES = 2 * 1024 ** 3

#: length units of mesh coordinates and their size in mm
LENGTH_UNITS = {"mm": 1.0, "cm": 10.0, "m": 1000.0, "um": 1e-3, "µm": 1e-3, "μm": 1e-3}

#: two nodes closer than this times the bounding-box diagonal are the same node
NODE_TOLERANCE = 1e-9

#: a mesh whose largest extent is this factor below the smallest species' or above the
#: largest species' is refused as being in the wrong length unit
SIZE_FACTOR = 30.0

_FIRST = 3  # elements listed in a message


def _fmt(x) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in np.asarray(x, float)) + "]"


def _n(k: int, what: str) -> str:
    return f"{k} {what}{'' if k == 1 else 's'}"


def _size(n: float) -> str:
    for unit, k in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{int(n)} bytes"


# ---------- files ----------

def input_file(path: Path, what: str) -> os.stat_result:
    """Refuse a path that is not a regular file (directory, FIFO, device, dangling link) or is too large."""
    try:
        st = os.stat(path)  # follows links: a link to /dev/zero is a character device
    except FileNotFoundError:
        raise GeometryError(f"{path}: no such file") from None
    except OSError as err:
        raise GeometryError(f"{path}: cannot be read ({err.strerror}); allowed: a regular {what} file") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise GeometryError(f"{path}: is {kind}{link}, not a file; allowed: a regular {what} file")
    if st.st_size > MAX_BYTES:
        raise GeometryError(f"{path}: {_size(st.st_size)} ({st.st_size} bytes) is larger than the limit of "
                            f"{_size(MAX_BYTES)} for a {what} file; allowed: a smaller (coarser) {what}")
    return st


def xdmf_data_files(path: Path) -> list[Path]:
    """The files an XDMF file's DataItems point at, each checked to lie in the XDMF file's own folder."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise GeometryError(f"{path}: not an XDMF (XML) file ({err}); allowed: an XDMF mesh file as meshio or "
                            "FEniCS write it, with its .h5 data next to it") from None
    folder = path.resolve().parent
    out = []
    for k, item in enumerate(root.iter()):
        tag = item.tag.rsplit("}", 1)[-1]
        if tag == "include" and item.get("href"):  # XInclude
            ref = item.get("href")
        elif tag == "DataItem" and item.get("Format", "XML").upper() in ("HDF", "BINARY"):
            text = (item.text or "").strip()
            ref = text.split(":", 1)[0] if item.get("Format", "").upper() == "HDF" else text
        else:
            continue
        target = Path(ref)
        resolved = Path(os.path.normpath(folder / target))
        if target.is_absolute() or ".." in target.parts or folder not in resolved.parents:
            raise GeometryError(
                f"{path}: DataItem points at {ref!r}, outside the XDMF file's folder; allowed: a data file "
                f"next to the .xdmf, given by a relative name such as {path.with_suffix('.h5').name!r} (move "
                "the data file there and write its plain name)")
        if resolved not in [f for f, _ in out]:
            out.append((resolved, ref))
    for f, ref in out:
        try:
            input_file(f, "XDMF data (HDF5)")
        except GeometryError as err:
            raise GeometryError(f"{path}: DataItem points at {ref!r}: {err}") from None
    return [f for f, _ in out]


_MAGIC = {
    "gmsh22": ((b"$MeshFormat",), "a Gmsh mesh (.msh, format 2.2 or 4.1, ASCII or binary, starting with $MeshFormat)"),
    "vtu": ((b"<?xml", b"<VTKFile"), "a VTK XML unstructured grid (.vtu, starting with <?xml or <VTKFile)"),
    "xdmf": ((b"<?xml", b"<Xdmf"), "an XDMF file (.xdmf, XML starting with <?xml or <Xdmf, data in an .h5 next to it)"),
    "vtk": ((b"# vtk DataFile",), "a legacy VTK file (.vtk, starting with '# vtk DataFile')"),
    "vti": ((b"<?xml", b"<VTKFile"), "a VTK XML image (.vti, starting with <?xml or <VTKFile)"),
}


def expected_format(fmt: str) -> str:
    return _MAGIC[fmt][1]


def sniff(path: Path, fmt: str) -> None:
    """Refuse a file whose first bytes are not those of the format its suffix names."""
    magic, desc = _MAGIC[fmt]
    who = "cannot be read" if fmt == "vti" else "meshio could not read it"
    with open(path, "rb") as f:
        head = f.read(256)
    start = head.lstrip(b"\xef\xbb\xbf").lstrip()
    if not start:
        raise GeometryError(f"{path}: {who} as {desc}: the file is empty")
    if not start.startswith(magic):
        binary = sum(b < 9 or 13 < b < 32 or b > 126 for b in head) > len(head) // 10
        what = "binary data" if binary else f"text starting {start[:24].decode('ascii', 'replace')!r}"
        raise GeometryError(f"{path}: {who} as {desc}: the file holds {what}; give a mesh file "
                            "whose suffix matches its format (e.g. .msh, .vtu, .vtk, .xdmf, .vti)")


def vtu_counts(path: Path) -> tuple[int, int] | None:
    """NumberOfPoints and NumberOfCells of the first Piece of a .vtu (None if not found)."""
    import xml.etree.ElementTree as ET

    try:
        for _, e in ET.iterparse(path, events=("start",)):
            if e.tag.rsplit("}", 1)[-1] == "Piece":
                return int(e.get("NumberOfPoints", -1)), int(e.get("NumberOfCells", -1))
    except (ET.ParseError, ValueError):
        return None
    return None


def length_scale(length_unit: str) -> float:
    """Size of one coordinate unit in mm."""
    if length_unit not in LENGTH_UNITS:
        raise GeometryError(f"length unit {length_unit!r}; allowed: {list(LENGTH_UNITS)} (mesh coordinates are "
                            "scaled to mm)")
    return LENGTH_UNITS[length_unit]


def species_extents() -> dict[str, float]:
    """Largest bounding-box extent (mm) of each species' truncated-ellipsoid LV."""
    from .ventricle import SPECIES

    return {k: max(2 * s.a_epi, s.c_epi + s.base) for k, s in SPECIES.items() if k != "reference"}


def check_size(points: np.ndarray, length_unit: str) -> None:
    """Refuse a mesh (points in mm) far too small or large for any species' heart: a wrong length unit."""
    ext = np.ptp(points, axis=0)
    largest = float(ext.max())
    sizes = species_extents()
    lo, hi = min(sizes.values()), max(sizes.values())
    if lo / SIZE_FACTOR <= largest <= hi * SIZE_FACTOR:
        return
    raw = largest / LENGTH_UNITS[length_unit]  # extent in the file's own numbers
    mid = np.sqrt(lo * hi)
    fits = sorted((u for u, k in LENGTH_UNITS.items() if lo / 3 <= raw * k <= hi * 3 and u not in ("µm", "μm")),
                  key=lambda u: abs(np.log(raw * LENGTH_UNITS[u] / mid)))
    hint = (f"if the file is in {fits[0]}, set geometry.length_unit = \"{fits[0]}\" in the scenario "
            f"(geometry.read(..., length_unit=\"{fits[0]}\"))" if fits else
            f"set geometry.length_unit in the scenario to the file's unit (allowed: {list(LENGTH_UNITS)[:4]})")
    small = "small" if largest < lo else "large"
    raise GeometryError(
        f"bounding box {' x '.join(f'{v:.4g}' for v in ext)} mm (read with length_unit = {length_unit!r}) is far "
        f"too {small} for a heart: a left ventricle is {lo:.2g} mm (mouse) to {hi:.2g} mm (human) across, a rat's "
        f"~{sizes['rat']:.2g} mm, and meshes are read in mm unless told otherwise; {hint}")


def check_flat(points: np.ndarray) -> None:
    """Refuse 3-D points that all lie in one coordinate plane (a 2-D mesh saved with a constant z)."""
    ext = np.ptp(points, axis=0)
    diag = float(np.sqrt((ext ** 2).sum()))
    for a in np.flatnonzero(ext <= 1e-12 * max(diag, 1e-300)):
        raise GeometryError(
            f"all {len(points)} nodes have {'xyz'[a]} = {points[0, a]:.6g}: the mesh is flat (2-D), but a 3-D "
            "tetrahedral mesh is needed; mesh the volume (in gmsh: Mesh 3) and save the tetrahedra")


# ---------- topology ----------

def duplicate_nodes(points: np.ndarray, cells: np.ndarray) -> None:
    """Refuse two nodes that cells use at the same coordinates (within 1e-9 of the bounding-box diagonal)."""
    from scipy.spatial import cKDTree

    mask = np.zeros(len(points), bool)
    mask[cells.ravel()] = True
    used = np.flatnonzero(mask)
    p = points[used]
    diag = float(np.sqrt((np.ptp(p, axis=0) ** 2).sum()))
    if len(p) < 2 or diag == 0:
        return
    tol = NODE_TOLERANCE * diag
    pairs = cKDTree(p, balanced_tree=False, compact_nodes=False).query_pairs(tol, output_type="ndarray")
    if not len(pairs):
        return
    pairs = np.sort(used[pairs], axis=1)
    pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    copies = np.unique(pairs[:, 1])
    listed = ", ".join(f"node {j} = node {i} at {_fmt(points[i])}" for i, j in pairs[:_FIRST])
    q = points[np.unique(pairs)]
    ext = np.ptp(q, axis=0)
    where = ""
    if len(copies) >= 3 and points.shape[1] == 3:
        a = int(np.argmin(ext))
        if ext[a] <= tol:
            where = f", all on the plane {'xyz'[a]} = {q[0, a]:.6g}: a crack that stops diffusion across it"
    raise GeometryError(
        f"{_n(len(copies), 'duplicated node')}{where} (the same coordinates as another node within {tol:.2g} mm, "
        f"1e-9 of the bounding-box diagonal): {listed}{', ...' if len(pairs) > _FIRST else ''}; cells on different "
        "copies are not connected, so nothing diffuses between them. Merge coincident nodes before reading: "
        "`Coherence Mesh;` in gmsh, or in Python `pts, inv = np.unique(points.round(9), axis=0, "
        "return_inverse=True)` and then `cells = inv[cells]`")


def cell_topology(cells: np.ndarray, n_nodes: int) -> None:
    """Refuse duplicated cells, then facets shared by three or more cells (one row sort for both)."""
    s = np.sort(cells, axis=1)
    duplicate_cells(cells, s)
    nonmanifold_facets(s, n_nodes)


def duplicate_cells(cells: np.ndarray, s: np.ndarray | None = None) -> None:
    """Refuse two cells with the same nodes in any order (s: the cells with sorted rows)."""
    s = np.sort(cells, axis=1) if s is None else s
    mult = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5],
                    np.uint64)[: s.shape[1]]
    with np.errstate(over="ignore"):
        h = (s.astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)  # equal rows, equal hashes
    hs = np.sort(h)
    if not np.any(hs[1:] == hs[:-1]):
        return
    order = np.argsort(h, kind="stable")
    same = (h[order][1:] == h[order][:-1]) & np.all(s[order][1:] == s[order][:-1], axis=1)
    if not same.any():
        return  # a hash collision of different cells
    k = np.flatnonzero(same)
    pairs = np.sort(np.stack([order[k], order[k + 1]], 1), axis=1)
    pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
    listed = ", ".join(f"cell {j} = cell {i}" for i, j in pairs[:_FIRST])
    i0 = int(pairs[0, 0])
    raise GeometryError(
        f"{_n(len(pairs), 'duplicated cell')} (the same {s.shape[1]} nodes as another cell, in any order): {listed}"
        f"{', ...' if len(pairs) > _FIRST else ''} (cell {i0}: nodes {cells[i0].tolist()}); each cell must appear "
        "once (a cell listed twice counts its volume twice). Remove the copies, e.g. cells exported by two "
        "overlapping physical groups in gmsh")


def nonmanifold_facets(s: np.ndarray, n_nodes: int) -> None:
    """Refuse a facet (triangle of a tetrahedron, edge of a triangle) shared by three or more cells
    (s: cells with sorted rows, so that each facet's nodes come sorted)."""
    m, k = s.shape
    omit = [[c for c in range(k) if c != i] for i in range(k)]
    if float(n_nodes) ** (k - 1) < 2.0 ** 63:
        cols = [s[:, c].astype(np.int64) for c in range(k)]
        key = np.empty(m * k, np.int64)
        for i, keep in enumerate(omit):
            part = cols[keep[0]]
            for c in keep[1:]:
                part = part * n_nodes + cols[c]
            key[i * m:(i + 1) * m] = part
        ks = np.sort(key)
        if not np.any(ks[2:] == ks[:-2]):
            return
        _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        faces = np.concatenate([s[:, keep] for keep in omit])
        _, inv, counts = np.unique(faces, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        if not np.any(counts >= 3):
            return
    bad = np.flatnonzero(counts >= 3)
    rows = np.flatnonzero(inv == bad[0])
    owners = sorted((rows % m).tolist())
    nodes = s[rows[0] % m, omit[rows[0] // m]]
    facet, cell = ("facet", "tetrahedra") if k == 4 else ("edge", "triangles")
    raise GeometryError(
        f"{facet} with nodes {nodes.tolist()} is shared by {len(owners)} cells {owners} "
        f"({_n(len(bad), 'such ' + facet)} in all); in a conforming mesh a {facet} belongs to one cell (on the "
        f"boundary) or two: the {cell} overlap or meet in a fin. Remove the overlapping cells or remesh the volume")


# ---------- region maps: cell tags of a file -> named regions ----------

def region_map(regions, where: str = "regions") -> dict[str, tuple[int, ...]]:
    """Check a region map {name: tag or [tags]}: names non-empty text, tags integers >= 0, no tag in two
    regions. Returns name -> tuple of tags, in the order given."""
    if not isinstance(regions, dict) or not regions:
        raise GeometryError(f"{where} = {regions!r}; allowed: a table {{region name = tag or [tags]}} of integer cell "
                            "tags, e.g. {remote = 1, border = 2, core = 3}")
    out: dict[str, tuple[int, ...]] = {}
    owner: dict[int, str] = {}
    for name, val in regions.items():
        if not isinstance(name, str) or not name.strip():
            raise GeometryError(f"{where}: region name {name!r}; allowed: non-empty text")
        vals = list(val) if isinstance(val, (list, tuple)) else [val]
        ok = bool(vals) and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0
                                for v in vals)
        if not ok:
            raise GeometryError(f"{where}.{name} = {val!r}; allowed: an integer cell tag >= 0 or a non-empty list of "
                                "them (the values of the file's tag array), e.g. 2 or [2, 4]")
        for v in vals:
            if int(v) in owner:
                raise GeometryError(f"{where}: tag {int(v)} is given to both {owner[int(v)]!r} and {name!r}; allowed: "
                                    "each tag in one region")
            owner[int(v)] = name
        out[name] = tuple(int(v) for v in vals)
    return out


def integer_tags(values, name: str) -> np.ndarray:
    """A tag array as integers: integer dtype, or floats that are all whole numbers; else refused."""
    a = np.asarray(values)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise GeometryError(f"tag array {name!r} has shape {a.shape} ({a.shape[-1]} components per cell); allowed: one "
                            "integer per cell")
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.int64)
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.bool_):
        bad = ~np.isfinite(a) | (a != np.round(a)) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise GeometryError(f"tag array {name!r} holds {a.dtype} values that are not integers: cell {k} has "
                                f"{a[k].item()!r} ({int(bad.sum())} such cells); allowed: integer tags (one per cell)")
        return a.astype(np.int64)
    raise GeometryError(f"tag array {name!r} holds {a.dtype} values; allowed: integer tags (one per cell)")


def apply_region_map(tags: np.ndarray, regions: dict[str, tuple[int, ...]], *, what: str = "cells",
                     background: int | None = None, where: str = "regions", array: str = "tags"):
    """Labels 1..k (the regions in order) for integer `tags`; 0 where a tag is in no region.

    Refused: a region none of whose tags occurs. Returned with the labels and names: a warning text
    naming the tags that occur in no region and how many `what` each has (None if there are none);
    `background` (0 for a voxel image) is not counted as unused."""
    values, counts = np.unique(tags, return_counts=True)
    present = dict(zip(values.tolist(), counts.tolist()))
    census = ", ".join(f"{v} ({c} {what})" for v, c in list(present.items())[:12]) + (", ..." if len(present) > 12
                                                                                        else "")
    labels = np.zeros(tags.shape, np.int64)
    names = {}
    for k, (name, tt) in enumerate(regions.items(), start=1):
        if not any(t in present for t in tt):
            given = tt[0] if len(tt) == 1 else list(tt)
            raise GeometryError(f"{where}.{name} = {given}: no {what[:-1] if what.endswith('s') else what} has "
                                f"{'this tag' if len(tt) == 1 else 'any of these tags'}, so region {name!r} would "
                                f"be empty; the values of the file's {array!r} array: {census}; allowed: tags present in the file (or drop "
                                "the region)")
        labels[np.isin(tags, tt)] = k
        names[name] = k
    used = {t for tt in regions.values() for t in tt}
    unused = [(v, c) for v, c in present.items() if v not in used and v != background]
    note = None
    if unused:
        listed = ", ".join(f"{v} ({c} {what})" for v, c in unused)
        note = (f"values of the {array!r} array in no region of the region map: {listed}; these {what} are left out of the geometry (add the "
                f"tags to a region to keep them)")
    return labels, names, note


def border_band(spacing: float, border_width: float, *, spacing_key: str = "grid spacing",
                width_key: str = "border_width", default: bool = False) -> None:
    """Refuse a voxel LV whose border band is narrower than a voxel: no voxel centre but the core's own
    lies within `border_width` of the core, so the border zone would be empty (default: the width
    is the default one, a third of the wall)."""
    if border_width > 0 and border_width < spacing * (1 - 1e-9):
        raise GeometryError(
            f"{width_key} {border_width:g} mm{' (the default, a third of the wall)' if default else ''} is narrower than a voxel ({spacing_key} {spacing:g} mm): no voxel "
            f"outside the infarct lies within it of the infarct, so the grid would have no border zone; allowed: "
            f"{width_key} >= {spacing:g} mm, or a {spacing_key} <= {border_width:g} mm (or a tetrahedral mesh)")
