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
