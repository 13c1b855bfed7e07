"""Lumped mass and stiffness against an independent assembly (scikit-fem), V6."""

import numpy as np
import pytest
import scipy.sparse as sp

from paracrine import geometry

skfem = pytest.importorskip("skfem")
from skfem.models.poisson import laplace, mass  # noqa: E402


def skfem_matrices(mesh, D):
    if mesh.dim == 2:
        m = skfem.MeshTri(mesh.points.T.copy(), mesh.cells.T.copy())
        e = skfem.ElementTriP1()
    else:
        m = skfem.MeshTet(mesh.points.T.copy(), mesh.cells.T.copy())
        e = skfem.ElementTetP1()
    K = 0
    for r, (_name, label) in enumerate(sorted(mesh.region_names.items(), key=lambda kv: kv[1])):
        basis = skfem.Basis(m, e, elements=np.flatnonzero(mesh.cell_regions == label))
        K = K + D[r] * skfem.asm(laplace, basis)
    M = skfem.asm(mass, skfem.Basis(m, e))
    return sp.csr_matrix(K), np.asarray(M.sum(axis=1)).ravel()


@pytest.mark.parametrize("dim", [2, 3])
def test_mass_and_stiffness_match_skfem(dim, rng):
    mesh = geometry.box_mesh(np.zeros(dim), np.array([1.0, 0.7, 1.3][:dim]), 5,
                             regions={"remote": True, "core": lambda x: np.linalg.norm(x - 0.5, axis=1) < 0.3})
    # perturb interior nodes so that cells are generic (obtuse angles, negative couplings)
    pts = mesh.points.copy()
    interior = np.all((pts > 1e-9) & (pts < np.array([1.0, 0.7, 1.3][:dim]) - 1e-9), axis=1)
    pts[interior] += rng.uniform(-0.04, 0.04, (interior.sum(), dim))
    mesh = geometry.Mesh(pts, mesh.cells, mesh.cell_regions, mesh.region_names)
    disc = geometry.discretise(mesh)
    D = np.array([1.7, 0.3])
    rows, cols, vals = disc.stiffness(D)
    K = sp.csr_matrix((vals, (rows, cols)), shape=(mesh.n_nodes,) * 2)
    K_ref, m_ref = skfem_matrices(mesh, D)
    assert abs(K - K_ref).max() <= 1e-13 * abs(K_ref).max()
    np.testing.assert_allclose(disc.mass, m_ref, rtol=1e-13)
    np.testing.assert_allclose(disc.mass_region.sum(1), disc.mass, rtol=1e-14)
    assert (disc.couplings < 0).any(), "the perturbed mesh should have some negative (obtuse) couplings"


def test_region_mass_split():
    mesh = geometry.box_mesh([0, 0], [1, 1], 4, regions={"a": True, "b": geometry.halfspace(0, 0.5)})
    disc = geometry.discretise(mesh)
    np.testing.assert_allclose(disc.mass_region.sum(0), [0.5, 0.5])
    # nodes on the interface x = 0.5 are shared between the regions
    on = np.isclose(mesh.points[:, 0], 0.5)
    assert np.all((disc.mass_region[on] > 0).all(1))
