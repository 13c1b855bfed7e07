"""Voxel label images (EMIDEC convention) to grids with remote / border / core regions.

EMIDEC (Lalande et al. 2020, the MICCAI EMIDEC challenge): 0 background,
1 LV cavity, 2 healthy myocardium, 3 infarct, 4 no-reflow (microvascular
obstruction, inside the infarct). Tissue is 2, 3, 4; the core is 3 and 4; the
border zone is the myocardium within `border_width` mm of the core.
"""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from . import validate
from .errors import GeometryError
from .grid import Grid
from .ventricle import REGIONS

EMIDEC = {"background": 0, "cavity": 1, "myocardium": 2, "infarct": 3, "no_reflow": 4}


def _spacing(spacing, ndim: int) -> np.ndarray:
    h = np.asarray(spacing, float) if not isinstance(spacing, str) else np.array([np.nan])
    if h.ndim > 1 or h.size not in (1, ndim):
        raise GeometryError(f"spacing {np.asarray(spacing).tolist()} for a {ndim}-D image; allowed: one voxel "
                            f"size or {ndim} (mm)")
    h = np.broadcast_to(h, (ndim,))
    for a, v in enumerate(h):
        if not (np.isfinite(v) and v > 0):
            raise GeometryError(f"spacing along axis {a} is {v}; allowed: a finite voxel size > 0 (mm)")
    return h


def from_labels(labels, spacing, *, origin=None, border_width: float = 1.0) -> Grid:
    """A Grid with regions remote / border / core from an EMIDEC label image (2-D or 3-D).

    Refused: labels other than EMIDEC's (all named, with their voxel counts), and a border band
    narrower than a voxel (no myocardium voxel within `border_width` of the infarct, so the grid
    would have no border zone)."""
    from scipy.ndimage import distance_transform_edt

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise GeometryError(f"label image must be a 2-D or 3-D integer array, got {labels.ndim}-D {labels.dtype}; "
                            f"allowed: integer labels {sorted(EMIDEC.values())} (saved e.g. as "
                            "labels.astype(np.int16))")
    values, counts = np.unique(labels, return_counts=True)
    unexpected = ~np.isin(values, list(EMIDEC.values()))
    if unexpected.any():
        bad = values[unexpected]
        idx = tuple(int(i) for i in np.argwhere(labels == bad[0])[0])
        listed = ", ".join(f"{v} ({c} voxels)" for v, c in zip(bad[:8].tolist(), counts[unexpected][:8].tolist()))
        raise GeometryError(f"label {bad[0]} at voxel {idx} is not an EMIDEC label (unexpected labels: {listed}"
                            f"{', ...' if bad.size > 8 else ''}); allowed: {EMIDEC}")
    if not (np.isfinite(border_width) and border_width >= 0):
        raise GeometryError(f"border_width {border_width}; allowed: a finite distance >= 0 (mm)")
    spacing = _spacing(spacing, labels.ndim)
    tissue = labels >= EMIDEC["myocardium"]
    core = labels >= EMIDEC["infarct"]
    if not tissue.any():
        raise GeometryError("label image has no myocardium (labels 2, 3 or 4)")
    out = np.where(tissue, REGIONS["remote"], 0)
    if core.any():
        dist = distance_transform_edt(~core, sampling=spacing)  # mm to the nearest core voxel
        band = tissue & (dist <= border_width)
        if border_width > 0 and (tissue & ~core).any() and not (band & ~core).any():
            raise GeometryError(
                f"border_width {border_width:g} mm is narrower than a voxel (spacing "
                f"{' x '.join(f'{v:g}' for v in spacing)} mm): no myocardium voxel lies within it of the infarct, so "
                f"the grid would have no border zone; allowed: border_width >= {float(spacing.min()):g} mm (the "
                "smallest voxel size) or a finer image (resample it to a smaller spacing)")
        out = np.where(band, REGIONS["border"], out)
        out = np.where(core, REGIONS["core"], out)
    names = {k: v for k, v in REGIONS.items() if (out == v).any()}
    return Grid(out, spacing, origin, names)


def _npz_member(path: Path, z, key: str) -> np.ndarray:
    """One array of an open .npz, refusing pickles and members that would unpack beyond the size limit."""
    try:
        size = z.zip.getinfo(f"{key}.npy").file_size
    except (KeyError, AttributeError):
        size = 0
    if size > validate.MAX_BYTES:
        raise GeometryError(f"{path}: array {key!r} unpacks to {size} bytes, above the limit of "
                            f"{validate.MAX_BYTES} bytes; allowed: a smaller image")
    return z[key]


def _load_error(path: Path, err: BaseException, kind: str) -> GeometryError:
    text = " ".join(str(err).split())[:200]
    if "pickle" in text.lower() or "object arrays" in text.lower():
        why = ("it holds pickled Python objects (object arrays), which are not read; allowed: plain numeric "
               "arrays (np.savez(path, labels=labels.astype(np.int16), spacing=...))")
    elif isinstance(err, zipfile.BadZipFile) or "zip" in text.lower() or isinstance(err, EOFError):
        why = f"the file is truncated or corrupt ({type(err).__name__}: {text}); write it again"
    else:
        why = f"{type(err).__name__}: {text}"
    return GeometryError(f"{path}: cannot be read as a {kind}: {why}")


def _grid_file(path: Path, z, spacing) -> Grid:
    """A grid.npz as `paracrine mesh` writes it: region labels with their names (not EMIDEC labels)."""
    try:
        names = json.loads(str(_npz_member(path, z, "names")))
        if not isinstance(names, dict):
            raise ValueError(f"a {type(names).__name__}")
    except ValueError as err:
        raise GeometryError(f"{path}: array 'names' is not a JSON object of region name -> label ({err}); "
                            "allowed: the grid.npz that `paracrine mesh` writes") from None
    if "spacing" not in z.files and spacing is None:
        raise GeometryError(f"{path}: no voxel spacing in the file; pass spacing= (mm)")
    h = _npz_member(path, z, "spacing") if spacing is None else spacing
    origin = _npz_member(path, z, "origin") if "origin" in z.files else None
    try:
        return Grid(_npz_member(path, z, "labels"), h, origin, names)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None


def read_labels(path, *, spacing=None, border_width: float = 1.0) -> Grid:
    """Read a label image: .npy (spacing required), .npz (arrays `labels` and optionally `spacing`,
    `origin`), or NIfTI .nii / .nii.gz (spacing and origin from the header, in mm; needs nibabel).
    A grid.npz written by `paracrine mesh` (it carries `names`) is read as that grid, its labels
    being regions. Not regular files, files above 2 GiB, truncated or pickled arrays are refused."""
    path = Path(path)
    name = path.name.lower()
    validate.input_file(path, "label image")
    origin = None
    if name.endswith(".npy"):
        try:
            labels = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise _load_error(path, err, "NumPy .npy label array") from None
        if not isinstance(labels, np.ndarray):
            labels.close()
            raise GeometryError(f"{path}: holds a .npz archive, not a .npy array; rename it to .npz")
    elif name.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise GeometryError(f"{path}: holds a single .npy array, not a .npz archive; rename it to .npy")
                if "labels" not in z.files:
                    raise GeometryError(f"{path}: no array 'labels' (found {sorted(z.files)})")
                if "names" in z.files:
                    return _grid_file(path, z, spacing)
                labels = _npz_member(path, z, "labels")
                spacing = _npz_member(path, z, "spacing") if spacing is None and "spacing" in z.files else spacing
                origin = _npz_member(path, z, "origin") if "origin" in z.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            if isinstance(err, GeometryError):
                raise
            raise _load_error(path, err, "NumPy .npz label image") from None
    elif name.endswith((".nii", ".nii.gz")):
        try:
            import nibabel
        except ImportError:
            raise GeometryError(f"{path}: reading NIfTI needs nibabel (pip install 'paracrine-pde[nifti]')") from None
        try:
            img = nibabel.load(str(path))
            labels = np.asarray(img.dataobj)
            unit = img.header.get_xyzt_units()[0]
        except Exception as err:  # nibabel raises several types on corrupt files
            raise _load_error(path, err, "NIfTI label image") from None
        if np.issubdtype(labels.dtype, np.floating):
            if not np.all(np.isfinite(labels) & (labels == np.round(labels))):
                idx = tuple(int(i) for i in np.argwhere(~np.isfinite(labels) | (labels != np.round(labels)))[0])
                raise GeometryError(f"{path}: label {labels[idx]} at voxel {idx} is not an integer; allowed: "
                                    f"EMIDEC labels {sorted(EMIDEC.values())}")
        labels = labels.astype(np.int64)
        scale = {"meter": 1000.0, "micron": 1e-3}.get(unit, 1.0)  # the header's unit; "unknown" is taken as mm
        spacing = np.asarray(img.header.get_zooms()[: labels.ndim], float) * scale if spacing is None else spacing
        origin = img.affine[: labels.ndim, 3] * scale
    else:
        raise GeometryError(f"{path}: unsupported label image {path.suffix!r}; allowed: .npy, .npz, .nii, .nii.gz")
    if spacing is None:
        raise GeometryError(f"{path}: no voxel spacing in the file; pass spacing= (mm)")
    try:
        return from_labels(labels, spacing, origin=origin, border_width=border_width)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None


# ---------- VTK image data (.vti): ParaView opens it; geometry.read reads it back ----------

_VTK_TYPES = {"Int8": "<i1", "UInt8": "<u1", "Int16": "<i2", "UInt16": "<u2", "Int32": "<i4", "UInt32": "<u4",
              "Int64": "<i8", "UInt64": "<u8", "Float32": "<f4", "Float64": "<f8"}
#: the cell array of region labels that write_vti writes
VTI_ARRAY = "region"


def _atomic_write(path: Path, data: bytes) -> Path:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_npz(path, grid: Grid) -> Path:
    """The grid.npz of `paracrine mesh`: labels, spacing, origin and the region names (JSON)."""
    import io as _io

    buf = _io.BytesIO()
    np.savez_compressed(buf, labels=grid.labels, spacing=grid.spacing, origin=grid.origin,
                        names=json.dumps(grid.region_names))
    return _atomic_write(Path(path), buf.getvalue())


def write_vti(path, grid: Grid) -> Path:
    """Write a Grid as VTK XML image data (.vti), atomically.

    The voxels are the image's cells: WholeExtent 0..n per axis, Origin the corner of voxel 0
    (the Grid's origin is its centre), Spacing in mm; CellData array "region" (Int32, zlib
    compressed, 0 = not tissue) and the region names as FieldData arrays name -> label. A 2-D
    grid has extent 0 0 in z (a flat image).
    """
    import base64
    import xml.etree.ElementTree as ET

    path = Path(path)
    n = list(grid.shape) + [0] * (3 - grid.dim)
    h = list(grid.spacing) + [1.0] * (3 - grid.dim)
    corner = [o - s / 2 for o, s in zip(grid.origin, grid.spacing)] + [0.0] * (3 - grid.dim)
    extent = " ".join(f"0 {k}" for k in n)
    root = ET.Element("VTKFile", type="ImageData", version="1.0", byte_order="LittleEndian", header_type="UInt64",
                      compressor="vtkZLibDataCompressor")
    image = ET.SubElement(root, "ImageData", WholeExtent=extent, Origin=" ".join(repr(float(v)) for v in corner),
                          Spacing=" ".join(repr(float(v)) for v in h))
    fd = ET.SubElement(image, "FieldData")
    for name, label in grid.region_names.items():
        e = ET.SubElement(fd, "DataArray", type="Int32", Name=name, NumberOfTuples="1", format="ascii")
        e.text = str(int(label))
    piece = ET.SubElement(image, "Piece", Extent=extent)
    ET.SubElement(piece, "PointData")
    cd = ET.SubElement(piece, "CellData", Scalars=VTI_ARRAY)
    raw = np.ascontiguousarray(grid.labels.ravel(order="F").astype("<i4")).tobytes()  # x fastest
    packed = zlib.compress(raw, 6)
    header = np.array([1, len(raw), len(raw), len(packed)], "<u8").tobytes()
    e = ET.SubElement(cd, "DataArray", type="Int32", Name=VTI_ARRAY, NumberOfComponents="1", format="binary",
                      RangeMin=str(int(grid.labels.min())), RangeMax=str(int(grid.labels.max())))
    e.text = (base64.b64encode(header) + base64.b64encode(packed)).decode("ascii")
    ET.indent(root)
    text = b'<?xml version="1.0"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"
    return _atomic_write(path, text)


class _Stream:
    """Bytes of one DataArray: inline base64 text, or appended data (raw or base64) from an offset."""

    def __init__(self, data: bytes, b64: bool):
        self.data, self.b64, self.pos = data, b64, 0

    def take(self, n: int) -> bytes:
        import base64

        if not self.b64:
            out = self.data[self.pos:self.pos + n]
            self.pos += n
        else:
            chars = -(-n // 3) * 4
            out = base64.b64decode(self.data[self.pos:self.pos + chars])[:n]
            self.pos += chars
        if len(out) < n:
            raise ValueError(f"the data ends after {len(out)} of {n} bytes")
        return out

    def peek(self, n: int) -> bytes:
        pos = self.pos
        out = self.take(n)
        self.pos = pos
        return out


def _decompress(block: bytes, compressor: str) -> bytes:
    if compressor == "vtkZLibDataCompressor":
        return zlib.decompress(block)
    if compressor == "vtkLZMADataCompressor":
        import lzma

        return lzma.decompress(block)
    raise ValueError(f"compressor {compressor!r} is not supported (allowed: none, vtkZLibDataCompressor, "
                     "vtkLZMADataCompressor); save it again without compression or with ZLib")


def _array_bytes(stream: _Stream, head: str, compressor: str | None) -> bytes:
    hb = 8 if head == "UInt64" else 4
    ht = "<u8" if hb == 8 else "<u4"
    if not compressor:
        if stream.b64 and hb % 3 and not stream.data[stream.pos:stream.pos + -(-hb // 3) * 4].endswith(b"="):
            # header and data base64-encoded together (as VTK writes uncompressed binary)
            n = int(np.frombuffer(stream.peek(hb), ht)[0])
            return stream.take(hb + n)[hb:]
        n = int(np.frombuffer(stream.take(hb), ht)[0])
        return stream.take(n)
    k = int(np.frombuffer(stream.peek(hb), ht)[0])   # the number of compressed blocks
    if k * 8 > len(stream.data):
        raise ValueError(f"the header gives {k} compressed blocks, more than the file holds")
    words = np.frombuffer(stream.take((3 + k) * hb), ht).astype(np.int64)
    if k * int(words[1]) > validate.MAX_BYTES:
        raise ValueError(f"the data unpacks to {k * int(words[1])} bytes, above the limit of {validate.MAX_BYTES} "
                         "bytes; allowed: a smaller image")
    packed = stream.take(int(words[3:].sum()))
    out, at = [], 0
    for c in words[3:]:
        out.append(_decompress(packed[at:at + int(c)], compressor))
        at += int(c)
    return b"".join(out)


def read_vti(path, *, regions=None, tags: str | None = None) -> Grid:
    """A Grid from a VTK XML image (.vti): a CellData array of labels (voxels are cells) or a PointData
    array (voxels are points), ASCII, binary or appended (raw or base64), uncompressed or compressed
    with zlib or lzma. `tags` names the array (default: the only integer array, "region" if there
    are several); `regions` maps names to its values as for meshes (voxels whose value is in no region
    become background, named in a warning; 0 is background). Without `regions` the names are the
    FieldData arrays name -> label that write_vti writes, or "tissue<label>"."""
    import warnings
    import xml.etree.ElementTree as ET

    path = Path(path)
    validate.input_file(path, "VTK image")
    validate.sniff(path, "vti")
    raw = path.read_bytes()
    appended = b""
    cut = raw.find(b"<AppendedData")
    if cut >= 0:
        body = raw[cut:]
        start = body.find(b"_", body.find(b">") + 1)
        stop = body.rfind(b"</AppendedData>")
        encoding = b'encoding="base64"' in body[:body.find(b">")]
        appended = body[start + 1:stop if stop > 0 else len(body)]
        if encoding:
            appended = appended.strip()
        raw = raw[:cut] + b"</ImageData></VTKFile>" if b"</ImageData>" not in raw[:cut] else raw[:cut] + b"</VTKFile>"
    else:
        encoding = False

    def bad(why: str) -> GeometryError:
        return GeometryError(f"{path}: cannot be read as a VTK image (.vti): {why}")

    try:
        root = ET.fromstring(raw)
    except ET.ParseError as err:
        raise bad(f"not well-formed XML ({err}): the file is truncated or corrupt; write it again") from None
    if root.get("type") != "ImageData" or root.find("ImageData") is None:
        raise bad(f"the VTKFile holds {root.get('type')!r}, not ImageData; allowed: a .vti image (for an unstructured "
                  "grid, use .vtu)")
    image = root.find("ImageData")
    pieces = image.findall("Piece")
    if len(pieces) != 1:
        raise bad(f"{len(pieces)} pieces; allowed: one Piece (merge the pieces in ParaView: Merge Blocks)")
    head = root.get("header_type", "UInt32")
    compressor = root.get("compressor")
    if root.get("byte_order", "LittleEndian") != "LittleEndian":
        raise bad("byte_order BigEndian; allowed: LittleEndian")
    try:
        ext = [int(v) for v in image.get("WholeExtent", "").split()]
        origin = [float(v) for v in image.get("Origin", "0 0 0").split()]
        spacing = [float(v) for v in image.get("Spacing", "1 1 1").split()]
        if len(ext) != 6 or len(origin) != 3 or len(spacing) != 3:
            raise ValueError("WholeExtent needs 6 integers, Origin and Spacing 3 numbers")
    except ValueError as err:
        raise bad(f"WholeExtent {image.get('WholeExtent')!r}, Origin {image.get('Origin')!r}, Spacing "
                  f"{image.get('Spacing')!r}: {err}") from None
    direction = image.get("Direction")
    if direction is not None and [float(v) for v in direction.split()] != [1, 0, 0, 0, 1, 0, 0, 0, 1]:
        raise bad(f"Direction {direction!r} is not the identity; allowed: axis-aligned images (resample it)")
    def decode(e) -> np.ndarray:
        vtype = e.get("type")
        if vtype not in _VTK_TYPES:
            raise ValueError(f"type {vtype!r}; allowed: {sorted(_VTK_TYPES)}")
        dtype = np.dtype(_VTK_TYPES[vtype])
        fmt = e.get("format", "ascii")
        if fmt == "ascii":
            return np.array((e.text or "").split(), dtype=float if dtype.kind == "f" else np.int64)
        if fmt == "binary":
            stream = _Stream((e.text or "").strip().encode("ascii"), True)
        elif fmt == "appended":
            stream = _Stream(appended, encoding)
            stream.pos = int(e.get("offset", "0"))
        else:
            raise ValueError(f"format {fmt!r}; allowed: ascii, binary or appended")
        return np.frombuffer(_array_bytes(stream, head, compressor), dtype)

    fd = image.find("FieldData")
    names = {}
    for e in ([] if fd is None else fd.findall("DataArray")):
        if e.get("NumberOfTuples", "1") == "1" and e.get("type", "").startswith(("Int", "UInt")):
            try:
                vals = decode(e)
            except (ValueError, TypeError, zlib.error, OSError):
                continue  # field data other than region names
            if vals.size == 1 and e.get("Name"):
                names[e.get("Name")] = int(vals[0])
    found = {}
    for where in ("CellData", "PointData"):
        sec = pieces[0].find(where)
        for e in ([] if sec is None else sec.findall("DataArray")):
            found[e.get("Name")] = (where, e)
    if not found:
        raise bad("no CellData or PointData array; allowed: an image with an integer array of region labels")
    if tags is None:
        ints = [k for k, (_, e) in found.items() if e.get("type", "").startswith(("Int", "UInt"))]
        if len(ints) == 1 or VTI_ARRAY in ints:
            tags = ints[0] if len(ints) == 1 else VTI_ARRAY
        else:
            listed = ", ".join(f"{k!r} ({e.get('type')})" for k, (_, e) in found.items())
            raise bad(f"{'no integer array' if not ints else f'{len(ints)} integer arrays'} among {listed}: which "
                      "holds the regions? allowed: name it with tags (geometry.tags, --tags)")
    if tags not in found:
        raise bad(f"no array {tags!r} (tags = {tags!r}); the image's arrays: {sorted(found)}")
    where, e = found[tags]
    vtype = e.get("type")
    if vtype not in _VTK_TYPES or int(e.get("NumberOfComponents", "1")) != 1:
        raise bad(f"array {tags!r} is {vtype} with {e.get('NumberOfComponents', '1')} components; allowed: one "
                  "integer (or whole-number) value per voxel")
    try:
        values = decode(e)
    except zlib.error as err:
        raise bad(f"array {tags!r}: the compressed data is corrupt (zlib: {err}); write the file again") from None
    except (ValueError, TypeError, OSError) as err:
        raise bad(f"array {tags!r}: {' '.join(str(err).split())[:200]}") from None
    n = [ext[2 * a + 1] - ext[2 * a] for a in range(3)]
    if where == "PointData":
        n = [k + 1 for k in n]
    else:
        n = [max(k, 1) for k in n]
    keep = [a for a in range(3) if ext[2 * a + 1] > ext[2 * a]]
    if len(keep) < 2:
        raise bad(f"WholeExtent {ext} spans {len(keep)} axes; allowed: a 2-D or 3-D image")
    if values.size != int(np.prod(n)):
        raise bad(f"array {tags!r} has {values.size} values for {' x '.join(map(str, n))} "
                  f"{'cells' if where == 'CellData' else 'points'} (WholeExtent {ext}); allowed: one value per "
                  f"{'cell' if where == 'CellData' else 'point'} of the extent")
    try:
        labels = validate.integer_tags(values, tags).reshape(n, order="F")
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None
    labels = labels.reshape([n[a] for a in keep], order="F") if len(keep) < 3 else labels
    h = np.array([spacing[a] for a in keep])
    o = np.array([origin[a] + ext[2 * a] * spacing[a] for a in keep])
    if where == "CellData":
        o = o + h / 2   # the Grid's origin is the centre of voxel 0
    try:
        if regions is not None:
            rmap = validate.region_map(regions)
            lab, rn, note = validate.apply_region_map(labels, rmap, what="voxels", background=0,
                                                     array=tags)
            if note:
                warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
            return Grid(lab, h, o, rn)
        if (labels < 0).any():
            raise GeometryError(f"array {tags!r} holds negative labels ({int(labels.min())}); allowed: labels >= 0 "
                                "(0 = not tissue), or a region map")
        present = sorted(int(v) for v in np.unique(labels) if v)
        rn = {k: v for k, v in names.items() if v in present}
        rn.update({f"tissue{v}": v for v in present if v not in rn.values()} if rn else {})
        return Grid(labels, h, o, rn or None)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None
