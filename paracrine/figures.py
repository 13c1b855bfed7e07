"""The figures of a run folder: maps of each factor on planes through the tissue, and region courses.

Maps are interpolated, not scattered: on a tetrahedral mesh a plane cuts every tetrahedron it
crosses in a triangle or a quadrilateral, whose corners lie on the cut edges; the P1 field is
linear along each edge, so interpolating there is exact for the finite-element solution, and the
cut is drawn with `matplotlib.tri` (Gouraud shading: linear inside each cut triangle). On a voxel
grid the slice through the plane is drawn with `imshow`. Both views carry mm axes, a scale bar,
the outlines of the border zone and core (where the region shares cross 1/2), the injection sites
near the plane, and a logarithmic colour scale from 1e-3 of the largest value shown up to it
(values below the floor take its colour), so that no scale runs from round-off.

Two planes: the short axis (normal to the LV axis z, through the sites' median height) and the
long axis (containing the LV axis and the sites' mean direction).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paracrine.geometry.sections import cut_area, cut_tetrahedra, plane_basis  # noqa: F401 (cut_area: re-exported)

PG_PER_ML = 1e3
HOUR = 3600.0
DAY = 86400.0
#: colour floor of the maps, relative to the largest value shown
FLOOR = 1e-3
REGION_COLOURS = {"remote": "#5b7fa6", "border": "#e08e0b", "core": "#c0392b"}


# ------------------------------------------------------------------ planes of a run

def planes(res) -> list[dict]:
    """The short- and long-axis planes of a 3-D run: [{name, origin, normal}]; one plane in 2-D."""
    x = np.asarray(res.built.disc.coordinates).reshape(-1, np.asarray(res.built.disc.coordinates).shape[-1])
    tissue = np.asarray(res.built.disc.mass).reshape(-1) > 0
    if x.shape[1] != 3:
        return [{"name": "plane", "origin": None, "normal": None}]
    pts = [np.asarray(p) for p in res.built.sites if p is not None]
    sites = np.concatenate(pts) if pts else None
    z0 = float(np.median(sites[:, 2])) if sites is not None else float(np.median(x[tissue, 2]))
    out = [{"name": f"short axis, z = {z0:.1f} mm", "origin": np.array([0.0, 0.0, z0]), "normal": [0.0, 0.0, 1.0]}]
    direction = sites[:, :2].mean(axis=0) if sites is not None else np.zeros(2)
    if np.linalg.norm(direction) < 1e-9:
        direction = np.array([1.0, 0.0])
    direction = direction / np.linalg.norm(direction)
    out.append({"name": "long axis through the sites", "origin": np.zeros(3),
                "normal": [-direction[1], direction[0], 0.0]})
    return out


def _sites_near(res, origin, normal, width) -> np.ndarray:
    pts = [np.asarray(p) for p in res.built.sites if p is not None]
    if not pts or origin is None:
        return np.zeros((0, 2))
    s = np.concatenate(pts)
    n, u, v = plane_basis(normal)
    near = np.abs((s - origin) @ n) <= width
    return np.stack([s[near] @ u, s[near] @ v], axis=1)


def _scale_bar(ax, extent_mm: float) -> None:
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice(extent_mm / 4)
    ax.add_artist(AnchoredSizeBar(ax.transData, length, f"{length:g} mm", "lower right", pad=0.3, frameon=False,
                                  size_vertical=extent_mm / 150, color="k", fontproperties={"size": 7}))


def _nice(x: float) -> float:
    """1, 2 or 5 times a power of ten, at most x."""
    p = 10 ** np.floor(np.log10(x))
    return float(max(m for m in (1, 2, 5) if m * p <= x) * p)


def map_floor(values) -> tuple[float, float]:
    """(vmin, vmax) of the log colour scale: FLOOR x the largest value, up to it (1e-6 pg/mL if all zero)."""
    hi = float(np.nanmax(values)) if np.size(values) else 0.0
    hi = hi if hi > 0 and np.isfinite(hi) else 1e-6
    return hi * FLOOR, hi


def _draw_mesh_cut(ax, res, plane, fields, norm, cmap):
    """One panel: the field `fields` (N,) on the cut, region outlines, sites; returns the artist."""
    disc = res.built.disc
    mesh = disc.mesh
    share = np.asarray(res.share, float)
    vals = np.vstack([fields[None], share.T])                                 # the field and each region's share
    xy, _, cut = cut_tetrahedra(mesh.points, mesh.cells, plane["origin"], plane["normal"], vals)
    import matplotlib.tri as mtri

    tri = mtri.Triangulation(xy[:, 0], xy[:, 1], np.arange(len(xy)).reshape(-1, 3))
    art = ax.tripcolor(tri, np.clip(cut[0], norm.vmin, None), norm=norm, cmap=cmap, shading="gouraud",
                       rasterized=True)
    for r, name in enumerate(res.regions):
        if name == "remote" or not np.any(cut[1 + r] > 0.5):
            continue
        ax.tricontour(tri, cut[1 + r], levels=[0.5], colors=[REGION_COLOURS.get(name, "w")], linewidths=1.0)
    return art, xy


def _draw_grid_slice(ax, res, plane, fields, norm, cmap):
    grid = res.built.disc.grid
    lab = np.asarray(grid.labels)
    h, o = np.asarray(grid.spacing, float), np.asarray(grid.origin, float)
    field = np.asarray(fields).reshape(lab.shape)
    if lab.ndim == 3:
        n, u, v = plane_basis(plane["normal"])
        if abs(n[2]) > 0.9:                          # short axis: the z layer through the plane
            k = int(np.clip(round((plane["origin"][2] - o[2]) / h[2]), 0, lab.shape[2] - 1))
            img, lab2 = field[:, :, k].T, lab[:, :, k].T
            xy_lo = (o[0] - h[0] / 2, o[1] - h[1] / 2)
            ext = [xy_lo[0], xy_lo[0] + h[0] * lab.shape[0], xy_lo[1], xy_lo[1] + h[1] * lab.shape[1]]
        else:                                        # long axis: the x (or y) layer nearest the plane's axis
            axis = 1 if abs(n[1]) > abs(n[0]) else 0
            j = int(np.clip(round((0.0 - o[axis]) / h[axis]), 0, lab.shape[axis] - 1))
            take = (lambda a: a[:, j, :]) if axis == 1 else (lambda a: a[j, :, :])
            img, lab2 = take(field).T, take(lab).T
            other = 0 if axis == 1 else 1
            lo = (o[other] - h[other] / 2, o[2] - h[2] / 2)
            ext = [lo[0], lo[0] + h[other] * lab.shape[other], lo[1], lo[1] + h[2] * lab.shape[2]]
    else:
        img, lab2 = field.T, lab.T
        ext = [o[0] - h[0] / 2, o[0] + h[0] * (lab.shape[0] - 0.5), o[1] - h[1] / 2, o[1] + h[1] * (lab.shape[1] - 0.5)]
    shown = np.ma.masked_where(lab2 == 0, np.clip(img, norm.vmin, None))
    art = ax.imshow(shown, origin="lower", extent=ext, norm=norm, cmap=cmap, interpolation="nearest")
    names = res.built.disc.grid.region_names
    for name, label in names.items():
        if name == "remote" or not np.any(lab2 == label):
            continue
        ax.contour((lab2 == label).astype(float), levels=[0.5], extent=ext, origin="lower",
                   colors=[REGION_COLOURS.get(name, "w")], linewidths=1.0)
    corners = np.array([[ext[0], ext[2]], [ext[1], ext[3]]])
    return art, corners


def plot_maps(folder: Path, res) -> list[Path]:
    """maps_<factor>.png: every plane (rows) at every map time (columns) of each factor."""
    return _save(folder, "maps", map_figures(res))


def plot_regions(folder: Path, res) -> list[Path]:
    """regions_<factor>.png: the mean (solid) and nodal maximum (dashed, markers) of each region,
    the first day in hours on the left and the whole run in days on the right, with the threshold
    and the peak of each region's mean (a star: accumulated in the time loop, so also before the
    first output)."""
    return _save(folder, "regions", region_figures(res))


def _save(folder, stem, figs: dict) -> list[Path]:
    import matplotlib.pyplot as plt

    out = []
    for f, fig in figs.items():
        out.append(Path(folder) / f"{stem}_{f}.png")
        fig.savefig(out[-1], dpi=110)
        plt.close(fig)
    return out


def map_figures(res) -> dict:
    """{factor: Figure} of the maps (see plot_maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    d = res.built.scenario.data
    want = d["output"]["maps"] or [res.ts[-1]]
    snap_t = res.ts[res.snap_idx]
    pick = sorted({int(np.argmin(np.abs(snap_t - m))) for m in want})
    kind = res.built.disc.kind
    views = planes(res)
    h = res.built.disc.h() if callable(getattr(res.built.disc, "h", None)) else float(np.min(res.built.disc.grid.spacing))
    figs = {}
    cmap = matplotlib.colormaps["viridis"].copy()
    for s, f in enumerate(res.factors):
        snaps = np.asarray(res.snaps[pick][:, s], float) * PG_PER_ML
        tissue = np.asarray(res.built.disc.mass).reshape(-1) > 0
        lo, hi = map_floor(snaps[:, tissue])
        norm = LogNorm(vmin=lo, vmax=hi)
        fig, axes = plt.subplots(len(views), len(pick), figsize=(3.0 * len(pick) + 1.4, 3.0 * len(views) + 0.4),
                                 squeeze=False, layout="constrained")
        art = None
        for row, plane in enumerate(views):
            for col, k in enumerate(pick):
                ax = axes[row, col]
                if kind == "mesh" and plane["origin"] is not None:
                    art, xy = _draw_mesh_cut(ax, res, plane, snaps[col], norm, cmap)
                    corners = np.array([xy.min(axis=0), xy.max(axis=0)]) if len(xy) else np.zeros((2, 2))
                elif kind == "mesh":      # a 2-D mesh: its own plane
                    import matplotlib.tri as mtri

                    pts, cells = res.built.disc.mesh.points, res.built.disc.mesh.cells
                    art = ax.tripcolor(mtri.Triangulation(pts[:, 0], pts[:, 1], cells), np.clip(snaps[col], lo, None),
                                       norm=norm, cmap=cmap, shading="gouraud", rasterized=True)
                    corners = np.array([pts.min(axis=0), pts.max(axis=0)])
                else:
                    art, corners = _draw_grid_slice(ax, res, plane, snaps[col], norm, cmap)
                sites = _sites_near(res, plane["origin"], plane["normal"], 2 * h)
                if len(sites):
                    ax.plot(sites[:, 0], sites[:, 1], "x", color="w", ms=6, mew=2)
                    ax.plot(sites[:, 0], sites[:, 1], "x", color="k", ms=5, mew=1)
                ax.set_aspect("equal")
                extent = float(np.max(corners[1] - corners[0])) if np.all(np.isfinite(corners)) else 1.0
                _scale_bar(ax, max(extent, 1e-6))
                ax.tick_params(labelsize=7)
                ax.set_xlabel("mm", fontsize=7)
                if col == 0:
                    ax.set_ylabel(f"{plane['name']}\nmm", fontsize=7)
                if row == 0:
                    ax.set_title(f"{snap_t[k] / DAY:.2f} d" if snap_t[k] >= DAY else f"{snap_t[k] / HOUR:.1f} h",
                                 fontsize=9)
        cb = fig.colorbar(art, ax=axes, shrink=0.85, extend="min")
        cb.set_label(f"{f} (pg/mL; floor {lo:.2g})", fontsize=8)
        handles = [matplotlib.lines.Line2D([], [], color=REGION_COLOURS[r], lw=1.2, label=f"{r} outline")
                   for r in ("border", "core") if r in res.regions]
        handles.append(matplotlib.lines.Line2D([], [], ls="", marker="x", color="k", label="injection site"))
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
        fig.suptitle(f"{f}", fontsize=10)
        figs[f] = fig
    return figs


# ------------------------------------------------------------------ region courses

def course_floor(y_max: float, y_pos_min: float) -> float:
    """The lower limit of a log axis of concentrations: the smallest positive value shown, but not
    below 1e-4 of the largest (a bolus' tail does not stretch the axis to round-off)."""
    if not (y_max > 0 and np.isfinite(y_max)):
        return 1e-6
    return max(y_pos_min, y_max * 1e-4) if np.isfinite(y_pos_min) else y_max * 1e-4


def region_figures(res) -> dict:
    """{factor: Figure} of the region courses (see plot_regions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = res.built.scenario.data
    t = np.asarray(res.ts, float)
    end = t[-1]
    figs = {}
    for s, f in enumerate(res.factors):
        two = end > 1.5 * DAY
        fig, axes = plt.subplots(1, 2 if two else 1, figsize=(9.5 if two else 6.5, 3.8), squeeze=False,
                                 layout="constrained", sharey=True)
        ys = [res.stats[:, s, r, 0] * PG_PER_ML for r in range(len(res.regions))]
        ms = [res.stats[:, s, r, 1] * PG_PER_ML for r in range(len(res.regions))]
        thr = d["factors"][f]["threshold"]
        acc = getattr(res, "exposure", None) or {}
        peaks = ((np.asarray(acc["peak_mean"], float), np.asarray(acc["peak_mean_time"], float))
                 if "peak_mean" in acc and "peak_mean_time" in acc else None)
        allv = np.concatenate(ys + ms + ([peaks[0][s] * PG_PER_ML] if peaks is not None else []))
        pos = allv[allv > 0]
        lo = course_floor(float(allv.max()) if allv.size else 0.0, float(pos.min()) if pos.size else np.inf)
        hi = float(allv.max()) * 2 if allv.size and allv.max() > 0 else 1.0
        panels = [(axes[0, 0], t <= min(DAY, end) + 1e-9, HOUR, "time (h), first day" if two else "time (h)")]
        if two:
            panels.append((axes[0, 1], np.ones_like(t, bool), DAY, "time (d)"))
        for ax, sel, unit, label in panels:
            for r, name in enumerate(res.regions):
                c = REGION_COLOURS.get(name)
                ax.plot(t[sel] / unit, np.maximum(ys[r][sel], lo * 0.5), color=c, lw=1.8, label=f"{name} mean")
                # maxima often coincide (a site's node touches several regions): markers of their own shape,
                # staggered, so that each stays visible
                every = max(3, int(sel.sum() // 12))
                ax.plot(t[sel] / unit, np.maximum(ms[r][sel], lo * 0.5), color=c, lw=0.9, ls="--",
                        marker="osD^v"[r % 5], ms=3.5, mfc="none", markevery=(r * every // 3, every), label=f"{name} max")
                if peaks is not None:   # the peak of the mean from inside the time loop: also before the first output
                    tp, yp = peaks[1][s, r], peaks[0][s, r] * PG_PER_ML
                    if yp > 0 and tp <= t[sel][-1] + 1e-9:
                        ax.plot([tp / unit], [yp], marker="*", ms=8, color=c, mec="k", mew=0.5, ls="",
                                label=f"{name} peak mean ({yp:.3g} at {tp / HOUR:.2g} h)")
            if thr is not None:
                ax.axhline(thr * PG_PER_ML, color="k", ls=":", lw=1.0, label=f"threshold {thr * PG_PER_ML:g} pg/mL")
            ax.set_yscale("log")
            ax.set_ylim(lo, hi)
            ax.set_xlim(0, t[sel][-1] / unit if sel.any() else 1)
            if unit == HOUR and t[0] > 0:
                ax.axvspan(0, t[0] / unit, color="0.92", lw=0, zorder=0)   # before the first output: only the peak
            ax.set_xlabel(label)
            ax.grid(alpha=0.3, which="both", lw=0.4)
        axes[0, 0].set_ylabel(f"{f} (pg/mL)")
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=7, frameon=False)
        fig.suptitle(f"{f} by region", fontsize=10)
        figs[f] = fig
    return figs


def plot_cells(folder: Path, tc, n) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5), layout="constrained")
    ax.plot(np.asarray(tc) / DAY, n)
    ax.set_xlabel("time (d)")
    ax.set_ylabel("retained living cells")
    ax.set_yscale("log")
    ax.set_title("cells remaining")
    path = Path(folder) / "cells.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
