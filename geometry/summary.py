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
    """PNG of a short-axis (z = const, default the tissue's median height) and a long-axis (through
    the tissue's median y) section coloured by region: the plane's cut through the tetrahedra, or
    the grid's voxel slice, with mm axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from .sections import cut_tetrahedra

    names = {v: k for k, v in geom.region_names.items()}
    colours = {"remote": "#b9c7d6", "border": "#f2a541", "core": "#c0392b"}
    labels = sorted(names)
    cmap = ListedColormap([colours.get(names[v], f"C{k}") for k, v in enumerate(labels)])
    code = {v: k for k, v in enumerate(labels)}       # region label -> colour index
    if isinstance(geom, Grid):
        x = geom.centres().reshape(-1, geom.dim)[geom.labels.reshape(-1) > 0]
    else:
        x = geom.points
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), layout="constrained")
    if x.shape[1] == 2:
        sections = [("plane", None, None)]
    else:
        z = float(np.median(x[:, 2])) if z is None else z
        y0 = float(np.median(x[:, 1]))
        sections = [(f"short axis, z = {z:.1f} mm", np.array([0.0, 0.0, z]), np.array([0.0, 0.0, 1.0])),
                    (f"long axis, y = {y0:.1f} mm", np.array([0.0, y0, 0.0]), np.array([0.0, 1.0, 0.0]))]
    for ax, (title, origin, normal) in zip(axes, sections):
        if isinstance(geom, Grid):
            lab = np.asarray(geom.labels)
            h, o = np.asarray(geom.spacing, float), np.asarray(geom.origin, float)
            if lab.ndim == 2:
                img, (i, j) = lab.T, (0, 1)
            elif normal[2] == 1.0:
                k = int(np.clip(round((origin[2] - o[2]) / h[2]), 0, lab.shape[2] - 1))
                img, (i, j) = lab[:, :, k].T, (0, 1)
            else:
                k = int(np.clip(round((origin[1] - o[1]) / h[1]), 0, lab.shape[1] - 1))
                img, (i, j) = lab[:, k, :].T, (0, 2)
            ext = [o[i] - h[i] / 2, o[i] + h[i] * (lab.shape[i] - 0.5), o[j] - h[j] / 2, o[j] + h[j] * (lab.shape[j] - 0.5)]
            idx = np.vectorize(lambda v: code.get(int(v), -1))(img) if img.size else img
            ax.imshow(np.ma.masked_less(idx, 0), origin="lower", extent=ext, cmap=cmap, vmin=-0.5,
                      vmax=len(labels) - 0.5, interpolation="nearest")
            xl, yl = "xyz"[i], "xyz"[j]
        else:
            import matplotlib.tri as mtri

            if origin is None:
                tri = mtri.Triangulation(geom.points[:, 0], geom.points[:, 1], geom.cells)
                colour = np.array([code[int(v)] for v in geom.cell_regions])
            else:
                xy, cells, _ = cut_tetrahedra(geom.points, geom.cells, origin, normal)
                tri = mtri.Triangulation(xy[:, 0], xy[:, 1], np.arange(len(xy)).reshape(-1, 3))
                colour = np.array([code[int(v)] for v in geom.cell_regions[cells]])
            ax.tripcolor(tri, facecolors=colour, cmap=cmap, vmin=-0.5, vmax=len(labels) - 0.5, edgecolors="none")
            xl, yl = ("x", "y") if origin is None or normal[2] == 1.0 else ("x", "z")
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{xl} (mm)")
        ax.set_ylabel(f"{yl} (mm)")
    handles = [matplotlib.patches.Patch(color=cmap(code[v]), label=names[v]) for v in labels]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, frameon=False)
    if len(sections) == 1:
        axes[1].axis("off")
    fig.savefig(path, dpi=120)
    plt.close(fig)
