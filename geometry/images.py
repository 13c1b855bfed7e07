"""Voxel label images (EMIDEC convention) to grids with remote / border / core regions.

EMIDEC (Lalande et al. 2020, the MICCAI EMIDEC challenge): 0 background,
1 LV cavity, 2 healthy myocardium, 3 infarct, 4 no-reflow (microvascular
obstruction, inside the infarct). Tissue is 2, 3, 4; the core is 3 and 4; the
border zone is the myocardium within `border_width` mm of the core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import GeometryError
from .grid import Grid
from .ventricle import REGIONS

EMIDEC = {"background": 0, "cavity": 1, "myocardium": 2, "infarct": 3, "no_reflow": 4}


def from_labels(labels, spacing, *, origin=None, border_width: float = 1.0) -> Grid:
    """A Grid with regions remote / border / core from an EMIDEC label image (2-D or 3-D)."""
    from scipy.ndimage import distance_transform_edt

    labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or not np.issubdtype(labels.dtype, np.integer):
        raise GeometryError(f"label image must be a 2-D or 3-D integer array, got {labels.ndim}-D {labels.dtype}")
    bad = np.setdiff1d(np.unique(labels), list(EMIDEC.values()))
    if bad.size:
        idx = tuple(int(i) for i in np.argwhere(labels == bad[0])[0])
        raise GeometryError(f"label {bad[0]} at voxel {idx} is not an EMIDEC label; allowed: {EMIDEC}")
    if not (np.isfinite(border_width) and border_width >= 0):
        raise GeometryError(f"border_width {border_width}; allowed: a finite distance >= 0 (mm)")
    spacing = np.broadcast_to(np.asarray(spacing, float), (labels.ndim,))
    tissue = labels >= EMIDEC["myocardium"]
    core = labels >= EMIDEC["infarct"]
    if not tissue.any():
        raise GeometryError("label image has no myocardium (labels 2, 3 or 4)")
    out = np.where(tissue, REGIONS["remote"], 0)
    if core.any():
        dist = distance_transform_edt(~core, sampling=spacing)  # mm to the nearest core voxel
        out = np.where(tissue & (dist <= border_width), REGIONS["border"], out)
        out = np.where(core, REGIONS["core"], out)
    names = {k: v for k, v in REGIONS.items() if (out == v).any()}
    return Grid(out, spacing, origin, names)


def read_labels(path, *, spacing=None, border_width: float = 1.0) -> Grid:
    """Read a label image: .npy (spacing required), .npz (arrays `labels` and optionally `spacing`,
    `origin`), or NIfTI .nii / .nii.gz (spacing and origin from the header; needs nibabel)."""
    path = Path(path)
    name = path.name.lower()
    if not path.exists():
        raise GeometryError(f"{path}: no such file")
    origin = None
    if name.endswith(".npy"):
        labels = np.load(path, allow_pickle=False)
    elif name.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
            if "labels" not in z:
                raise GeometryError(f"{path}: no array 'labels' (found {sorted(z.files)})")
            labels = z["labels"]
            spacing = z["spacing"] if spacing is None and "spacing" in z else spacing
            origin = z["origin"] if "origin" in z else None
    elif name.endswith((".nii", ".nii.gz")):
        try:
            import nibabel
        except ImportError:
            raise GeometryError(f"{path}: reading NIfTI needs nibabel (pip install 'paracrine-pde[nifti]')") from None
        img = nibabel.load(str(path))
        labels = np.asarray(img.dataobj).astype(np.int64)
        spacing = img.header.get_zooms()[: labels.ndim] if spacing is None else spacing
        origin = img.affine[: labels.ndim, 3]
    else:
        raise GeometryError(f"{path}: unsupported label image {path.suffix!r}; allowed: .npy, .npz, .nii, .nii.gz")
    if spacing is None:
        raise GeometryError(f"{path}: no voxel spacing in the file; pass spacing= (mm)")
    try:
        return from_labels(labels, spacing, origin=origin, border_width=border_width)
    except GeometryError as err:
        raise GeometryError(f"{path}: {err}") from None
