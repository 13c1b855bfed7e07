"""Where sources put their amount: point sources at coordinates and volumetric fields.

A point source at x spreads an amount Q over the nodes of the cell containing
x with P1 (barycentric) weights phi_i(x) (mesh) or over the 2^d voxel centres
around x with trilinear (bilinear in 2-D) weights phi_i(x) (grid), renormalised
over the tissue voxels among them: c_i += Q phi_i(x) / m_i, sum_i phi_i(x) = 1.
On grids `PointSource.trilinear` computes the same weights from a traced x, so
an output's gradient with respect to the site coordinates is available.
A field source spreads Q in proportion to a non-negative density rho:
c_i += Q rho_i / sum_j m_j rho_j.
The numbers (rates, timings) live in the matching profile in `Params.sources`.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from paracrine.geometry.discretise import containing, trilinear_weights


class AbstractSource(eqx.Module):
    """Static placement of a source; `add(c, amount)` adds amount (S,) to fields c (S, *shape)."""

    name: str = eqx.field(static=True)

    @abc.abstractmethod
    def add(self, c, amount): ...


class PointSource(AbstractSource):
    """One or more sites; the profile's rate applies to each site."""

    nodes: jax.Array     # (P, k) flat node / voxel indices
    weights: jax.Array   # (P, k) phi_i(x) / m_i

    @classmethod
    def at(cls, disc, points, *, name: str = "source", dtype=None) -> "PointSource":
        nodes, w = disc.locate(points)
        mass = np.asarray(disc.mass).reshape(-1)
        dtype = dtype or jnp.result_type(float)
        return cls(name=name, nodes=jnp.asarray(nodes, jnp.int32), weights=jnp.asarray(w / mass[nodes], dtype))

    @classmethod
    def trilinear(cls, disc, points, *, name: str = "source", dtype=None) -> "PointSource":
        """Sites at points (P, d) on a voxel grid, traceable: `disc.locate`'s rule (one implementation,
        `geometry.discretise.trilinear_weights`) evaluated with jax.numpy.

        phi_k(x) = prod_a (t_a or 1 - t_a) on the corners i + k of the cell of voxel centres
        around x, u = (x - origin) / h clamped to the box's centres, i = floor(u), t = u - i
        (see `geometry.discretise.trilinear_weights`), renormalised over the tissue corners;
        weights phi_k / m_k. The corner indices come from floor and carry no gradient; the
        weights are linear in each coordinate within a cell and continuous across cells, so
        `jax.grad` with respect to `points` works (one-sided at a cell face; zero in the half
        voxel next to the box face, where the clamp holds the weights). Concrete points give
        the same nodes and weights as `PointSource.at` and are checked on the host (a point
        outside the tissue raises GeometryError naming it; the weights agree to rounding, XLA's
        division differing from NumPy's in the last bit); traced points cannot be checked,
        and one whose voxel is not tissue gets NaN weights, which show in the solution.

        To differentiate a simulation with respect to site positions, put the source into
        the model inside the differentiated function and pass a planned stepper:

            def loss(x):
                src = PointSource.trilinear(disc, x, name=model.sources[j].name)
                m = eqx.tree_at(lambda m: m.sources[j], model, src)
                return f(simulate(m, params, ..., method=stepper))
            jax.grad(loss)(x0)      # stepper = solver.plan(model, params, dt=dt)
        """
        from paracrine.geometry import GridDiscretisation

        if not isinstance(disc, GridDiscretisation):
            raise TypeError(f"PointSource.trilinear needs a grid discretisation, got {type(disc).__name__}; "
                            "on meshes use PointSource.at (P1 weights at fixed points)")
        dtype = dtype or jnp.result_type(float)
        x = jnp.asarray(points, dtype)
        x = x[None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != disc.dim:
            raise ValueError(f"source {name!r}: points must have shape (P, {disc.dim}), got {x.shape}")
        if not isinstance(x, jax.core.Tracer):
            disc.locate(np.asarray(x))  # the host check, with its GeometryError
        g = disc.grid
        own, inside = containing(jax.lax.stop_gradient(x), g, xp=jnp)
        tissue = None
        if not disc.tissue.all():
            tissue = jnp.asarray(disc.tissue.reshape(-1))
            inside = inside & tissue[jnp.ravel_multi_index(tuple(own.T), g.shape, mode="clip")]
        flat, w = trilinear_weights(x, origin=g.origin, spacing=g.spacing, shape=g.shape, tissue=tissue, own=own,
                                    xp=jnp)
        w = jnp.where(inside[:, None], w, jnp.nan)
        return cls(name=name, nodes=flat.astype(jnp.int32), weights=w / g.voxel_volume)

    @property
    def n_sites(self) -> int:
        return self.nodes.shape[0]

    def add(self, c, amount):
        flat = c.reshape(c.shape[0], -1)
        inc = (amount[:, None, None] * self.weights[None]).reshape(c.shape[0], -1)  # (S, P k)
        flat = flat.at[:, self.nodes.reshape(-1)].add(inc)
        return flat.reshape(c.shape)


class MovableSource(PointSource):
    """Sites at coordinates x (P, d) that are data of the model, with the P1 weights of the containing
    cell computed from x inside the program, so that a simulation is differentiable with respect to
    the site positions on a mesh (`paracrine design` moves sites with it).

    Each site has C candidate cells around its first position (the nearest cells of its region);
    the containing one is the candidate whose smallest barycentric coordinate is largest, and its
    coordinates lambda (clipped at 0 and renormalised) are the weights: for a site inside the
    candidates, exactly `PointSource.at`'s weights, so the amount delivered and the solution are the
    ones a run with the site there gives. The weights are linear in x within a cell and continuous
    across cells (the gradient is piecewise constant); a site pushed past its candidates (or out of
    the tissue) stays on their boundary, at `placed()`'s point."""

    x: jax.Array = None           # (P, d) mm, the site positions
    cell_nodes: jax.Array = None  # (P, C, d + 1) node indices of the candidate cells
    inverse: jax.Array = None     # (P, C, d + 1, d + 1): lambda = inverse @ [x, 1]
    node_mass: jax.Array = None   # (P, C, d + 1) control volumes of their nodes
    node_coords: jax.Array = None # (P, C, d + 1, d) their coordinates

    @classmethod
    def around(cls, disc, points, *, cells: int = 64, region: str | None = None, name: str = "source",
               dtype=None) -> "MovableSource":
        """Candidates: the `cells` cells of `region` (None: any) nearest to each point (by centroid)."""
        from paracrine.geometry import MeshDiscretisation

        if not isinstance(disc, MeshDiscretisation):
            raise TypeError(f"movable sites need a mesh discretisation, got {type(disc).__name__}")
        x = np.atleast_2d(np.asarray(points, float))
        disc.locate(x)   # each point in the tissue (GeometryError naming it otherwise)
        mesh = disc.mesh
        pts, tets = np.asarray(mesh.points, float), np.asarray(mesh.cells)
        keep = np.ones(len(tets), bool)
        if region is not None:
            if region not in disc.regions:
                raise ValueError(f"region {region!r} is not one of {list(disc.regions)}")
            tag = mesh.region_names[region]
            keep = np.asarray(mesh.cell_regions) == tag
        cand = np.flatnonzero(keep)
        centroid = pts[tets[cand]].mean(axis=1)
        C = int(min(cells, len(cand)))
        d = np.linalg.norm(centroid[None] - x[:, None], axis=-1)
        near = cand[np.argsort(d, axis=1)[:, :C]]                     # (P, C)
        nodes = tets[near]                                              # (P, C, d+1)
        T = np.concatenate([pts[nodes].transpose(0, 1, 3, 2), np.ones(nodes.shape[:2] + (1, nodes.shape[2]))],
                           axis=2)                                      # (P, C, d+1, d+1): [x_k; 1] columns
        inv = np.linalg.inv(T)
        mass = np.asarray(disc.mass, float).reshape(-1)
        dtype = dtype or jnp.result_type(float)
        n0, w0 = disc.locate(x)
        return cls(name=name, nodes=jnp.asarray(n0, jnp.int32), weights=jnp.asarray(w0 / mass[n0], dtype),
                   x=jnp.asarray(x, dtype), cell_nodes=jnp.asarray(nodes, jnp.int32), inverse=jnp.asarray(inv, dtype),
                   node_mass=jnp.asarray(mass[nodes], dtype), node_coords=jnp.asarray(pts[nodes], dtype))

    def _placement(self):
        xh = jnp.concatenate([self.x, jnp.ones(self.x.shape[:1] + (1,), self.x.dtype)], axis=1)
        lam = jnp.einsum("pcij,pj->pci", self.inverse, xh)              # (P, C, d+1)
        best = jnp.argmax(jnp.min(lam, axis=-1), axis=1)                # (P,)
        take = lambda a: jnp.take_along_axis(a, best[:, None, None], axis=1)[:, 0]  # noqa: E731
        lb = jnp.clip(take(lam), 0.0, None)
        lb = lb / jnp.sum(lb, axis=-1, keepdims=True)
        nodes = jnp.take_along_axis(self.cell_nodes, best[:, None, None], axis=1)[:, 0]
        return nodes, lb, take(self.node_mass), jnp.take_along_axis(
            self.node_coords, best[:, None, None, None], axis=1)[:, 0]

    def placed(self):
        """(P, d) where the sites deliver: x itself inside the candidates, else its clipped projection."""
        _, lb, _, xs = self._placement()
        return jnp.einsum("pk,pkd->pd", lb, xs)

    def add(self, c, amount):
        nodes, lb, m, _ = self._placement()
        placed = eqx.tree_at(lambda s: (s.nodes, s.weights), self, (nodes, (lb / m).astype(c.dtype)))
        return PointSource.add(placed, c, amount)


class _Box(tuple):
    """(origin, spacing, shape) of a voxel grid, hashable (a static field); `containing` reads these."""

    origin = property(lambda self: self[0])
    spacing = property(lambda self: self[1])
    shape = property(lambda self: self[2])


class MovableGridSource(PointSource):
    """`MovableSource` on a voxel grid: sites at coordinates x (P, d), data of the model, with the
    trilinear weights of `PointSource.trilinear` (one rule, `geometry.discretise.trilinear_weights`)
    computed from x inside the program, so a simulation is differentiable in the site positions. A
    site moved out of the tissue gets NaN weights (it shows in the solution); design bounds keep it in."""

    x: jax.Array = None          # (P, d) mm
    tissue: jax.Array = None     # flat tissue mask, or None
    box: tuple = eqx.field(static=True, default=None)

    @classmethod
    def around(cls, disc, points, *, name: str = "source", dtype=None) -> "MovableGridSource":
        from paracrine.geometry import GridDiscretisation

        if not isinstance(disc, GridDiscretisation):
            raise TypeError(f"MovableGridSource needs a grid discretisation, got {type(disc).__name__}")
        ref = PointSource.trilinear(disc, points, name=name, dtype=dtype)
        g = disc.grid
        box = _Box((tuple(map(float, g.origin)), tuple(map(float, g.spacing)), tuple(map(int, g.shape))))
        tissue = None if disc.tissue.all() else jnp.asarray(disc.tissue.reshape(-1))
        dtype = dtype or jnp.result_type(float)
        return cls(name=name, nodes=ref.nodes, weights=ref.weights, x=jnp.atleast_2d(jnp.asarray(points, dtype)),
                   tissue=tissue, box=box)

    def _placement(self):
        x = self.x
        own, inside = containing(jax.lax.stop_gradient(x), self.box, xp=jnp)
        if self.tissue is not None:
            inside = inside & self.tissue[jnp.ravel_multi_index(tuple(own.T), self.box.shape, mode="clip")]
        flat, w = trilinear_weights(x, origin=self.box.origin, spacing=self.box.spacing, shape=self.box.shape,
                                    tissue=self.tissue, own=own, xp=jnp)
        w = jnp.where(inside[:, None], w, jnp.nan)
        return flat.astype(jnp.int32), w / float(np.prod(self.box.spacing))

    def placed(self):
        return self.x

    def add(self, c, amount):
        nodes, w = self._placement()
        return PointSource.add(eqx.tree_at(lambda s: (s.nodes, s.weights), self, (nodes, w.astype(c.dtype))), c, amount)


class FieldSource(AbstractSource):
    """Volumetric source with the spatial shape of a non-negative density field."""

    per_amount: jax.Array  # spatial shape: rho_i / sum_j m_j rho_j

    @classmethod
    def from_density(cls, disc, density, *, name: str = "field", dtype=None) -> "FieldSource":
        rho = np.asarray(density, float).reshape(disc.spatial_shape)
        if not np.all(np.isfinite(rho)) or (rho < 0).any():
            raise ValueError(f"field source {name!r}: density must be finite and >= 0 everywhere")
        mass = np.asarray(disc.mass).reshape(disc.spatial_shape)
        total = float((mass * rho).sum())
        if total <= 0:
            raise ValueError(f"field source {name!r}: density is zero over the whole tissue")
        dtype = dtype or jnp.result_type(float)
        return cls(name=name, per_amount=jnp.asarray(np.where(mass > 0, rho, 0.0) / total, dtype))

    def add(self, c, amount):
        return c + amount.reshape((-1,) + (1,) * (c.ndim - 1)) * self.per_amount[None]


class Source(eqx.Module):
    """A source as one object: where it is (`placement`, an AbstractSource: PointSource, FieldSource,
    MovableSource, ...) and when and how much it releases (`profile`, an AbstractProfile: Constant,
    CellSecretion, Bolus, ...). `Model(disc, sources=[Source(...), ...])` keeps the placements (the
    structure) and `model.params(...)` takes the profiles (the numbers) from them, so placement and
    profile are never paired by their positions in two lists."""

    placement: AbstractSource
    profile: object

    def __init__(self, placement, profile):
        from .profiles import AbstractProfile

        if not isinstance(placement, AbstractSource):
            raise TypeError(f"Source(placement, profile): placement must be an AbstractSource (PointSource, "
                            f"FieldSource, ...), got {type(placement).__name__}")
        if not isinstance(profile, AbstractProfile):
            raise TypeError(f"Source {placement.name!r}: profile must be an AbstractProfile (Constant, Exponential, "
                            f"PiecewiseLinear, CellSecretion, Bolus), got {type(profile).__name__}")
        self.placement, self.profile = placement, profile

    @property
    def name(self) -> str:
        return self.placement.name

