"""A Source pairs a placement with its time profile: no pairing by list position."""

import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver


def setup():
    disc = geometry.discretise(geometry.box_mesh([0, 0], [1, 1], 8))
    a = solver.point_source(disc, [[0.3, 0.3]], name="a")
    b = solver.point_source(disc, [[0.7, 0.6]], name="b")
    return disc, a, b


def run(model, params):
    sol = solver.simulate(model, params, t_end=100.0, dt=20.0)
    assert sol.ok
    return np.asarray(sol.final)


def test_source_objects_equal_positional_profiles():
    disc, a, b = setup()
    pa, pb = solver.Constant(rate=1.0), solver.Exponential(rate=3.0, k=1e-2)
    paired = solver.Model(disc, sources=[solver.Source(a, pa), solver.Source(b, pb)])
    legacy = solver.Model(disc, sources=[a, b])
    ref = run(legacy, legacy.params(D=1e-3, sources=[pa, pb]))
    np.testing.assert_array_equal(run(paired, paired.params(D=1e-3)), ref)
    # by name, in any order
    np.testing.assert_array_equal(run(legacy, legacy.params(D=1e-3, sources={"b": pb, "a": pa})), ref)
    # a dict replaces some of the Source profiles by name
    swapped = run(paired, paired.params(D=1e-3, sources={"b": solver.Constant(rate=0.0)}))
    only_a = run(legacy, legacy.params(D=1e-3, sources=[pa, solver.Constant(rate=0.0)]))
    np.testing.assert_array_equal(swapped, only_a)
    assert not np.array_equal(swapped, ref)


def test_pairing_errors_name_the_sources():
    disc, a, b = setup()
    legacy = solver.Model(disc, sources=[a, b])
    with pytest.raises(ValueError, match=r"'c', which is not a source of the model; its sources are \['a', 'b'\]"):
        legacy.params(D=1e-3, sources={"a": solver.Constant(rate=1.0), "c": solver.Constant(rate=1.0)})
    with pytest.raises(ValueError, match=r"no profile for the model's source\(s\) \['b'\]"):
        legacy.params(D=1e-3, sources={"a": solver.Constant(rate=1.0)})
    with pytest.raises(ValueError, match=r"params has 0 source profiles; the model has 2 sources \['a', 'b'\]"):
        solver.simulate(legacy, legacy.params(D=1e-3), t_end=10.0, dt=10.0)
    with pytest.raises(ValueError, match=r"holds 1 profiles; the model has 2 sources \['a', 'b'\]"):
        legacy.params(D=1e-3, sources=[solver.Constant(rate=1.0)])
    with pytest.raises(ValueError, match="not a mixture"):
        solver.Model(disc, sources=[solver.Source(a, solver.Constant(rate=1.0)), b])
    with pytest.raises(TypeError, match="profile must be an AbstractProfile"):
        solver.Source(a, 1.0)
    with pytest.raises(TypeError, match="placement must be an AbstractSource"):
        solver.Source(solver.Constant(rate=1.0), solver.Constant(rate=1.0))
