"""V4 well-mixed limits of the nonlinear kinetics (exponential Rosenbrock-Euler): closed forms, order,
positivity, conservation."""

import numpy as np
import pytest
from scipy.special import lambertw

from helpers import slope
from paracrine.solver.kinetics import step

ZERO = dict(kappa=0.0, V=0.0, Km=1.0, kon=0.0, koff=0.0, B=0.0, kdeg=0.0)


def integrate(c, b, T, n, scheme=step, **kw):
    import jax

    args = dict(ZERO, **kw)
    h = T / n
    one = jax.jit(lambda c, b: scheme(c, b, h, **args))
    lost = {"linear": 0.0, "saturable": 0.0, "degraded": 0.0}
    for _ in range(n):
        c, b, losses = one(c, b)
        lost = {k: lost[k] + losses[k] for k in lost}
    return np.asarray(c), np.asarray(b), {k: np.asarray(v) for k, v in lost.items()}


def test_michaelis_menten_against_lambert_w():
    """dc/dt = -V c / (Km + c): c(t) = Km W((c0 / Km) exp((c0 - V t) / Km))."""
    c0, V, Km, T = 5.0, 2.0, 1.5, 2.0
    exact = Km * np.real(lambertw(c0 / Km * np.exp((c0 - V * T) / Km)))
    ns = [8, 16, 32, 64]
    errs = [abs(float(integrate(np.array(c0), np.array(0.0), T, n, V=V, Km=Km)[0]) - exact) / exact for n in ns]
    assert errs[-1] < 2e-4
    assert slope([T / n for n in ns], errs) >= 1.8, errs


def test_binding_reaches_equilibrium_and_conserves(scheme=step):
    """No losses: c + b is constant and b -> B c / (K_D + c) with K_D = koff / kon."""
    c0, kon, koff, B = 3.0, 0.5, 0.2, 2.0
    c, b, lost = integrate(np.array(c0), np.array(0.0), 200.0, 400, scheme=scheme, kon=kon, koff=koff, B=B)
    assert float(c + b) == pytest.approx(c0, rel=1e-13)
    assert float(b) == pytest.approx(B * float(c) / (koff / kon + float(c)), rel=1e-8)


def test_order_with_everything_on():
    kw = dict(kappa=0.1, V=0.8, Km=0.7, kon=1.2, koff=0.3, B=1.5, kdeg=0.05)
    ref = integrate(np.array(2.0), np.array(0.4), 5.0, 8192, **kw)
    ns = [32, 64, 128, 256]
    errs = []
    for n in ns:
        c, b, _ = integrate(np.array(2.0), np.array(0.4), 5.0, n, **kw)
        errs.append(abs(float(c) - float(ref[0])) + abs(float(b) - float(ref[1])))
    assert slope([5.0 / n for n in ns], errs) >= 1.8, errs


def test_positive_and_conservative_for_stiff_random_rates(scheme=step):
    rng = np.random.default_rng(7)
    n = 2000
    kw = dict(kappa=10 ** rng.uniform(-4, 3, n), V=10 ** rng.uniform(-4, 3, n), Km=10 ** rng.uniform(-3, 2, n),
              kon=10 ** rng.uniform(-4, 3, n), koff=10 ** rng.uniform(-4, 3, n), B=10 ** rng.uniform(-3, 2, n),
              kdeg=10 ** rng.uniform(-5, 1, n))
    c0 = np.where(rng.uniform(size=n) < 0.2, 0.0, 10 ** rng.uniform(-3, 3, n))
    b0 = np.minimum(np.where(rng.uniform(size=n) < 0.2, 0.0, 10 ** rng.uniform(-3, 3, n)), kw["B"])
    c, b, lost = scheme(c0, b0, 5.0, **kw)
    c, b = np.asarray(c), np.asarray(b)
    assert np.all(np.isfinite(c)) and np.all(np.isfinite(b))
    assert c.min() >= 0 and b.min() >= 0
    assert np.all(b <= kw["B"] * (1 + 1e-12))
    total = c + b + sum(np.asarray(v) for v in lost.values())
    np.testing.assert_allclose(total, c0 + b0, rtol=1e-12, atol=1e-300)


def test_gradient_finite_where_the_local_matrix_is_degenerate():
    """Saturable uptake with Vmax = 0 and no linear loss at some nodes: the 2x2 matrix has a double
    eigenvalue (delta = 0), where sqrt's derivative would turn every gradient into NaN."""
    import jax
    import jax.numpy as jnp

    def loss(c, V):
        out = step(c, jnp.zeros_like(c), 30.0, 0.0, kappa=0.0, V=V, Km=1.0, kon=0.0, koff=0.0, B=0.0, kdeg=0.0)
        return out[0].sum()

    c, V = jnp.array([2.0, 2.0]), jnp.array([0.0, 1e-3])
    gc, gV = jax.grad(loss, argnums=(0, 1))(c, V)
    assert np.all(np.isfinite(np.asarray(gc))) and np.all(np.isfinite(np.asarray(gV)))
    assert float(gc[0]) == pytest.approx(1.0, rel=1e-12)
    eps = 1e-7
    fd = (float(loss(c, V.at[0].add(eps))) - float(loss(c, V))) / eps
    assert float(gV[0]) == pytest.approx(fd, rel=1e-5)
