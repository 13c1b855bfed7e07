"""Figures: the plane cut of a tetrahedral mesh (area, exact interpolation of linear fields), the
colour floor, and the rendered maps and region courses of a mesh run and a voxel-grid run
(axes in mm, labels, non-empty images, sites and outlines drawn)."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from paracrine import figures, geometry, report, runner, scenario as sc  # noqa: E402
from test_run import COARSE  # noqa: E402

CUBE = geometry.box_mesh([0, 0, 0], [1, 1, 1], 6)


@pytest.mark.parametrize("origin, normal, area", [
    ([0, 0, 0.5], [0, 0, 1], 1.0),                                   # a square
    ([0.5, 0.5, 0.5], [1, 1, 1], 3 * math.sqrt(3) / 4),             # the regular hexagon of side 1/sqrt 2
    ([0.5, 0.5, 0.5], [1, 1, 0], math.sqrt(2)),                      # the diagonal rectangle
    ([0, 0, 1 / 3], [0, 0, 1], 1.0),                                 # through mesh nodes (z = 2/6)
])
def test_cut_area_equals_the_cross_section(origin, normal, area):
    xy, cells, _ = figures.cut_tetrahedra(CUBE.points, CUBE.cells, origin, normal)
    assert figures.cut_area(xy) == pytest.approx(area, rel=1e-9)
    assert len(np.unique(cells)) > 10


def test_cut_interpolates_a_linear_field_exactly():
    f = lambda p: 2 * p[:, 0] - 3 * p[:, 1] + 0.5 * p[:, 2] + 1  # noqa: E731
    origin, normal = np.array([0.4, 0.55, 0.5]), np.array([0.3, -0.2, 1.0])
    xy, _, vals = figures.cut_tetrahedra(CUBE.points, CUBE.cells, origin, normal, f(CUBE.points)[None])
    n, u, v = figures.plane_basis(normal)
    # back to 3-D: the cut points lie in the plane, at origin + a u + b v with a, b from their coordinates
    a, b = xy[:, 0] - origin @ u, xy[:, 1] - origin @ v
    p3 = origin + a[:, None] * u + b[:, None] * v
    np.testing.assert_allclose(vals[0], f(p3), rtol=0, atol=1e-12)
    assert np.all(p3 >= -1e-12) and np.all(p3 <= 1 + 1e-12)   # inside the cube


def test_colour_floor_and_course_floor():
    assert figures.map_floor(np.array([0.0, 1e-40, 5.0])) == (5.0 * figures.FLOOR, 5.0)
    assert figures.map_floor(np.zeros(3)) == (1e-6 * figures.FLOOR, 1e-6)
    assert figures.course_floor(1e3, 1e-40) == pytest.approx(0.1)     # a bolus' tail does not reach 1e-40
    assert figures.course_floor(1e3, 5.0) == 5.0


def _run_capturing(tmp_path, text, name):
    """A run with figures; the Result the figures were drawn from."""
    seen = {}
    real = report.plot_all

    def keep(folder, res):
        seen["res"] = res
        return real(folder, res)

    report.plot_all = keep
    try:
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        out = runner.run(sc.load(path), tmp_path / name, progress=False)
    finally:
        report.plot_all = real
    return out, seen["res"]


def _pixels(path):
    img = plt.imread(path)
    return img[..., :3].std()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("figs")
    short = COARSE.replace('end = "12 h"', 'end = "6 h"').replace('maps = ["3 h", "12 h"]', 'maps = ["3 h", "6 h"]')
    grid = short.replace('mesh_size = "0.7 mm"', 'grid_spacing = "0.5 mm"')
    return {"mesh": _run_capturing(tmp, short, "mesh"), "grid": _run_capturing(tmp, grid, "grid")}


@pytest.mark.parametrize("kind", ["mesh", "grid"])
def test_maps_have_mm_axes_scale_bar_outlines_and_sites(runs, kind):
    out, res = runs[kind]
    for f in res.factors:
        assert _pixels(out / "figures" / f"maps_{f}.png") > 0.05
    figs = figures.map_figures(res)
    try:
        fig = figs["VEGF"]
        axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        maps = axes[:4]                                  # two planes x two times
        assert len(maps) == 4
        for ax in maps:
            assert ax.get_xlabel() == "mm" and ax.get_aspect() == 1.0
            assert any("mm" in t.get_text() for a in ax.artists for t in a.findobj(matplotlib.text.Text))  # scale bar
        assert "short axis" in maps[0].get_ylabel() and "long axis" in maps[2].get_ylabel()
        assert maps[0].get_title() == "3.0 h" and maps[1].get_title() == "6.0 h"
        # the sites are marked in the short-axis plane (it passes through their median height)
        assert any(len(line.get_xdata()) >= 1 and line.get_marker() == "x" for line in maps[0].lines)
        colorbar = [ax for ax in fig.axes if "pg/mL" in ax.get_ylabel()]
        assert colorbar and "floor" in colorbar[0].get_ylabel()
        # the colour scale: from FLOOR x the largest value shown to it
        mappable = next(a for a in maps[0].get_children() if hasattr(a, "norm") and hasattr(a, "get_array"))
        assert mappable.norm.vmin == pytest.approx(figures.FLOOR * mappable.norm.vmax)
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_region_courses_show_the_first_hours_and_distinct_maxima(runs):
    out, res = runs["mesh"]
    assert _pixels(out / "figures" / "regions_VEGF.png") > 0.05
    figs = figures.region_figures(res)
    try:
        fig = figs["VEGF"]
        ax = fig.axes[0]
        assert ax.get_xlabel().startswith("time (h)") and ax.get_ylabel() == "VEGF (pg/mL)"
        assert ax.get_xlim()[0] == 0.0                   # from time 0, not from the first output
        maxima = [line for line in ax.lines if line.get_label().endswith(" max")]
        assert len({line.get_marker() for line in maxima}) == len(res.regions)   # each its own marker
        stars = [line for line in ax.lines if "peak mean" in line.get_label()]
        assert len(stars) == len(res.regions)
        lo, hi = ax.get_ylim()
        assert lo >= 1e-4 * max(float(np.max(line.get_ydata())) for line in ax.lines if len(line.get_ydata()))
        assert fig.legends and not ax.get_legend()        # the legend is outside the data
    finally:
        for fig in figs.values():
            plt.close(fig)


def test_sections_of_an_off_centre_label_grid_show_both_planes(tmp_path):
    """A label image sits where the scanner put it, not around y = 0: the long-axis section goes
    through the tissue's median y, so neither panel is empty."""
    lab = np.zeros((20, 20, 12), int)
    lab[4:16, 4:16, 2:10] = 1
    lab[4:8, 4:16, 2:10] = 3
    lab[8:9, 4:16, 2:10] = 2
    grid = geometry.Grid(lab, (0.5, 0.5, 0.5), (40.0, 60.0, -3.0), {"remote": 1, "border": 2, "core": 3})
    geometry.plot_sections(grid, tmp_path / "s.png")
    img = plt.imread(tmp_path / "s.png")[..., :3]
    w = img.shape[1]
    left, right = img[:, : w // 2 - 40], img[:, w // 2: w - 120]
    assert left.std() > 0.05 and right.std() > 0.05
