"""Voxel grids with a label image (0 = not tissue)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from .errors import GeometryError


@dataclasses.dataclass(frozen=True, eq=False)
class Grid:
    """A 2-D or 3-D voxel grid.

    labels:       integer array of the grid's shape; 0 marks voxels that are not tissue.
    spacing:      voxel edge lengths in mm, one per axis.
    origin:       centre of voxel (0, 0[, 0]) in mm.
    region_names: name -> label (labels > 0).
    """

    labels: np.ndarray
    spacing: tuple
    origin: tuple
    region_names: dict

    def __init__(self, labels, spacing, origin=None, region_names: Mapping[str, int] | None = None):
        labels = np.asarray(labels)
        if labels.ndim not in (2, 3):
            raise GeometryError(f"labels must be a 2-D or 3-D array, got {labels.ndim}-D shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise GeometryError(f"labels must be integers, got dtype {labels.dtype}")
        dim = labels.ndim
        spacing = tuple(float(s) for s in np.broadcast_to(np.asarray(spacing, float), (dim,)))
        for a, s in enumerate(spacing):
            if not (np.isfinite(s) and s > 0):
                raise GeometryError(f"spacing along axis {a} is {s}; it must be finite and > 0 (mm)")
        origin = (0.0,) * dim if origin is None else tuple(float(o) for o in np.broadcast_to(np.asarray(origin, float), (dim,)))
        if not all(np.isfinite(origin)):
            raise GeometryError(f"origin {origin} must be finite")
        if (labels < 0).any():
            idx = tuple(int(i) for i in np.argwhere(labels < 0)[0])
            raise GeometryError(f"label at voxel {idx} is {labels[idx]}; labels must be >= 0 (0 = not tissue)")
        present = sorted(int(v) for v in np.unique(labels) if v != 0)
        if not present:
            raise GeometryError("grid has no tissue voxels (every label is 0)")
        if region_names is None:
            region_names = {"tissue": present[0]} if len(present) == 1 else {f"tissue{v}": v for v in present}
        region_names = {str(k): int(v) for k, v in dict(region_names).items()}
        for name, v in region_names.items():
            if v <= 0:
                raise GeometryError(f"region {name!r} has label {v}; region labels must be > 0 (0 = not tissue)")
        missing = [v for v in present if v not in region_names.values()]
        if missing:
            idx = tuple(int(i) for i in np.argwhere(labels == missing[0])[0])
            raise GeometryError(
                f"label {missing[0]} (first at voxel {idx}) has no name; named labels are {sorted(region_names.values())}")
        labels = labels.astype(np.int32)
        labels.setflags(write=False)
        set_ = object.__setattr__
        set_(self, "labels", labels)
        set_(self, "spacing", spacing)
        set_(self, "origin", origin)
        set_(self, "region_names", region_names)

    @property
    def dim(self) -> int:
        return self.labels.ndim

    @property
    def shape(self) -> tuple:
        return self.labels.shape

    @property
    def voxel_volume(self) -> float:
        return float(np.prod(self.spacing))

    def centres(self) -> np.ndarray:
        """Voxel centres, shape (*shape, dim)."""
        axes = [o + h * np.arange(n) for o, h, n in zip(self.origin, self.spacing, self.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)

    def region_volumes(self) -> dict[str, float]:
        return {name: float((self.labels == v).sum()) * self.voxel_volume for name, v in self.region_names.items()}

    def __repr__(self) -> str:
        return f"Grid(shape={self.shape}, spacing={self.spacing}, regions={list(self.region_names)})"
