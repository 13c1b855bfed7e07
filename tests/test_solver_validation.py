"""Every user mistake the solver can see gets a clear error (one test each)."""

import jax
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver


@pytest.fixture(scope="module")
def case():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 4, regions={"remote": True,
                                                                             "core": geometry.halfspace(0, 0.5)}))
    model = solver.Model(disc, factors=["VEGF", "HGF"], sources=[solver.point_source(disc, [[0.5, 0.5]], name="cells")])
    params = model.params(D=1e-3, decay=0.01, sources=[solver.Constant(rate=1.0)])
    return disc, model, params


def run(model, params, **kw):
    opts = dict(t_end=1.0, dt=0.1)
    opts.update(kw)
    return solver.simulate(model, params, **opts)


def test_negative_diffusivity_names_factor_and_region(case):
    _, model, _ = case
    p = model.params(D=[[1e-3, -2e-3], [1e-3, 1e-3]], sources=[solver.Constant(rate=1.0)])
    with pytest.raises(ValueError, match=r"params.D\[0, 1\] = .*-0.002.*factor 'VEGF', region 'core'.*>= 0"):
        run(model, p)


def test_nan_decay(case):
    _, model, _ = case
    p = model.params(D=1e-3, decay=[0.1, np.nan], sources=[solver.Constant(rate=1.0)])
    with pytest.raises(ValueError, match=r"params.decay\[1\] = nan \(factor 'HGF'\)"):
        run(model, p)


def test_negative_source_rate(case):
    _, model, _ = case
    p = model.params(D=1e-3, sources=[solver.Constant(rate=[1.0, -1.0])])
    with pytest.raises(ValueError, match=r"sources\['cells'\] rate\[1\] = -1.0.*>= 0 \(pg/s\)"):
        run(model, p)


def test_wrong_parameter_shape(case):
    _, model, _ = case
    with pytest.raises(ValueError, match=r"D has shape \(3,\); allowed: scalar, \(2,\) per factor or \(2, 2\)"):
        model.params(D=[1.0, 2.0, 3.0])


def test_missing_source_profile(case):
    _, model, _ = case
    with pytest.raises(ValueError, match=r"params has 0 source profiles; the model has 1 sources \['cells'\]"):
        run(model, model.params(D=1e-3))


def test_forward_euler_refuses_unstable_dt_and_names_the_limit(case):
    _, model, params = case
    rho = float(np.max(solver.spectral_bound(model, params)))
    with pytest.raises(solver.StabilityError, match=rf"largest stable dt is {2 / rho:.6g} s"):
        run(model, params, dt=50.0, t_end=100.0, method="euler")


def test_rkl2_with_too_few_stages(case):
    _, model, params = case
    with pytest.raises(solver.StabilityError, match=r"RKL2 with 2 stages is unstable at dt = 50 s: it needs \d+ stages"):
        run(model, params, dt=50.0, t_end=100.0, method=solver.RKL2(s=2))


def test_rkl2_under_jit_needs_a_plan(case):
    _, model, params = case
    with pytest.raises(ValueError, match=r"fixed stage count .*method=solver.plan"):
        jax.jit(lambda p: run(model, p).final)(params)


@pytest.mark.parametrize("kw,match", [
    (dict(dt=0.0), r"dt = 0.0; allowed: a finite number > 0"),
    (dict(t_end=float("inf")), r"t_end = inf; allowed"),
    (dict(save_at=[0.5, 2.0]), r"save_at contains 2.0; allowed: times in \[0, t_end = 1\] s"),
    (dict(save_at=[0.5, 0.2]), r"strictly increasing"),
    (dict(method="heun"), r"method 'heun' is not one of \['adi', 'cn', 'euler', 'rkl2', 'trbdf2'\]"),
])
def test_bad_run_options(case, kw, match):
    _, model, params = case
    with pytest.raises(ValueError, match=match):
        run(model, params, **kw)


def test_bad_initial_state(case):
    _, model, params = case
    with pytest.raises(ValueError, match=r"c0 has shape \(25,\); the model needs \(2, 25\)"):
        run(model, params, c0=np.zeros(25))
    c0 = np.zeros((2, 25))
    c0[1, 3] = np.inf
    with pytest.raises(ValueError, match=r"c0\[1, 3\] = inf; allowed: finite values"):
        run(model, params, c0=c0)


def test_model_errors(case):
    disc, _, _ = case
    with pytest.raises(ValueError, match="factors must be distinct"):
        solver.Model(disc, factors=["VEGF", "VEGF"])
    with pytest.raises(TypeError, match=r"sources holds Source\(placement, profile\) or placements \(PointSource"):
        solver.Model(disc, sources=["here"])
    with pytest.raises(geometry.GeometryError, match=r"point 0 at \[2.0, 0.5\] lies outside the mesh"):
        solver.point_source(disc, [[2.0, 0.5]])
    with pytest.raises(ValueError, match=r"field source 'f': density must be finite and >= 0"):
        solver.field_source(disc, -np.ones(disc.n_nodes), name="f")
    with pytest.raises(ValueError, match="layout 'coo' is not one of"):
        solver.Model(disc, layout="coo")


def test_simulate_type_errors(case):
    _, model, params = case
    with pytest.raises(TypeError, match="needs solver.Params"):
        solver.simulate(model, {"D": 1.0}, t_end=1.0, dt=0.1)
