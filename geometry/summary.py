"""What a geometry is: counts, region volumes, wall thickness, element quality, section pictures."""

from __future__ import annotations

import itertools

import numpy as np

from .discretise import p1_couplings, p1_gradients
from .grid import Grid
from .mesh import Mesh


def _quality(mesh: Mesh) -> dict:
    """Aspect ratio R / (d r) (1 for the regular simplex) and the share of cells with an obtuse
    angle (triangles: an interior angle, tetrahedra: a dihedral angle > 90 deg), which makes
    some P1 couplings negative (the stiffness is then not an M-matrix)."""
    p = mesh.points[mesh.cells]
    d = mesh.dim
    grads, vol = p1_gradients(mesh.points, mesh.cells)
    faces = np.stack([np.delete(p, i, axis=1) for i in range(d + 1)], axis=1)  # (m, d+1, d, dim)
    if d == 2:
        face_area = np.linalg.norm(faces[:, :, 1] - faces[:, :, 0], axis=-1)
    else:
        face_area = 0.5 * np.linalg.norm(np.cross(faces[:, :, 1] - faces[:, :, 0], faces[:, :, 2] - faces[:, :, 0]), axis=-1)
    r_in = d * vol / face_area.sum(axis=1)
    # circumradius: centre c solves 2 (p_k - p_0) . c = |p_k|^2 - |p_0|^2
    A = 2 * (p[:, 1:] - p[:, :1])
    b = (p[:, 1:] ** 2).sum(-1) - (p[:, :1] ** 2).sum(-1)
    centre = np.linalg.solve(A, b[..., None])[..., 0]
    R = np.linalg.norm(centre - p[:, 0], axis=-1)
    aspect = R / (d * r_in)
    # angle between faces i and j is pi minus the angle between grad(phi_i) and grad(phi_j)
    obtuse = np.zeros(len(p), bool)
    for i, j in itertools.combinations(range(d + 1), 2):
        obtuse |= np.einsum("md,md->m", grads[:, i], grads[:, j]) > 1e-12 * np.abs(grads).max()
    return {"worst_aspect_ratio": float(aspect.max()), "median_aspect_ratio": float(np.median(aspect)),
            "obtuse_share": float(obtuse.mean())}


def negative_couplings(mesh: Mesh, *, rtol: float = 1e-12) -> dict:
    """Edges whose P1 coupling is negative (a positive off-diagonal entry of the stiffness K: K is
    not an M-matrix and values can go negative from the operator alone).

    With unit diffusivity in every region, g_e = sum_r G_{e,r}; an edge counts when g_e < -rtol
    max_e |g_e| (exact zeros of right-angled cells are not negative). Reported: the count and
    share of edges, the most negative coupling relative to the largest positive one
    (min g / max g), the sum of |negative| over the sum of positive couplings, and per region r
    the count of edges with G_{e,r} < 0 (couplings within that region's cells; an edge on an
    interface counts in both regions). operator="m-matrix" removes them
    (geometry.discretise.positive_conductances).
    """
    regions, _, _, _, G = p1_couplings(mesh)
    g = G.sum(axis=1)
    scale = np.abs(g).max() if len(g) else 0.0
    neg = g < -rtol * scale
    pos = g > 0
    tol_r = rtol * np.abs(G).max(axis=0) if len(g) else np.zeros(len(regions))
    return {"count": int(neg.sum()), "edges": int(len(g)), "share": float(neg.mean()) if len(g) else 0.0,
            "worst_ratio": float(g[neg].min() / g[pos].max()) if neg.any() and pos.any() else 0.0,
            "sum_ratio": float(-g[neg].sum() / g[pos].sum()) if neg.any() and pos.any() else 0.0,
            "by_region": {r: int((G[:, k] < -tol_r[k]).sum()) for k, r in enumerate(regions)}}


def summary(geom: Mesh | Grid) -> dict:
    """A dict of the numbers a user checks before simulating."""
    if isinstance(geom, Grid):
        return {"kind": "grid", "shape": list(geom.shape), "spacing_mm": list(geom.spacing),
                "tissue_voxels": int((geom.labels > 0).sum()), "region_volumes_mm3": geom.region_volumes()}
    out = {"kind": "mesh", "dim": geom.dim, "nodes": geom.n_nodes, "cells": geom.n_cells,
           "region_volumes_mm3": geom.region_volumes(),
           "boundaries": {k: int((geom.facet_tags == v).sum()) for k, v in geom.boundary_names.items()}}
    out.update(_quality(geom))
    out["negative_couplings"] = negative_couplings(geom)
    names = geom.boundary_names
    if "endo" in names and "epi" in names:
        from scipy.spatial import cKDTree

        endo = geom.points[np.unique(geom.facets[geom.facet_tags == names["endo"]])]
        epi = geom.points[np.unique(geom.facets[geom.facet_tags == names["epi"]])]
        if "base" in names:  # the base rim is not a wall thickness
            zb = geom.points[np.unique(geom.facets[geom.facet_tags == names["base"]]), -1].mean()
            epi = epi[epi[:, -1] < zb - 0.1 * np.ptp(geom.points[:, -1])]
        dist, _ = cKDTree(endo).query(epi)
        out["wall_thickness_mm"] = {"min": float(dist.min()), "median": float(np.median(dist)),
                                    "max": float(dist.max())}
    return out


def plot_sections(geom: Mesh | Grid, path, *, z: float | None = None) -> None:
    """PNG of a short-axis (z = const) and a long-axis (y = 0) section coloured by region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(geom, Grid):
        x = geom.centres().reshape(-1, geom.dim)
        lab = geom.labels.reshape(-1)
        keep = lab > 0
        x, lab, h = x[keep], lab[keep], max(geom.spacing)
    else:
        x = geom.points[geom.cells].mean(axis=1)
        lab = geom.cell_regions
        h = float(np.cbrt(np.abs(geom.volumes).mean() * 6)) if geom.dim == 3 else float(np.sqrt(np.abs(geom.volumes).mean() * 2))
    names = {v: k for k, v in geom.region_names.items()}
    colours = {"remote": "#b9c7d6", "border": "#f2a541", "core": "#c0392b"}
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    if x.shape[1] == 2:
        sections = [("plane", np.ones(len(x), bool), 0, 1)]
    else:
        z = float(np.median(x[:, 2])) if z is None else z
        sections = [(f"short axis, z = {z:.2f} mm", np.abs(x[:, 2] - z) < 0.75 * h, 0, 1),
                    ("long axis, y = 0", np.abs(x[:, 1]) < 0.75 * h, 0, 2)]
    for ax, (title, sel, i, j) in zip(axes, sections):
        for label in np.unique(lab[sel]):
            m = sel & (lab == label)
            name = names.get(int(label), str(label))
            ax.scatter(x[m, i], x[m, j], s=6, c=colours.get(name, None), label=name, linewidths=0)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("xyz"[i] + " (mm)")
        ax.set_ylabel("xyz"[j] + " (mm)")
    axes[0].legend(loc="upper right", fontsize=8, markerscale=2)
    if len(sections) == 1:
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
