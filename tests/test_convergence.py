"""V1: the cosine mode in a box; spatial and temporal orders from log-log fits (float64)."""

import numpy as np
import pytest

from paracrine import geometry
from paracrine import solver
from helpers import cosine_mode, slope

L, D, K, T = 1.0, 0.01, 0.05, 2.0


def make(kind, dim, n):
    lo, hi = np.zeros(dim), np.full(dim, L)
    geo = geometry.box_grid(lo, hi, n) if kind == "grid" else geometry.box_mesh(lo, hi, n)
    disc = geometry.discretise(geo)
    model = solver.Model(disc)
    c0 = cosine_mode(disc.coordinates, 0.0, L).reshape(model.state_shape)
    return disc, model, c0


def rel_l2(a, b, w):
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    return float(np.sqrt(np.sum(w * (a - b) ** 2) / np.sum(w * b ** 2)))


@pytest.mark.parametrize("kind,dim,ns", [("grid", 2, [8, 16, 32, 64]), ("grid", 3, [6, 12, 24]),
                                         ("mesh", 2, [4, 8, 16, 32]), ("mesh", 3, [4, 8, 16])])
def test_spatial_order(kind, dim, ns):
    errs, hs = [], []
    for n in ns:
        disc, model, c0 = make(kind, dim, n)
        sol = solver.simulate(model, model.params(D=D, decay=K), t_end=T, dt=T / 40, method="cn", c0=c0, positive=False)
        exact = c0 * np.exp(-(dim * D * np.pi ** 2 / L ** 2 + K) * T)
        errs.append(rel_l2(sol.final, exact, np.broadcast_to(np.asarray(disc.mass), c0.shape[1:]).ravel()))
        hs.append(L / n)
    p = slope(hs, errs)
    assert p >= 1.8, f"spatial order {p:.2f}, errors {errs}"


def semi_discrete_exact(disc, c0, t):
    """The cosine mode is an eigenvector of the grid operator: exact in time, no time error."""
    lam = sum(2 * D / h ** 2 * (1 - np.cos(np.pi * h / L)) for h in disc.grid.spacing)
    return c0 * np.exp(-(lam + K) * t)


@pytest.mark.parametrize("method,n,dts", [
    ("euler", 8, [0.2, 0.1, 0.05, 0.025]),
    ("rkl2", 32, [0.5, 0.25, 0.125, 0.0625]),
    ("cn", 32, [0.5, 0.25, 0.125, 0.0625]),
    ("trbdf2", 32, [0.5, 0.25, 0.125, 0.0625]),
])
def test_temporal_order_grid(method, n, dts):
    disc, model, c0 = make("grid", 2, n)
    params = model.params(D=D, decay=K)
    exact = semi_discrete_exact(disc, c0, T)
    stepper = solver.plan(model, params, dt=max(dts), method=method)  # one RKL2 stage count for every dt
    errs = [rel_l2(solver.simulate(model, params, t_end=T, dt=dt, method=stepper, c0=c0, positive=False).final,
                   exact, 1.0) for dt in dts]
    p = slope(dts, errs)
    assert abs(p - stepper.order) <= 0.2, f"order {p:.2f} (stepper order {stepper.order}), errors {errs}"


@pytest.mark.parametrize("method", ["euler", "rkl2", "cn", "trbdf2"])
def test_temporal_order_mesh_with_region_losses_and_a_source(method):
    """Region-wise uptake does not commute with diffusion (it is inside the operator) and a decaying
    point source drives the field: the time order of the whole step, sources included."""
    mesh = geometry.box_mesh([0, 0], [L, L], 8, regions={"remote": True, "core": geometry.halfspace(0, 0.5)})
    disc = geometry.discretise(mesh)
    model = solver.Model(disc, sources=[solver.point_source(disc, [[0.3, 0.6]])])
    c0 = (1 + cosine_mode(disc.coordinates, 0.0, L))[None]
    params = model.params(D=[[D, 3 * D]], decay=K, uptake=[[0.0, 0.4]],
                          sources=[solver.Exponential(rate=0.05, k=0.3)])
    ref = solver.simulate(model, params, t_end=T, dt=T / 1024, method="trbdf2", c0=c0).final
    dts = [0.08, 0.04, 0.02, 0.01] if method == "euler" else [0.5, 0.25, 0.125, 0.0625]
    stepper = solver.plan(model, params, dt=max(dts), method=method)
    errs = [rel_l2(solver.simulate(model, params, t_end=T, dt=dt, method=stepper, c0=c0).final, ref, disc.mass)
            for dt in dts]
    p = slope(dts, errs)
    assert abs(p - stepper.order) <= 0.2, f"order {p:.2f} (stepper order {stepper.order}), errors {errs}"


def gmsh_ball(size):
    """An unstructured tetrahedral mesh of the unit ball from gmsh (curved boundary, no symmetry)."""
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("ball")
        gmsh.model.occ.addSphere(0, 0, 0, 1.0)
        gmsh.model.occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", size)
        gmsh.option.setNumber("Mesh.OptimizeNetgen", 1)
        gmsh.model.mesh.generate(3)
        tags, xyz, _ = gmsh.model.mesh.getNodes()
        _, _, conn = gmsh.model.mesh.getElements(3)
        tet = np.asarray(conn[0], np.int64).reshape(-1, 4)
    finally:
        gmsh.finalize()
    used = np.unique(tet)
    pos = np.zeros(int(tags.max()) + 1, np.int64)
    pos[tags.astype(np.int64)] = np.arange(len(tags))
    index = np.full(int(tags.max()) + 1, -1, np.int64)
    index[used] = np.arange(len(used))
    return geometry.Mesh(points=xyz.reshape(-1, 3)[pos[used]], cells=index[tet])


def test_spatial_order_on_an_unstructured_gmsh_ball():
    """Manufactured steady state on the unit ball with zero flux: c = 2 + cos(pi r^2) (dc/dr = 0 at
    r = 1) solves -D lap c + k c = f with f = D (6 pi sin(pi r^2) + 4 pi^2 r^2 cos(pi r^2)) + k c."""
    Dm, km = 0.05, 3.0
    errs, hs = [], []
    for size in (0.4, 0.25, 0.16):
        mesh = gmsh_ball(size)
        disc = geometry.discretise(mesh)
        r2 = (mesh.points ** 2).sum(axis=1)
        exact = 2 + np.cos(np.pi * r2)
        f = Dm * (6 * np.pi * np.sin(np.pi * r2) + 4 * np.pi ** 2 * r2 * np.cos(np.pi * r2)) + km * exact
        m = np.asarray(disc.mass)
        model = solver.Model(disc, sources=[solver.field_source(disc, f)])
        params = model.params(D=Dm, decay=km, sources=[solver.Constant(rate=float(m @ f))])
        c = np.asarray(solver.steady_state(model, params, tol=1e-12).c)[0]
        errs.append(float(np.sqrt((m * (c - exact) ** 2).sum() / (m * exact ** 2).sum())))
        hs.append(size)
    p = slope(hs, errs)
    assert p >= 1.8, f"spatial order {p:.2f}, errors {errs}"
