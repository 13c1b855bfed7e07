"""Geometry of paracrine: meshes and voxel grids, generators, I/O, host precompute.

Everything here is NumPy and runs once on the host; the solver sees arrays only.
"""

from .discretise import OPERATORS, GridDiscretisation, MeshDiscretisation, discretise, positive_conductances
from .errors import GeometryError
from .generators import box_grid, box_mesh, boundary_facets, halfspace, tensor_mesh
from .grid import Grid
from .images import EMIDEC, from_labels, read_labels
from .io import read, write
from .mesh import Mesh
from .summary import negative_couplings, plot_sections, summary
from .ventricle import SPECIES, TERRITORIES, LVShape, aha_segments, infarct_labels, lv_ellipsoid, lv_shape

__all__ = [
    "negative_couplings", "plot_sections", "summary",
    "OPERATORS", "positive_conductances",
    "EMIDEC", "from_labels", "read_labels",
    "LVShape", "SPECIES", "TERRITORIES", "aha_segments", "infarct_labels", "lv_ellipsoid", "lv_shape",
    "GeometryError", "Grid", "GridDiscretisation", "Mesh", "MeshDiscretisation", "boundary_facets",
    "box_grid", "box_mesh", "discretise", "halfspace", "read", "tensor_mesh", "write",
]
