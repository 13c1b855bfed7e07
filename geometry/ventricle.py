"""The truncated-ellipsoid left ventricle, AHA 17-segment labels and infarct zones.

Reference shape: the LV of the Land et al. 2015 benchmark (Proc R Soc A
471:20150641): endocardium with short/long radii 7/17 mm, epicardium 10/20 mm,
truncated at the base plane z = +5 mm; the long axis is z, the apex at -z.
Species are the reference scaled to a cavity radius, with the wall thickness
added to both radii (the reference itself has a 3 mm wall).

AHA convention (Cerqueira et al. 2002, Circulation 105:539) in this frame:
viewed from the base, anterior is +y, septal -x, inferior -y, lateral +x.
Basal (1-6) and mid (7-12) rings: 60 degree sectors centred on anterior (90
deg), anteroseptal (150), inferoseptal (210), inferior (270), inferolateral
(330), anterolateral (30). Apical ring (13-16): 90 degree sectors centred on
anterior, septal, inferior, lateral. Segment 17 (apex) is the tissue beyond
the tip of the cavity (z < -c_endo). The rings split [-c_endo, base] in thirds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from .errors import GeometryError
from .grid import Grid
from .mesh import Mesh

TERRITORIES = {
    "LAD": (7, 8, 13, 14, 17),
    "LAD+": (1, 2, 7, 8, 13, 14, 17),
    "RCA": (3, 4, 9, 10, 15),
    "LCx": (5, 6, 11, 12, 16),
}

REGIONS = {"remote": 1, "border": 2, "core": 3}


@dataclasses.dataclass(frozen=True)
class LVShape:
    """Radii in mm: endocardium (a_endo short, c_endo long), epicardium (a_epi, c_epi); base plane z = base."""

    a_endo: float
    c_endo: float
    a_epi: float
    c_epi: float
    base: float

    def __post_init__(self):
        vals = dataclasses.asdict(self)
        for k, v in vals.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise GeometryError(f"LV shape {k} = {v!r}; allowed: a finite number (mm)")
        if not (0 < self.a_endo < self.a_epi and 0 < self.c_endo < self.c_epi):
            raise GeometryError(f"LV shape needs 0 < endocardial < epicardial radii, got {vals}")
        if not (-self.c_endo < self.base < self.c_endo):
            raise GeometryError(f"LV base plane z = {self.base} must cut the cavity (|base| < c_endo = {self.c_endo})")

    @classmethod
    def scaled(cls, cavity_radius: float, wall: float) -> "LVShape":
        """The reference shape with endocardial short radius `cavity_radius` and wall thickness `wall`."""
        k = cavity_radius / 7.0
        return cls(a_endo=7 * k, c_endo=17 * k, a_epi=7 * k + wall, c_epi=17 * k + wall, base=5 * k)

    def volume(self) -> float:
        """Analytic wall volume (mm^3): V(a, c) = pi a^2 [(h + c) - (h^3 + c^3) / (3 c^2)] epi minus endo."""
        def v(a, c):
            h = self.base
            return math.pi * a * a * ((h + c) - (h ** 3 + c ** 3) / (3 * c * c))
        return v(self.a_epi, self.c_epi) - v(self.a_endo, self.c_endo)

    def cavity_volume(self) -> float:
        h, a, c = self.base, self.a_endo, self.c_endo
        return math.pi * a * a * ((h + c) - (h ** 3 + c ** 3) / (3 * c * c))

    def transmural(self, x: np.ndarray) -> np.ndarray:
        """Transmural coordinate t in [0, 1] (0 endocardium, 1 epicardium) of points x (..., 3):
        the ellipsoid with radii interpolated linearly in t that passes through x (bisection)."""
        x = np.asarray(x, float)
        rho2, z2 = x[..., 0] ** 2 + x[..., 1] ** 2, x[..., 2] ** 2
        lo, hi = np.zeros(rho2.shape), np.ones(rho2.shape)
        for _ in range(48):
            t = 0.5 * (lo + hi)
            a = self.a_endo + t * (self.a_epi - self.a_endo)
            c = self.c_endo + t * (self.c_epi - self.c_endo)
            outside = rho2 / a ** 2 + z2 / c ** 2 > 1
            lo, hi = np.where(outside, t, lo), np.where(outside, hi, t)
        return 0.5 * (lo + hi)


#: Cavity radius (LVIDd / 2) and wall thickness in mm. rat: Burrell et al. 1996 (LVIDd 5.9 mm sham,
#: wall ~1.5 mm); mouse: endocardial length 7.4 mm (Vinhas et al. 2013) with the reference aspect ratio,
#: wall 0.9 mm an estimate; pig: LVEDD 48 mm (Galbas et al. 2024), wall 10 mm an estimate; human:
#: LVEDD 50 mm and wall 8 mm, mid-range of Lang et al. 2015.
SPECIES = {
    "reference": LVShape(7.0, 17.0, 10.0, 20.0, 5.0),
    "mouse": LVShape.scaled(7.4 * 7 / 22, 0.9),
    "rat": LVShape.scaled(5.9 / 2, 1.5),
    "pig": LVShape.scaled(48.0 / 2, 10.0),
    "human": LVShape.scaled(50.0 / 2, 8.0),
}


def lv_shape(species: str | LVShape = "reference") -> LVShape:
    if isinstance(species, LVShape):
        return species
    if species not in SPECIES:
        raise GeometryError(f"unknown species {species!r}; allowed: {sorted(SPECIES)} or an LVShape")
    return SPECIES[species]


def aha_segments(x: np.ndarray, shape: LVShape) -> np.ndarray:
    """AHA segment (1-17) of points x (..., 3) in the frame of the module docstring."""
    x = np.asarray(x, float)
    z = x[..., 2]
    theta = np.degrees(np.arctan2(x[..., 1], x[..., 0])) % 360.0
    frac = (shape.base - z) / (shape.base + shape.c_endo)  # 0 at the base, 1 at the cavity tip
    ring = np.clip(np.floor(frac * 3), 0, 2).astype(int)
    six = (np.floor(((theta - 60.0) % 360.0) / 60.0).astype(int)) % 6          # sector centred on 90 deg -> 0
    four = np.array([3, 0, 1, 2])[(np.floor(((theta + 45.0) % 360.0) / 90.0).astype(int)) % 4]
    seg = np.where(ring == 0, 1 + six, np.where(ring == 1, 7 + six, 13 + four))
    return np.where(z < -shape.c_endo, 17, seg)


def _territory(territory) -> tuple:
    if isinstance(territory, str):
        if territory not in TERRITORIES:
            raise GeometryError(f"unknown coronary territory {territory!r}; allowed: {sorted(TERRITORIES)} "
                                "or a list of AHA segments 1-17")
        return TERRITORIES[territory]
    segs = tuple(int(s) for s in territory)
    bad = [s for s in segs if not 1 <= s <= 17]
    if bad or not segs:
        raise GeometryError(f"infarct segments {list(territory)}; allowed: a non-empty list of AHA segments 1-17")
    return segs


def infarct_labels(x: np.ndarray, shape: LVShape, *, territory="LAD", transmural: float = 1.0,
                   border_width: float = 1.0, mask: Callable | np.ndarray | None = None) -> np.ndarray:
    """Region labels (1 remote, 2 border, 3 core) of points x (n, 3) (cell centroids or voxel centres).

    Core: the points of the territory's AHA segments whose transmural coordinate is
    <= `transmural` (extent from the endocardium), or of a user `mask` (boolean array or
    predicate). Border zone: the other points within `border_width` mm of the core.
    """
    from scipy.spatial import cKDTree

    if not (0 < transmural <= 1):
        raise GeometryError(f"transmural extent {transmural}; allowed: a fraction of the wall in (0, 1]")
    if not (border_width >= 0 and math.isfinite(border_width)):
        raise GeometryError(f"border_width {border_width}; allowed: a finite distance >= 0 (mm)")
    if mask is not None:
        core = np.asarray(mask(x) if callable(mask) else mask, bool)
        if core.shape != x.shape[:1]:
            raise GeometryError(f"infarct mask has shape {core.shape}; expected ({len(x)},)")
    else:
        core = np.isin(aha_segments(x, shape), _territory(territory)) & (shape.transmural(x) <= transmural)
    if not core.any():
        raise GeometryError("the infarct is empty: no cell lies in the given territory/extent")
    labels = np.full(len(x), REGIONS["remote"])
    labels[core] = REGIONS["core"]
    if border_width > 0:
        # within border_width, the bound included (the query excludes it)
        dist, _ = cKDTree(x[core]).query(x[~core], distance_upper_bound=np.nextafter(border_width, np.inf))
        rest = np.flatnonzero(~core)
        labels[rest[np.isfinite(dist)]] = REGIONS["border"]
    return labels


def _gmsh_lv(shape: LVShape, size: float, refine_at, refine_size, refine_radius):
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("lv")
        occ = gmsh.model.occ
        outer = occ.addSphere(0, 0, 0, 1)
        occ.dilate([(3, outer)], 0, 0, 0, shape.a_epi, shape.a_epi, shape.c_epi)
        inner = occ.addSphere(0, 0, 0, 1)
        occ.dilate([(3, inner)], 0, 0, 0, shape.a_endo, shape.a_endo, shape.c_endo)
        wall, _ = occ.cut([(3, outer)], [(3, inner)])
        L = 4 * shape.c_epi
        box = occ.addBox(-L, -L, shape.base, 2 * L, 2 * L, L)
        lv, _ = occ.cut(wall, [(3, box)])
        occ.synchronize()
        gmsh.option.setNumber("Mesh.MeshSizeMax", size)
        gmsh.option.setNumber("Mesh.MeshSizeMin", min(size, refine_size or size))
        if refine_at is not None and len(refine_at):
            field = gmsh.model.mesh.field
            pts = [occ.addPoint(*p) for p in np.asarray(refine_at, float)]
            occ.synchronize()
            dist = field.add("Distance")
            field.setNumbers(dist, "PointsList", pts)
            thr = field.add("Threshold")
            field.setNumber(thr, "InField", dist)
            field.setNumber(thr, "SizeMin", refine_size)
            field.setNumber(thr, "SizeMax", size)
            field.setNumber(thr, "DistMin", refine_radius)
            field.setNumber(thr, "DistMax", refine_radius + 4 * size)
            field.setAsBackgroundMesh(thr)
            gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)
            gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
            gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
        gmsh.option.setNumber("Mesh.OptimizeNetgen", 1)  # removes slivers (worst aspect ratio 22 -> ~4)
        gmsh.model.mesh.generate(3)
        tags, xyz, _ = gmsh.model.mesh.getNodes()
        _, _, conn = gmsh.model.mesh.getElements(3)
        tet = np.asarray(conn[0], np.int64).reshape(-1, 4)
        # keep the nodes the tetrahedra use (refinement points are geometry-only nodes)
        used = np.unique(tet)
        pos = np.zeros(int(tags.max()) + 1, np.int64)
        pos[tags.astype(np.int64)] = np.arange(len(tags))
        points = xyz.reshape(-1, 3)[pos[used]]
        index = np.full(int(tags.max()) + 1, -1, np.int64)
        index[used] = np.arange(len(used))
        cells = index[tet]
        facets, ftags = [], []
        names = {"endo": 1, "epi": 2, "base": 3}
        for _, surf in gmsh.model.getEntities(2):
            _, _, fconn = gmsh.model.mesh.getElements(2, surf)
            tri = index[np.asarray(fconn[0], np.int64).reshape(-1, 3)]
            p = points[np.unique(tri)]
            if np.allclose(p[:, 2], shape.base, atol=1e-6 * shape.c_epi):
                tag = names["base"]
            else:
                q = (p[:, 0] ** 2 + p[:, 1] ** 2) / shape.a_endo ** 2 + p[:, 2] ** 2 / shape.c_endo ** 2
                tag = names["endo"] if np.median(np.abs(q - 1)) < 0.05 else names["epi"]
            facets.append(tri)
            ftags.append(np.full(len(tri), tag))
    finally:
        gmsh.finalize()
    return points, cells, np.concatenate(facets), np.concatenate(ftags), names


def lv_ellipsoid(species: str | LVShape = "reference", *, mesh_size: float | None = None,
                 grid_spacing: float | None = None, territory="LAD", transmural: float = 1.0,
                 border_width: float | None = None, infarct_mask=None,
                 refine_at: Sequence | None = None, refine_size: float | None = None,
                 refine_radius: float | None = None) -> Mesh | Grid:
    """A truncated-ellipsoid LV with regions remote / border / core.

    mesh_size: tetrahedral mesh through gmsh with this edge length (mm), boundaries
    endo, epi, base; refine_at: points (e.g. injection sites) around which the size
    falls to refine_size within refine_radius. grid_spacing: a voxel Grid instead.
    territory: "LAD" (segments 7, 8, 13, 14, 17), "LAD+" (also 1, 2), "RCA", "LCx"
    or a list of AHA segments; transmural: extent of the core from the endocardium
    (fraction of the wall); border_width: the border-zone band around the core (mm,
    default a third of the wall); infarct_mask: a predicate on points replacing the
    territory. territory=None gives a healthy ventricle (region remote only).
    """
    shape = lv_shape(species)
    wall = shape.a_epi - shape.a_endo
    if (mesh_size is None) == (grid_spacing is None):
        raise GeometryError("give exactly one of mesh_size (tetrahedra) or grid_spacing (voxels), in mm")
    default_width = border_width is None
    border_width = wall / 3 if border_width is None else border_width
    h = mesh_size if mesh_size is not None else grid_spacing
    if not (h > 0 and math.isfinite(h)):
        raise GeometryError(f"mesh size / grid spacing {h}; allowed: a finite length > 0 (mm)")
    if refine_at is not None:
        refine_at = np.atleast_2d(np.asarray(refine_at, float))
        if refine_at.shape[1] != 3 or refine_size is None or not (0 < refine_size <= h):
            raise GeometryError("refine_at needs points (n, 3) and 0 < refine_size <= mesh_size (mm)")
        refine_radius = refine_size * 4 if refine_radius is None else refine_radius

    def label(x):
        if territory is None and infarct_mask is None:
            return np.full(len(x), REGIONS["remote"]), {"remote": 1}
        lab = infarct_labels(x, shape, territory=territory, transmural=transmural, border_width=border_width,
                             mask=infarct_mask)
        return lab, {k: v for k, v in REGIONS.items() if (lab == v).any()}

    if grid_spacing is not None:
        if territory is not None or infarct_mask is not None:   # a band narrower than a voxel would be empty
            from .validate import border_band

            border_band(h, border_width, spacing_key="grid_spacing", default=default_width)
        lo = np.array([-shape.a_epi, -shape.a_epi, -shape.c_epi])
        n = np.ceil((np.array([shape.a_epi, shape.a_epi, shape.base]) - lo) / h).astype(int)
        axes = [lo[a] + h * (np.arange(n[a]) + 0.5) for a in range(3)]
        x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        q_epi = (x[..., 0] ** 2 + x[..., 1] ** 2) / shape.a_epi ** 2 + x[..., 2] ** 2 / shape.c_epi ** 2
        q_endo = (x[..., 0] ** 2 + x[..., 1] ** 2) / shape.a_endo ** 2 + x[..., 2] ** 2 / shape.c_endo ** 2
        tissue = (q_epi <= 1) & (q_endo > 1) & (x[..., 2] <= shape.base)
        labels = np.zeros(x.shape[:3], np.int64)
        lab, names = label(x[tissue])
        labels[tissue] = lab
        return Grid(labels, h, lo + h / 2, names)
    points, cells, facets, ftags, bnames = _gmsh_lv(shape, h, refine_at, refine_size, refine_radius)
    lab, names = label(points[cells].mean(axis=1))
    return Mesh(points, cells, lab, names, facets, ftags, bnames)
