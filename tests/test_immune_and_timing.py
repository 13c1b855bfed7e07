"""Allogeneic immune clearance (a third survival phase, with a memory response for later doses) and
retention by injection time after the infarction: closed forms, limits, gradients, scenario keys."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import quad

from paracrine import solver
from paracrine import build as B, scenario as sc
from paracrine.delivery import IMMUNE
from paracrine.units import ScenarioError
from paracrine.solver.therapy import _phase_integral

H, DAY = 3600.0, 86400.0
LN2 = math.log(2)


def preset_profile(**kw):
    """Two doses of allogeneic MSCs at the presets: Yasuda two-phase survival, the IMMUNE defaults
    (the second dose meets the memory response) and a retention-by-time table."""
    args = dict(dose=[1e6, 5e5], time=[0.3 * DAY, 9.5 * DAY], retention=[0.136, 0.136], secretion=[7e-9, 7e-8],
                fast_fraction=0.45, k_fast=LN2 / (15 * 60.0), k_slow=LN2 / (3.6 * DAY), multiplier=2.0,
                immune_onset=[IMMUNE["immune_onset"][0], IMMUNE["repeat_immune_onset"][0]],
                immune_rate=[LN2 / IMMUNE["immune_half_life"][0], LN2 / IMMUNE["repeat_immune_half_life"][0]],
                retention_time=[0.0, 1 * DAY, 7 * DAY, 14 * DAY], retention_factor=[0.5, 1.0, 0.8, 0.6])
    args.update(kw)
    return solver.CellSecretion(**args)


def kinks(p, t):
    """Injection times and immune onsets before t (where cells(t) has corners)."""
    pts = np.concatenate([np.atleast_1d(np.asarray(p.time)),
                          np.asarray(p.time) + np.broadcast_to(np.asarray(p.immune_onset), np.shape(p.time))])
    return sorted(float(x) for x in pts if 0 < x < t)


def quadrature(p, t):
    return quad(lambda s: float(p.cells(s)), 0.0, t, points=kinks(p, t) or None, limit=500,
                epsabs=0.0, epsrel=1e-12)[0]


# ---- closed forms ------------------------------------------------------------------------------------------

def test_three_phase_closed_form_against_quadrature():
    p = preset_profile()
    g = np.interp(np.asarray(p.time), np.asarray(p.retention_time), np.asarray(p.retention_factor))
    # the count right after each injection: dose x retention x the injection-time factor
    assert float(p.cells(0.3 * DAY)) == pytest.approx(1e6 * 0.136 * g[0], rel=1e-12)
    # after the onset (and before the second dose): the two-phase curve times the immune loss
    tau = 8 * DAY
    two = 0.45 * np.exp(-float(p.k_fast) * tau) + 0.55 * np.exp(-float(p.k_slow) * tau)
    expect = 1e6 * 0.136 * g[0] * two * np.exp(-float(p.immune_rate[0]) * (tau - 7 * DAY))
    assert float(p.cells(0.3 * DAY + tau)) == pytest.approx(expect, rel=1e-12)
    for t in [0.2 * DAY, 3 * DAY, 7.2 * DAY, 8 * DAY, 10 * DAY, 13 * DAY, 30 * DAY]:
        num = quadrature(p, t)
        assert float(p.cell_seconds(t)) == pytest.approx(num, rel=1e-9), t / DAY
        np.testing.assert_allclose(np.asarray(p.cumulative(t)), 2.0 * np.array([7e-9, 7e-8]) * num, rtol=1e-9)
    # the rate is the derivative of the cumulative amount (away from the corners)
    t, h = 12 * DAY, 1.0
    fd = (np.asarray(p.cumulative(t + h)) - np.asarray(p.cumulative(t - h))) / (2 * h)
    np.testing.assert_allclose(np.asarray(p.rate_at(t)), fd, rtol=1e-7)


def test_allogeneic_loses_cells_only_after_the_onset():
    auto = preset_profile(immune_rate=0.0)
    allo = preset_profile()
    for t in [0.5 * DAY, 5 * DAY, 7.29 * DAY]:  # before the first dose's onset (7 d after 0.3 d)
        assert float(allo.cells(t)) == pytest.approx(float(auto.cells(t)), rel=1e-14)
        assert float(allo.cell_seconds(t)) == pytest.approx(float(auto.cell_seconds(t)), rel=1e-14)
    for t in [9 * DAY, 20 * DAY]:
        assert float(allo.cells(t)) < float(auto.cells(t))
        assert float(allo.cell_seconds(t)) < float(auto.cell_seconds(t))


def test_rate_to_zero_and_onset_zero_limits():
    auto = preset_profile(immune_rate=0.0)
    for t in [2 * DAY, 8 * DAY, 25 * DAY]:
        # rate -> 0: the autologous curve, smoothly (no 1/r blow-up); the relative change is at most
        # r x (t - onset) <= r x 3e6 s, plus round-off
        for r in (1e-30, 1e-16, 1e-12, 1e-9):
            tiny = preset_profile(immune_rate=r)
            tol = 1e-12 + 3e6 * r
            assert float(tiny.cell_seconds(t)) == pytest.approx(float(auto.cell_seconds(t)), rel=tol)
            assert float(tiny.cells(t)) == pytest.approx(float(auto.cells(t)), rel=tol)
        # onset 0: the immune loss adds to both phases' rates from the injection on
        r = LN2 / (4 * DAY)
        now = preset_profile(immune_onset=0.0, immune_rate=r)
        shifted = preset_profile(immune_onset=0.0, immune_rate=0.0, k_fast=auto.k_fast + r, k_slow=auto.k_slow + r)
        assert float(now.cell_seconds(t)) == pytest.approx(float(shifted.cell_seconds(t)), rel=1e-13)
        assert float(now.cells(t)) == pytest.approx(float(shifted.cells(t)), rel=1e-13)
    # both phases and the immune loss near zero: the integral of a constant
    flat = preset_profile(k_fast=1e-20, k_slow=1e-20, immune_rate=1e-20, immune_onset=0.0)
    g = np.interp(np.asarray(flat.time), np.asarray(flat.retention_time), np.asarray(flat.retention_factor))
    t = 12 * DAY
    want = np.sum(np.array([1e6, 5e5]) * 0.136 * g * (t - np.asarray(flat.time)))
    assert float(flat.cell_seconds(t)) == pytest.approx(want, rel=1e-12)


def _old_cells(p, t):
    """cells(t) of the two-phase model as it was before the immune phase and the timing table."""
    tau = jnp.maximum(jnp.asarray(t) - p.time, 0.0)
    f = p.fast_fraction
    alive = f * jnp.exp(-p.k_fast * tau) + (1 - f) * jnp.exp(-p.k_slow * tau)
    return jnp.sum(jnp.where(jnp.asarray(t) >= p.time, p.dose * p.retention * alive, 0.0))


def _old_cell_seconds(p, t):
    tau = jnp.maximum(jnp.asarray(t) - p.time, 0.0)
    f = p.fast_fraction
    per = f * _phase_integral(p.k_fast, tau) + (1 - f) * _phase_integral(p.k_slow, tau)
    return jnp.sum(p.dose * p.retention * per)


def test_autologous_default_is_bit_identical():
    kw = dict(dose=[1e6, 5e5], time=[0.0, 2 * DAY], retention=[0.15, 0.10], secretion=[7e-9, 7e-8],
              fast_fraction=0.45, k_fast=LN2 / 1800.0, k_slow=LN2 / (3.6 * DAY), multiplier=1.5)
    old = solver.CellSecretion(**kw)  # built without the new fields
    explicit = solver.CellSecretion(**kw, immune_onset=0.0, immune_rate=0.0, retention_time=[0.0],
                                    retention_factor=[1.0])
    ts = np.array([0.0, 1.0, 600.0, 0.7 * DAY, 2 * DAY, 2 * DAY + 5.0, 9 * DAY, 40 * DAY])
    for p in (old, explicit):
        for t in ts:
            assert float(p.cells(t)) == float(_old_cells(old, t))
            assert float(p.cell_seconds(t)) == float(_old_cell_seconds(old, t))
            np.testing.assert_array_equal(np.asarray(p.cumulative(t)),
                                          np.asarray(old.secretion * old.multiplier * _old_cell_seconds(old, t)))
        # compiled and batched over times, too
        np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(p.cell_seconds))(ts)),
                                      np.asarray(jax.jit(jax.vmap(lambda t: _old_cell_seconds(old, t)))(ts)))


# ---- gradients ---------------------------------------------------------------------------------------------

def _fd(loss, p, where, idx, eps):
    def at(s):
        return float(loss(eqx.tree_at(where, p, where(p).at[idx].add(s * eps))))
    return (at(1) - at(-1)) / (2 * eps)


@pytest.mark.parametrize("t", [6 * DAY, 20 * DAY])
def test_gradients_against_central_differences(t):
    p = preset_profile()

    def loss(q):
        return jnp.sum(q.cumulative(t)) + 1e-3 * q.cells(t) * 7e-9

    grads = jax.grad(loss)(p)
    for name, idx, eps in [("time", (0,), 5.0), ("time", (1,), 5.0), ("immune_onset", (0,), 5.0),
                           ("immune_onset", (1,), 5.0), ("immune_rate", (0,), 1e-9), ("immune_rate", (1,), 1e-9),
                           ("dose", (0,), 1.0), ("retention_factor", (1,), 1e-6), ("retention_time", (2,), 5.0)]:
        where = lambda q, name=name: getattr(q, name)  # noqa: E731
        g = float(where(grads)[idx])
        fd = _fd(loss, p, where, idx, eps)
        floor = 1e-12 * abs(float(loss(p))) / max(abs(float(where(p)[idx])), 1.0)
        assert g == pytest.approx(fd, rel=1e-6, abs=floor), (name, idx, g, fd)
    # the injection time's gradient sees the retention table: with a flat table it differs
    flat = jax.grad(loss)(preset_profile(retention_factor=[1.0, 1.0, 1.0, 1.0]))
    assert abs(float(grads.time[0]) - float(flat.time[0])) > 1e-3 * abs(float(flat.time[0]))


def test_gradients_finite_at_the_corners():
    """No NaN at tau = 0, onset = 0 and rate = 0 (where the phase integrals switch branch)."""
    p = preset_profile(time=[0.0, 2 * DAY], immune_onset=[0.0, 0.0], immune_rate=[0.0, 0.0])
    for t in (0.0, 2 * DAY, 3 * DAY):
        for f in (lambda q: jnp.sum(q.cumulative(t)), lambda q: q.cells(t)):
            g = jax.grad(f)(p)
            for leaf in jax.tree.leaves(g):
                assert np.all(np.isfinite(np.asarray(leaf))), t
    # d/d(rate) at rate 0 is the one-sided derivative: -integral of (s - onset)_+ n(s) ds < 0
    t = 5 * DAY
    g = float(jax.grad(lambda q: q.cell_seconds(t))(p).immune_rate[0])
    num = -quad(lambda s: s * float(p.cells(s)) if s < 2 * DAY else 0.0, 0.0, 2 * DAY, limit=200)[0]
    tail = -quad(lambda s: s * 1e6 * 0.136 * 0.5 * (0.45 * math.exp(-float(p.k_fast) * s)
                                                    + 0.55 * math.exp(-float(p.k_slow) * s)), 2 * DAY, t, limit=200)[0]
    assert g == pytest.approx(num + tail, rel=1e-7)


def test_vmap_and_jit_over_immune_parameters():
    p = preset_profile()
    rates = jnp.array([0.0, 1e-7, LN2 / (4 * DAY), LN2 / DAY])

    def released(r):
        return jnp.sum(eqx.tree_at(lambda q: q.immune_rate, p, jnp.full((2,), r)).cumulative(20 * DAY))

    batched = jax.jit(jax.vmap(released))(rates)
    looped = np.array([float(released(r)) for r in rates])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-13)
    assert np.all(np.diff(looped) < 0)
    grads = jax.jit(jax.vmap(jax.grad(released)))(rates)
    assert np.all(np.isfinite(np.asarray(grads))) and np.all(np.asarray(grads) < 0)


# ---- scenario keys -----------------------------------------------------------------------------------------

BASE = """
[geometry]
species = "rat"
grid_spacing = "0.5 mm"
border_width = "0.5 mm"
[time]
end = "1 d"
dt = "600 s"
[factors.VEGF]
preset = "VEGF165"
[cells]
secretion = { VEGF = "1203 pg / (1e6 cell * 48 h)" }
#CELLS
[[injection]]
dose = "1e6 cells"
sites = 2
#INJ
"""


def text(cells="", inj=""):
    return BASE.replace("#CELLS", cells).replace("#INJ", inj)


def load(t):
    return sc.loads(t, source="s.toml")


@pytest.fixture(scope="module")
def geometry_and_sites():
    """One coarse voxel LV and its two sites, shared by the builds below."""
    return B.make_geometry(load(text()))


def test_autologous_is_the_default_and_has_no_immune_fields(geometry_and_sites):
    s = load(text())
    assert s.data["cells"]["donor"] == "autologous" and s.data["cells"]["retention_by_time"] is None
    assert "immune_onset" not in s.data["cells"]
    p = B.build(s, geometry_and_sites=geometry_and_sites).params.sources[0]
    assert float(jnp.max(p.immune_rate)) == 0.0 and np.asarray(p.retention_factor).tolist() == [1.0]


def test_allogeneic_keys_with_units_and_sources(geometry_and_sites):
    s = load(text('donor = "allogeneic"\nimmune_onset = "5 d"\nrepeat_immune_half_life = "36 h"\n'
                  '[cells.retention_by_time]\ntime = ["0 d", "1 d", "7 d", "14 d"]\nfactor = [0.5, 1.0, 0.8, 0.6]\n'
                  'start_after_mi = "12 h"\n',
                  'repeat = { count = 2, every = "6 h" }\n[[injection]]\ndose = "5e5 cells"\ntime = "2 h"\n'
                  'route = "intracoronary"\n'))
    c = s.data["cells"]
    assert c["donor"] == "allogeneic"
    assert c["immune_onset"] == 5 * DAY and c["immune_onset_source"] == "scenario"
    assert c["immune_half_life"] == IMMUNE["immune_half_life"][0] and "Huang" in c["immune_half_life_source"]
    assert c["immune_half_life_source"].startswith("estimate:")
    assert c["repeat_immune_half_life"] == 36 * H and c["repeat_immune_half_life_source"] == "scenario"
    assert c["repeat_immune_onset"] == IMMUNE["repeat_immune_onset"][0]
    assert c["retention_by_time"] == {"time": [0.0, DAY, 7 * DAY, 14 * DAY], "factor": [0.5, 1.0, 0.8, 0.6],
                                      "start_after_mi": 12 * H, "source": "scenario"}
    geom, disc, sites = geometry_and_sites
    b = B.build(s, geometry_and_sites=(geom, disc, sites + [None]))  # the intracoronary route has no sites
    im = b.params.sources[0]        # intramyocardial: doses at 0 h and 6 h (the second a repeat)
    ic = b.params.sources[1]        # intracoronary at 2 h: after the first dose, a repeat
    np.testing.assert_array_equal(np.asarray(im.immune_onset), [5 * DAY, IMMUNE["repeat_immune_onset"][0]])
    np.testing.assert_allclose(np.asarray(im.immune_rate), [LN2 / IMMUNE["immune_half_life"][0], LN2 / (36 * H)])
    np.testing.assert_allclose(np.asarray(ic.immune_rate), [LN2 / (36 * H)])
    # the table in the scenario's clock: injection at t = 0 is 12 h after the infarction (factor 0.75)
    np.testing.assert_allclose(np.asarray(im.retention_time), np.array([0.0, 1, 7, 14]) * DAY - 12 * H)
    assert float(im.cells(0.0)) == pytest.approx(float(im.dose[0]) * 0.136 * 0.75, rel=1e-12)


@pytest.mark.parametrize("cells, match", [
    ('donor = "xenogeneic"', r"cells.donor = 'xenogeneic'.* allowed: \['autologous', 'allogeneic'\]"),
    ('immune_half_life = "4 d"', r'cells.immune_half_life = \'4 d\': only with donor = "allogeneic"'),
    ('donor = "allogeneic"\nimmune_half_life = "0 d"', r"cells.immune_half_life = '0 d'; allowed: > 0 \(time\)"),
    ('donor = "allogeneic"\nrepeat_immune_onset = "3 kg"', r"cells.repeat_immune_onset = '3 kg' has dimension"),
    ('[cells.retention_by_time]\ntime = ["0 d", "7 d", "7 d"]\nfactor = [0.5, 1.0, 0.8]',
     r"cells.retention_by_time.time\[2\] = '7 d' is not after time\[1\] = '7 d'; allowed: strictly increasing"),
    ('[cells.retention_by_time]\ntime = ["0 d", "7 d"]\nfactor = [0.5, 1.0, 0.8]',
     r"cells.retention_by_time: 2 times and 3 factors; allowed: one factor per time"),
    ('[cells.retention_by_time]\ntime = ["0 d", "7 d"]\nfactor = [0.5, -1.0]',
     r"cells.retention_by_time.factor\[1\] = -1.0; allowed: a finite number >= 0"),
    ('[cells.retention_by_time]\ntime = ["0 d", "7 d"]\nfactor = [0.5, nan]',
     r"cells.retention_by_time.factor\[1\] = nan; allowed: a finite number >= 0"),
    ('[cells.retention_by_time]\ntime = ["0 d", "7 kg"]\nfactor = [0.5, 1.0]',
     r"cells.retention_by_time.time\[1\] = '7 kg' has dimension"),
    ('[cells.retention_by_time]\ntimes = ["0 d"]\nfactor = [0.5]',
     r"cells.retention_by_time.times: unknown key; did you mean 'time'\?.* "
     r"allowed: \['factor', 'start_after_mi', 'time'\]"),
    ('[cells.retention_by_time]\nfactor = [0.5]', r"cells.retention_by_time.time: missing \(required\)"),
    ('[cells.retention_by_time]\ntime = "7 d"\nfactor = [0.5]',
     r"cells.retention_by_time.time = '7 d'; allowed: a non-empty list"),
])
def test_bad_input_is_refused_with_the_key_and_what_is_allowed(cells, match):
    with pytest.raises(ScenarioError, match=match) as err:
        load(text(cells))
    assert str(err.value).startswith("s.toml: cells.")


def test_retention_above_one_after_the_timing_factor_is_refused(geometry_and_sites):
    s = load(text('[cells.retention_by_time]\ntime = ["0 d"]\nfactor = [9.0]'))
    with pytest.raises(ScenarioError, match=r"s.toml: injection\[0\]: dose 1 at 0 d has retention 0.136 x "
                                            r"cells.retention_by_time factor 9 = 1.224 > 1; allowed"):
        B.build(s, geometry_and_sites=geometry_and_sites)


# ---- a scenario run ----------------------------------------------------------------------------------------

RUN_CELLS = ('donor = "DONOR"\n', 'repeat = { count = 2, every = "12 h" }\n')
IMMUNE_FAST = ('immune_onset = "6 h"\nimmune_half_life = "6 h"\n'
               'repeat_immune_onset = "1 h"\nrepeat_immune_half_life = "2 h"\n')


def test_allogeneic_run_releases_less_after_the_onset_and_clears_a_repeat_faster(geometry_and_sites):
    built = {}
    for donor in ("autologous", "allogeneic"):
        extra = IMMUNE_FAST if donor == "allogeneic" else ""
        s = load(text(RUN_CELLS[0].replace("DONOR", donor) + extra, RUN_CELLS[1]))
        built[donor] = B.build(s, geometry_and_sites=geometry_and_sites)
    ts = np.array([3.0, 6.0, 10.0, 18.0, 24.0]) * H
    sols = {}
    for donor, b in built.items():
        sols[donor] = solver.simulate(b.model, b.params, t_end=24 * H, dt=600.0, save_at=ts, method="cn",
                                      observe=solver.observe.tissue_amounts(b.model), budget=True)
    amount = {k: np.asarray(v.ys).sum(axis=-1)[:, 0] for k, v in sols.items()}
    # the same until the first dose's onset (6 h), less after it
    np.testing.assert_allclose(amount["allogeneic"][:2], amount["autologous"][:2], rtol=1e-12)
    assert np.all(amount["allogeneic"][2:] < amount["autologous"][2:])
    # the run secretes exactly the closed form of the built profiles
    for donor, b in built.items():
        want = sum(n * float(b.params.sources[k].cumulative(24 * H)[0]) for k, n in b.cell_sources)
        assert float(sols[donor].budget["secreted"][0]) == pytest.approx(want, rel=1e-10)
    released = {k: float(v.budget["secreted"][0]) for k, v in sols.items()}
    assert released["allogeneic"] < 0.97 * released["autologous"]
    # cells of each dose, allogeneic over autologous, 10 h after its own injection: the repeat dose
    # (onset 1 h, t1/2 2 h) is cleared far faster than the first (onset 6 h, t1/2 6 h)
    allo, auto = built["allogeneic"].params.sources[0], built["autologous"].params.sources[0]

    def dose_cells(p, j, t):
        return float(eqx.tree_at(lambda q: q.dose, p, p.dose * (jnp.arange(2) == j)).cells(t))

    first = dose_cells(allo, 0, 10 * H) / dose_cells(auto, 0, 10 * H)
    repeat = dose_cells(allo, 1, 22 * H) / dose_cells(auto, 1, 22 * H)
    assert first == pytest.approx(2 ** (-4 / 6), rel=1e-12)
    assert repeat == pytest.approx(2 ** (-9 / 2), rel=1e-12)
    assert repeat < 0.1 * first
    np.testing.assert_array_equal(np.asarray(allo.immune_onset), [6 * H, 1 * H])
