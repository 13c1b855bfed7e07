"""Hill-type receptor uptake, the reaction added as one class (solver.Hill) plus its scenario key and
fit parameters: against Michaelis-Menten at n = 1, SciPy's Radau, finite differences, the budget."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from paracrine import geometry
from paracrine import solver

V, K, N, KDEC = 2e-2, 0.5, 2.5, 1e-3


def uniform(n=4):
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], n))
    model = solver.Model(disc)
    return disc, model, np.full(model.state_shape, 2.0)


def test_hill_with_n_1_is_michaelis_menten():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 6))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.4, 0.5]])])
    common = dict(D=1e-3, decay=KDEC, sources=[solver.Constant(rate=0.05)])
    mm = solver.simulate(model, model.params(saturable={"Vmax": V, "Km": K}, **common), t_end=600.0, dt=20.0,
                         budget=True)
    hl = solver.simulate(model, model.params(hill={"Vmax": V, "K": K, "n": 1.0}, **common), t_end=600.0, dt=20.0,
                         budget=True)
    np.testing.assert_allclose(np.asarray(hl.final), np.asarray(mm.final), rtol=1e-12, atol=1e-15)
    assert float(hl.budget["internalised"][0]) == pytest.approx(float(mm.budget["taken_up"][0]), rel=1e-12)


@pytest.mark.parametrize("method", ["rkl2", "trbdf2"])
def test_well_mixed_hill_uptake_matches_radau(method):
    """A uniform field: dc/dt = -k c - V c^n / (K^n + c^n), second order in dt against Radau."""
    disc, model, c0 = uniform()
    params = model.params(D=1e-3, decay=KDEC, hill={"Vmax": V, "K": K, "n": N})
    T = 200.0
    ref = solve_ivp(lambda t, c: -KDEC * c - V * c ** N / (K ** N + c ** N), (0, T), [2.0], method="Radau",
                    rtol=1e-12, atol=1e-14).y[0, -1]
    errs = []
    for dt in (10.0, 5.0):
        sol = solver.simulate(model, params, t_end=T, dt=dt, method=method, c0=c0)
        errs.append(abs(float(np.asarray(sol.final).mean()) / ref - 1))
    assert errs[1] < 1e-4, errs
    assert 1.8 <= np.log2(errs[0] / errs[1]) <= 2.2, errs
    sol = solver.simulate(model, params, t_end=T, rtol=1e-6, c0=c0)
    assert abs(float(np.asarray(sol.final).mean()) / ref - 1) < 1e-5


def test_hill_budget_closes_with_a_source():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 6, regions={"remote": True,
                                                                             "border": geometry.halfspace(0, 0.5)}))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.4, 0.5]])])
    params = model.params(D=1e-3, decay=KDEC, uptake=[[0.0, 1e-3]],
                          hill={"Vmax": [[0.0, V]], "K": K, "n": N}, sources=[solver.Constant(rate=0.05)])
    sol = solver.simulate(model, params, t_end=1800.0, dt=30.0, method="trbdf2", budget=True)
    b = {k: float(v[0]) for k, v in sol.budget.items()}
    left = float(model.total(sol.final)[0])
    assert b["internalised"] > 0
    assert abs(b["secreted"] - b["decayed"] - b["taken_up"] - b["cleared"] - b["internalised"] - left) \
        <= 1e-10 * b["secreted"]


@pytest.mark.parametrize("method", [pytest.param("rkl2", marks=pytest.mark.slow), pytest.param("cn", marks=pytest.mark.slow),
                                    "trbdf2"])   # fast path: TR-BDF2, the default stepper
def test_hill_gradients_match_central_differences(method):
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 5))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.4, 0.5]])])
    params = model.params(D=1e-3, decay=KDEC, hill={"Vmax": V, "K": K, "n": N}, sources=[solver.Constant(rate=0.05)])
    stepper = solver.plan(model, params, dt=30.0, method=method)

    def loss(h):
        p = solver.Params(D=params.D, decay=params.decay, uptake=params.uptake, clearance=params.clearance,
                          sources=params.sources, hill=solver.Hill(Vmax=params.hill.Vmax * h[0], K=h[1:2], n=h[2:3]))
        return jnp.sum(model.total(solver.simulate(model, p, t_end=300.0, dt=30.0, method=stepper).final))

    x = jnp.array([1.0, K, N])
    g = jax.grad(loss)(x)
    for i in range(3):
        e = jnp.zeros(3).at[i].set(1e-6 * float(x[i]))
        fd = (loss(x + e) - loss(x - e)) / (2 * float(e[i]))
        assert float(g[i]) == pytest.approx(float(fd), rel=1e-5), (i, float(g[i]), float(fd))
    np.testing.assert_allclose(np.asarray(jax.jacfwd(loss)(x)), np.asarray(g), rtol=1e-8)


def test_hill_parameters_are_checked():
    disc, model, _ = uniform()
    with pytest.raises(ValueError, match=r"hill.n.*>= 1"):
        model.check(model.params(D=1e-3, hill={"Vmax": V, "K": K, "n": 0.5}))
    with pytest.raises(ValueError, match="hill needs"):
        model.params(D=1e-3, hill={"Vmax": V})


SCENARIO = """
[geometry]
file = "box.vtu"
[time]
end = "2 h"
dt = "60 s"
[output]
maps = []
[factors.VEGF]
preset = "VEGF165"
hill = {{ Vmax = {{ border = "{vmax}" }}, K = "50 pg/mL", n = {n} }}
[cells]
secretion = {{ VEGF = "1e-6 pg/cell/s" }}
[[injection]]
time = "0 h"
dose = "1e5 cells"
sites = 1
region = "border"
"""


def test_hill_scenario_key_and_fit_parameter(tmp_path):
    from paracrine.catalogue import available
    from paracrine import build as B, scenario as sc

    regions = {"remote": True, "border": geometry.halfspace(0, 2.0), "core": geometry.halfspace(0, 3.0)}
    geometry.write(tmp_path / "box.vtu", geometry.box_mesh([0, 0, 0], [4.0, 4.0, 1.0], [8, 8, 2], regions=regions))
    (tmp_path / "s.toml").write_text(SCENARIO.format(vmax="0.1 ng/mL/min", n=2))
    built = B.build(sc.load(tmp_path / "s.toml"))
    h = built.params.hill
    border = list(built.model.regions).index("border")
    assert float(h.Vmax[0, border]) == pytest.approx(0.1 / 60.0) and float(h.n[0]) == 2.0
    assert float(h.K[0]) == pytest.approx(0.05)
    free = available(built)
    p = free["VEGF.hill.Vmax"].set(built.params, 3e-3)
    assert float(free["VEGF.hill.Vmax"].get(p)) == pytest.approx(3e-3)
    assert "VEGF.hill.K" in free
    (tmp_path / "bad.toml").write_text(SCENARIO.format(vmax="0.1 ng/mL/min", n=0.5))
    with pytest.raises(sc.ScenarioError, match=r"factors.VEGF.hill.n = 0.5; allowed: a Hill coefficient"):
        sc.load(tmp_path / "bad.toml")
