"""The layers (geometry <- solver <- fitting <- paracrine) and the generic calibration core: a
`fitting.Problem` built from solver objects alone, fitted without any scenario file, and compiled
once when only numbers change."""

import ast
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paracrine import fitting
from paracrine import geometry
from paracrine import solver

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["geometry", "solver", "fitting", "paracrine"]


def _imports(path: Path) -> set:
    """Top-level package names a module imports, lazy imports inside functions included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {_layer(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "paracrine":   # from paracrine import solver, geometry
                out |= {a.name if a.name in LAYERS[:3] else "paracrine" for a in node.names}
            else:
                out.add(_layer(node.module))
    return out


def _layer(module: str) -> str:
    """paracrine.solver.simulate -> solver; paracrine.cli -> paracrine; numpy -> numpy."""
    parts = module.split(".")
    return parts[1] if parts[0] == "paracrine" and len(parts) > 1 and parts[1] in LAYERS[:3] else parts[0]


@pytest.mark.parametrize("layer", LAYERS[:3])
def test_imports_point_down_only(layer):
    above = set(LAYERS[LAYERS.index(layer) + 1:])
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & above) for p in (ROOT / layer).rglob("*.py")}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{layer} imports layers above it: {bad}"


def test_one_namespace_nothing_generic_installed():
    """The layers install as paracrine.geometry, paracrine.solver, paracrine.fitting: outside the
    source folder there is no top-level `solver` (or `geometry`, `fitting`) to clash with."""
    code = ("import importlib.util as u; import paracrine.solver as s; "
            "print([n for n in ('solver', 'geometry', 'fitting') if u.find_spec(n)]); print(s.__name__)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[]", "paracrine.solver"]
    assert all((ROOT / layer / "py.typed").is_file() for layer in LAYERS)


def test_fitting_imports_without_the_application():
    code = ("import sys; from paracrine import fitting, solver, geometry; "
            "app = [m for m in sys.modules if m.startswith('paracrine.') and m.split('.')[1] not in "
            "('fitting', 'solver', 'geometry')]; assert not app, app")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def box():
    """A two-region box with a point source, decay and region uptake; data: region amounts at 4 times."""
    mesh = geometry.box_mesh([0, 0, 0], [2.0, 1.0, 1.0], [8, 4, 4], regions={"a": True, "b": lambda x: x[:, 0] > 1.0})
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, factors=("f",), sources=(solver.PointSource.at(disc, [[0.55, 0.5, 0.5]], name="s"),))
    truth = model.params(D=1e-3, decay=2e-4, uptake=[[0.0, 5e-4]], sources=(solver.Constant(rate=2.0),))
    free = [fitting.parameter("decay", lambda p: p.decay, 0, unit="1/s"),
            fitting.parameter("rate", lambda p: p.sources[0].rate, unit="pg/s")]
    times = np.array([600.0, 1800.0, 3600.0, 7200.0])
    observe = fitting.Pick(solver.observe.region_amounts(model), t_idx=jnp.repeat(jnp.arange(4), 2),
                           flat=jnp.tile(jnp.arange(2), 4))
    sol = solver.simulate(model, truth, t_end=times[-1], dt=120.0, save_at=times, method="cn",
                          observe=observe.observer)
    y = np.asarray(sol.ys).reshape(4, 2).reshape(-1)
    start = free[1].set(free[0].set(truth, 1e-3), 0.5)
    return model, truth, start, free, observe, times, y


def test_problem_without_scenario_recovers_truth(box):
    model, truth, start, free, observe, times, y = box
    prob = fitting.Problem(model, start, free, observe, times, y, 0.01 * y, dt=120.0, method="cn")
    res = fitting.fit(prob)
    assert res.converged, res.status
    np.testing.assert_allclose(res.values, [2e-4, 2.0], rtol=1e-6)
    assert res.observations is None and res.names == ["decay", "rate"]
    # the residual's gradient against central differences, forward mode against reverse mode
    z = prob.z0 + jnp.array([0.2, -0.1])
    g = np.asarray(jax.grad(prob.loss)(z))
    fd = [(float(prob.loss(z.at[k].add(1e-5))) - float(prob.loss(z.at[k].add(-1e-5)))) / 2e-5 for k in range(2)]
    np.testing.assert_allclose(g, fd, rtol=1e-5)
    np.testing.assert_allclose(jax.jacfwd(prob.residual)(z), jax.jacrev(prob.residual)(z), rtol=1e-9, atol=1e-12)


def test_fit_compiles_once_when_only_numbers_change(box):
    model, truth, start, free, observe, times, y = box
    prob = fitting.Problem(model, start, free, observe, times, y, 0.01 * y, dt=120.0, method="cn")
    n0 = fitting.traces()
    a = fitting.fit(prob)
    n1 = fitting.traces()
    b = fitting.fit(prob.with_data(1.5 * y, 0.01 * 1.5 * y))          # new data values
    c = fitting.fit(eqx.tree_at(lambda p: p.params0, prob, free[1].set(prob.params0, 1.0)))  # another start
    assert fitting.traces() == n1 <= n0 + 1, (n0, n1, fitting.traces())
    assert b.compile_s == 0.0 and c.compile_s == 0.0
    # linear in the rate: 1.5x the data is 1.5x the rate, the decay unchanged
    np.testing.assert_allclose(b.values, [a.values[0], 1.5 * a.values[1]], rtol=1e-6)
    np.testing.assert_allclose(c.values, a.values, rtol=1e-6)


def test_problem_errors_name_what_is_wrong(box):
    model, truth, start, free, observe, times, y = box
    with pytest.raises(ValueError, match=r"loss 'huber'; allowed"):
        fitting.Problem(model, start, free, observe, times, y, loss="huber")
    with pytest.raises(ValueError, match=r"bounds for 'rat', which is not free"):
        fitting.Problem(model, start, free, observe, times, y, bounds={"rat": (0, 1)})
    with pytest.raises(ValueError, match=r"bounds for rate = \(3, 4\).*around the start 0.5"):
        fitting.Problem(model, start, free, observe, times, y, bounds={"rate": (3, 4)})
    with pytest.raises(ValueError, match=r"datum 2: value .*sd 0.0; allowed: finite values, sd > 0"):
        fitting.Problem(model, start, free, observe, times, y, np.where(np.arange(8) == 2, 0.0, 1.0))
    with pytest.raises(ValueError, match=r"free parameter decay starts at 0.0; allowed: > 0"):
        fitting.Problem(model, free[0].set(start, 0.0), free, observe, times, y)
    with pytest.raises(TypeError, match=r"fit needs a fitting.Problem"):
        fitting.fit(object())


def test_ensemble_equals_a_loop_of_runs(box):
    model, truth, start, free, observe, times, y = box
    values = np.array([[1e-4, 1.0], [3e-4, 2.0], [1e-3, 4.0]])
    out = fitting.ensemble(model, truth, free, values, times=times, dt=120.0, method="cn", observe=observe.observer,
                           shard=False)
    for row, ys in zip(values, out["ys"]):
        p = free[1].set(free[0].set(truth, row[0]), row[1])
        one = solver.simulate(model, p, t_end=times[-1], dt=120.0, save_at=times, method="cn", observe=observe.observer)
        np.testing.assert_allclose(ys, one.ys, rtol=1e-10)
    from paracrine.solver.results import code

    assert out["status"].tolist() == [code(solver.RESULTS.successful)] * 3
