"""vmap over params equals a loop; new parameter values do not retrace."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from paracrine.solver.simulate import TRACE_COUNT


@pytest.fixture(scope="module")
def case():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 6, regions={"remote": True,
                                                                             "core": geometry.halfspace(0, 0.5)}))
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.3]])])
    return disc, model


def batch_params(model, n):
    D = np.linspace(1e-3, 5e-3, n)
    return [model.params(D=[[d, 2 * d]], decay=0.01 * (1 + i), uptake=[[0.0, 0.05 * i]],
                         sources=[solver.Constant(rate=1.0 + i, stop=2.0)]) for i, d in enumerate(D)]


@pytest.mark.parametrize("method", ["rkl2", "cn"])
def test_vmap_equals_loop(case, method):
    disc, model = case
    ps = batch_params(model, 4)
    stepper = solver.plan(model, ps[-1], dt=0.2, method=method)  # the largest D sets the stage count
    run = lambda p: solver.simulate(model, p, t_end=3.0, dt=0.2, save_at=[1.0, 3.0], method=stepper).ys  # noqa: E731
    batched = jax.vmap(run)(jax.tree.map(lambda *xs: jnp.stack(xs), *ps))
    looped = np.stack([run(p) for p in ps])
    np.testing.assert_allclose(batched, looped, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method", ["rkl2", "cn", "euler"])
def test_new_parameter_values_do_not_retrace(case, method):
    disc, model = case
    ps = batch_params(model, 3)
    stepper = solver.plan(model, ps[-1], dt=0.05, method=method)
    name = type(stepper).__name__
    solver.simulate(model, ps[0], t_end=1.0, dt=0.05, method=stepper)
    before = TRACE_COUNT[name]
    for p in ps[1:]:
        sol = solver.simulate(model, p, t_end=1.0, dt=0.05, method=stepper)
        assert sol.ok
    # a different c0 and a different t_end with the same step count are numbers too
    solver.simulate(model, ps[0], t_end=1.1, dt=0.055, method=stepper, c0=np.ones(model.state_shape))
    assert TRACE_COUNT[name] == before


def test_jit_of_simulate_with_planned_stepper(case):
    disc, model = case
    p = batch_params(model, 1)[0]
    stepper = solver.plan(model, p, dt=0.2)
    f = jax.jit(lambda p: solver.simulate(model, p, t_end=2.0, dt=0.2, method=stepper).final)
    np.testing.assert_allclose(f(p), solver.simulate(model, p, t_end=2.0, dt=0.2, method=stepper).final, rtol=1e-13)


def test_traced_params_report_instability_as_status(case):
    disc, model = case
    p = batch_params(model, 1)[0]
    stepper = solver.plan(model, p, dt=0.2)  # stages for this D
    fast = model.params(D=100 * p.D, decay=p.decay, uptake=p.uptake, sources=p.sources)
    status = jax.jit(lambda q: solver.simulate(model, q, t_end=2.0, dt=0.2, method=stepper).status)(fast)
    assert int(status) == 1
    with pytest.raises(solver.StabilityError, match="needs .* stages"):
        solver.simulate(model, fast, t_end=2.0, dt=0.2, method=stepper)
