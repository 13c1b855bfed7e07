"""The label-image path on a synthetic EMIDEC image."""

import numpy as np
import pytest

from paracrine import geometry
from paracrine.geometry import GeometryError


def synthetic(n=60, h=0.25):
    """A ring of myocardium around a cavity with a transmural infarct wedge and a no-reflow core."""
    ax = (np.arange(n) - n / 2 + 0.5) * h
    x, y = np.meshgrid(ax, ax, indexing="ij")
    r, th = np.hypot(x, y), np.degrees(np.arctan2(y, x))
    lab = np.zeros((n, n), np.int64)
    lab[r < 4] = 1
    lab[(r >= 4) & (r < 6.5)] = 2
    wedge = (r >= 4) & (r < 6.5) & (np.abs(th - 90) < 30)
    lab[wedge] = 3
    lab[wedge & (np.abs(th - 90) < 8) & (r < 5)] = 4
    return lab, h, np.stack([x, y], -1)


def test_regions_and_border_width():
    lab, h, x = synthetic()
    grid = geometry.from_labels(lab, h, border_width=1.0)
    rn = grid.region_names
    assert set(rn) == {"remote", "border", "core"}
    assert np.array_equal(grid.labels == rn["core"], lab >= 3)
    assert np.array_equal(grid.labels > 0, lab >= 2)
    from scipy.spatial import cKDTree

    core = x[grid.labels == rn["core"]]
    d_b, _ = cKDTree(core).query(x[grid.labels == rn["border"]])
    d_r, _ = cKDTree(core).query(x[grid.labels == rn["remote"]])
    assert d_b.max() <= 1.0 + 1e-9 and d_b.max() > 1.0 - h
    assert d_r.min() > 1.0
    # the grid runs in the solver as it is
    disc = geometry.discretise(grid)
    assert not disc.homogeneous and disc.mass.sum() == pytest.approx((lab >= 2).sum() * h * h)


def test_read_npz_and_npy(tmp_path):
    lab, h, _ = synthetic()
    np.savez(tmp_path / "img.npz", labels=lab, spacing=[h, h])
    np.save(tmp_path / "img.npy", lab)
    a = geometry.read_labels(tmp_path / "img.npz")
    b = geometry.read_labels(tmp_path / "img.npy", spacing=h)
    assert np.array_equal(a.labels, b.labels) and a.spacing == (h, h)
    with pytest.raises(GeometryError, match=r"img.npy: no voxel spacing in the file; pass spacing="):
        geometry.read_labels(tmp_path / "img.npy")


def test_label_image_errors(tmp_path):
    lab, h, _ = synthetic()
    lab[3, 5] = 9
    with pytest.raises(GeometryError, match=r"label 9 at voxel \(3, 5\) is not an EMIDEC label"):
        geometry.from_labels(lab, h)
    with pytest.raises(GeometryError, match="no myocardium"):
        geometry.from_labels(np.ones((4, 4), int), 1.0)
    with pytest.raises(GeometryError, match=r"unsupported label image '.png'"):
        (tmp_path / "a.png").write_bytes(b"x")
        geometry.read_labels(tmp_path / "a.png")
    np.savez(tmp_path / "bad.npz", image=np.zeros(3))
    with pytest.raises(GeometryError, match=r"bad.npz: no array 'labels'"):
        geometry.read_labels(tmp_path / "bad.npz")
