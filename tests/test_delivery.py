"""Routes, sites, hypoxia, repeated doses and conditioned medium as the scenario builds them."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from paracrine import build as B, scenario as sc

TEXT = """
[geometry]
species = "rat"
mesh_size = "0.7 mm"
border_width = "0.5 mm"
[time]
end = "2 d"
[factors.VEGF]
preset = "VEGF165"
[cells]
secretion = { VEGF = "1e-8 pg/cell/s" }
hypoxia = { border = 3.0 }
[[injection]]
dose = "1e6"
sites = 4
[[injection]]
dose = "1e6"
route = "transendocardial"
sites = 4
region = "remote"
[[injection]]
dose = "1e6"
route = "intravenous"
[[injection]]
dose = "1e6"
route = "intracoronary"
[[medium]]
amount = { VEGF = "100 pg" }
sites = 2
repeat = { count = 3, every = "6 h" }
[[medium]]
time = "1 h"
amount = { VEGF = "60 pg" }
duration = "2 h"
route = "intravenous"
retention = 0.5
"""


@pytest.fixture(scope="module")
def built():
    return B.build(sc.loads(TEXT, source="t.toml"))


def rates(built, t=3600.0 * 30):
    """Total secretion rate (pg/s) of each source at time t, sites counted."""
    out = []
    for src, prof in zip(built.model.sources, built.params.sources):
        n = src.n_sites if isinstance(src, solver.PointSource) else 1
        out.append(n * float(prof.rate_at(t)[0]))
    return out


def test_point_sites_lie_in_their_region_and_transmural_band(built):
    shape = geometry.LVShape(**built.scenario.data["geometry"]["shape"])
    im, te = built.sites[0], built.sites[1]
    assert im.shape == (4, 3) and te.shape == (4, 3)
    t_im, t_te = shape.transmural(im), shape.transmural(te)
    assert np.all((t_im >= 0.3) & (t_im <= 0.7)) and np.all((t_te >= 0.1) & (t_te <= 0.45))
    # the region of each site on a fine voxel lattice of the analytic shape
    grid = geometry.lv_ellipsoid(shape, grid_spacing=0.2, territory="LAD", border_width=0.5)
    ids = np.floor((np.concatenate([im, te]) - np.asarray(grid.origin)) / 0.2 + 0.5).astype(int)
    labels = grid.labels[tuple(ids.T)]
    assert np.all(labels[:4] == 2) and np.all(labels[4:] == 1), labels
    # spread out: no two sites closer than a millimetre
    d = np.linalg.norm(im[:, None] - im[None], axis=-1) + np.eye(4) * 1e9
    assert d.min() > 1.0


def test_route_retention_and_hypoxia_scale_the_secretion(built):
    q, n = 1e-8, 1e6
    r = rates(built, t=0.0)
    # 4 intramyocardial sites in the border zone: hypoxia multiplier 3; retention 13.6 %
    assert r[0] == pytest.approx(3.0 * q * n * 0.136, rel=1e-6)
    assert r[1] == pytest.approx(1.0 * q * n * 0.11, rel=1e-6)  # remote sites; rats: the pig TE estimate
    assert "estimate" in built.scenario.data["injections"][1]["retention_source"]
    # intravenous: 0.8 % reaches the heart; perfused tissue has remote (x1) and border (x3) shares
    assert 0.008 * q * n < r[2] < 3 * 0.008 * q * n
    assert 0.154 * q * n < r[3] < 3 * 0.154 * q * n                  # intracoronary: 15.4 %


def test_field_routes_spread_over_perfused_tissue(built):
    disc = built.disc
    share = B._region_share(disc)
    core = share[:, disc.regions.index("core")] == 1.0
    iv, ic = built.model.sources[2], built.model.sources[3]
    assert np.all(np.asarray(iv.per_amount)[core] == 0) and np.all(np.asarray(ic.per_amount)[core] == 0)
    mass = np.asarray(disc.mass)
    assert float((mass * np.asarray(iv.per_amount)).sum()) == pytest.approx(1.0)  # spreads exactly the amount
    # intracoronary (LAD): nothing outside the LAD's AHA segments and its border zone
    shape = geometry.LVShape(**built.scenario.data["geometry"]["shape"])
    outside = ~np.isin(geometry.aha_segments(disc.coordinates, shape), geometry.TERRITORIES["LAD"])
    outside &= share[:, disc.regions.index("border")] == 0
    assert outside.sum() > 0.5 * len(outside)
    assert np.all(np.asarray(ic.per_amount)[outside] == 0) and np.any(np.asarray(iv.per_amount)[outside] > 0)


def test_repeated_boluses_and_infusion_closed_forms(built):
    bol, inf = built.params.sources[4], built.params.sources[5]
    per_site = 100.0 * 0.164 / 2  # retention of a protein by the route (delivery.MEDIUM_RETENTION) shared by 2 sites
    h = 3600.0
    for t, doses in ((0.0, 0), (1.0, 1), (6 * h, 1), (6 * h + 1, 2), (13 * h, 3)):
        assert float(bol.cumulative(t)[0]) == pytest.approx(per_site * doses)
    # infusion of 60 pg x 0.5 from 1 h to 3 h: linear ramp, constant rate
    for t, frac in ((0.5 * h, 0.0), (2 * h, 0.5), (3 * h, 1.0), (5 * h, 1.0)):
        assert float(inf.cumulative(t)[0]) == pytest.approx(30.0 * frac)
    assert float(inf.rate_at(2 * h)[0]) == pytest.approx(30.0 / (2 * h))
    assert float(inf.rate_at(4 * h)[0]) == 0.0


def test_delivered_medium_enters_the_tissue_exactly():
    """No losses: the tissue holds exactly what the boluses and the infusion delivered, at any save time."""
    head = TEXT.split("[cells]")[0].replace('preset = "VEGF165"', 'D = "1e-6 cm^2/s"\ndecay = 0')
    scen = sc.loads(head + "[[medium]]" + TEXT.split("[[medium]]", 1)[1], source="t.toml")
    b = B.build(scen)
    ts = np.array([0.5, 1.5, 2.0, 6.5, 13.0]) * 3600.0
    sol = solver.simulate(b.model, b.params, t_end=ts[-1], dt=300.0, save_at=ts,
                          observe=solver.observe.tissue_amounts(b.model), method="cn")
    total = np.asarray(sol.ys).sum(axis=-1)[:, 0]
    want = sum(np.array([float(p.cumulative(t)[0]) * (s.n_sites if isinstance(s, solver.PointSource) else 1)
                         for t in ts]) for s, p in zip(b.model.sources, b.params.sources))
    np.testing.assert_allclose(total, want, rtol=1e-9)


def test_cells_versus_medium_example_amounts_match():
    """examples/medium_equal_amount.toml holds what default.toml's cells secrete in 7 days."""
    from pathlib import Path

    d = sc.load(Path(__file__).resolve().parents[1] / "examples" / "default.toml").data
    cells, inj = d["cells"], d["injections"][0]
    f, kf, ks = cells["fast_fraction"], math.log(2) / cells["fast_half_life"], math.log(2) / cells["slow_half_life"]
    T = d["time"]["end"]
    cell_s = inj["dose"] * inj["retention"] * (f * -math.expm1(-kf * T) / kf + (1 - f) * -math.expm1(-ks * T) / ks)
    m = sc.load(Path(__file__).resolve().parents[1] / "examples" / "medium_equal_amount.toml").data["media"][0]
    for factor in ("VEGF", "HGF"):
        assert m["amount"][factor] == pytest.approx(cells["secretion"][factor] * cell_s, rel=2e-3)
