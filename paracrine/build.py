"""From a resolved scenario to the solver's objects: geometry, sites, Model and Params.

Point injection sites on the generated LV are chosen before meshing (on a fine voxel
lattice of the analytic shape, mid-wall for intramyocardial and sub-endocardial for
transendocardial delivery), so the mesh can be refined around them. Sites in regions
with a hypoxia multiplier other than 1 get their own source. Intracoronary and
intravenous delivery spread over the perfused tissue (not the core), of a territory
and its border zone or of the whole ventricle, as field sources.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from paracrine.solver.therapy import farthest_points, spread_sites

from .scenario import POINT_ROUTES, Scenario, ScenarioError

#: transmural band (0 endocardium, 1 epicardium) where point sites are placed, by route
SITE_BANDS = {"intramyocardial": (0.3, 0.7), "transendocardial": (0.1, 0.45)}


@dataclasses.dataclass
class Built:
    scenario: Scenario
    geometry: object           # geometry.Mesh | geometry.Grid
    disc: object
    model: object              # solver.Model
    params: object             # solver.Params
    sites: list                # per delivery: (P, 3) point sites or None
    cell_sources: list         # (profile index, sites multiplying the profile's cells)
    media_retention: list = dataclasses.field(default_factory=list)  # per Bolus profile, in order
    cell_dose_share: list = dataclasses.field(default_factory=list)  # per cell profile: dose per site / dose

    def cells(self, t) -> np.ndarray:
        """Retained living cells at times t (all injections)."""
        import jax

        t = np.atleast_1d(np.asarray(t, float))
        out = np.zeros_like(t)
        for k, n in self.cell_sources:
            out += n * np.asarray(jax.vmap(self.params.sources[k].cells)(t), float)
        return out


def _lv_kwargs(g: dict) -> dict:
    from paracrine import geometry

    return dict(species=geometry.LVShape(**g["shape"]), territory=g["territory"], transmural=g["transmural"],
                border_width=g["border_width"])


def _lv_sites(g: dict, spec: dict, route: str, path: str) -> np.ndarray:
    """Sites on the analytic LV: candidates on a voxel lattice, in the region and the route's band."""
    from paracrine import geometry

    shape = geometry.LVShape(**g["shape"])
    wall = shape.a_epi - shape.a_endo
    kw = _lv_kwargs(g)
    grid = geometry.lv_ellipsoid(kw.pop("species"), grid_spacing=wall / 10, **kw)
    x = grid.centres().reshape(-1, 3)
    lab = grid.labels.reshape(-1)
    want = grid.region_names[spec["region"]] if spec["region"] in grid.region_names else -1
    lo, hi = SITE_BANDS[route]
    t = np.full(len(x), -1.0)
    keep = lab == want
    t[keep] = shape.transmural(x[keep])
    cand = x[keep & (t >= lo) & (t <= hi)]
    if len(cand) < spec["n"]:
        raise ScenarioError(f"{path}.sites = {spec['n']}: the {spec['region']} region has room for only "
                            f"{len(cand)} sites at this resolution")
    return farthest_points(cand, spec["n"], spec["seed"])


def make_geometry(scenario: Scenario):
    """The geometry and the point sites of each delivery (None for field routes)."""
    from paracrine import geometry

    d = scenario.data
    g = d["geometry"]
    deliveries = [("injection", k, x) for k, x in enumerate(d["injections"])] + \
                 [("medium", k, x) for k, x in enumerate(d["media"])]
    sites: list = [None] * len(deliveries)
    if g["kind"] == "lv":
        for i, (what, k, x) in enumerate(deliveries):
            if x["route"] in POINT_ROUTES:
                s = x["sites"]
                sites[i] = (np.asarray(s["points"], float) if "points" in s
                            else _lv_sites(g, s, x["route"], f"{what}[{k}]"))
        kw = _lv_kwargs(g)
        pts = [s for s in sites if s is not None]
        refine = {}
        if g["refine"] and pts:
            refine = dict(refine_at=np.concatenate(pts), refine_size=g["refine"], refine_radius=g["refine_radius"])
        geom = geometry.lv_ellipsoid(kw.pop("species"), mesh_size=g["mesh_size"], grid_spacing=g["grid_spacing"],
                                     **kw, **refine)
    elif g["kind"] == "file":
        # a 3-D tetrahedral mesh, its coordinates in geometry.length_unit (scaled to mm)
        geom = geometry.read(g["path"], length_unit=g.get("length_unit", "mm"), dim=3, regions=g.get("regions"),
                             tags=g.get("tags"))
    else:
        geom = geometry.read_labels(g["path"], spacing=g["spacing"], border_width=g["border_width"])
    disc = geometry.discretise(geom)
    for i, (what, k, x) in enumerate(deliveries):
        if x["route"] in POINT_ROUTES and sites[i] is None:
            s = x["sites"]
            if "points" in s:
                sites[i] = np.asarray(s["points"], float)
            else:
                try:
                    sites[i] = spread_sites(disc, s["n"], region=s["region"], seed=s["seed"])
                except ValueError as err:
                    raise ScenarioError(f"{scenario.source}: {what}[{k}].sites: {err}") from None
        if sites[i] is not None:
            for j, p in enumerate(sites[i]):
                try:
                    disc.locate(p[None])
                except geometry.GeometryError:
                    raise ScenarioError(f"{scenario.source}: {what}[{k}].sites[{j}] = {p.tolist()} mm lies outside "
                                        "the tissue; allowed: points inside the myocardium") from None
    for name, p in scenario.data.get("probes", {}).items():
        try:
            disc.locate(np.asarray(p, float)[None])
        except geometry.GeometryError:
            raise ScenarioError(f"{scenario.source}: probes.{name} = {list(p)} mm lies outside the tissue; "
                                "allowed: points inside the myocardium") from None
    return geom, disc, sites


def _region_share(disc) -> np.ndarray:
    """(N, R) share of each node's (voxel's) control volume in each region."""
    if disc.kind == "mesh":
        return disc.mass_region / np.where(disc.mass > 0, disc.mass, 1.0)[:, None]
    idx = np.asarray(disc.region_index).reshape(-1)
    share = np.zeros((idx.size, len(disc.regions)))
    share[idx >= 0, idx[idx >= 0]] = 1.0
    return share


def region_volumes(disc, share=None) -> np.ndarray:
    """(N, R) volume (mm^3) of each node's (voxel's) control volume in each region: what region means,
    amounts and exposed volume shares are weighted by (share: `_region_share(disc)` when the caller
    has it already)."""
    share = _region_share(disc) if share is None else share
    return share * np.asarray(disc.mass, float).reshape(-1)[:, None]


def _perfused_density(disc, g: dict, territory, regions) -> np.ndarray:
    """Perfused tissue: the share of each node outside the core; with a territory, only in its AHA
    segments or in the border zone (which surrounds the core and shares its supply: with a
    transmural infarct it is all the territory has left)."""
    share = _region_share(disc)
    rho = 1.0 - (share[:, regions.index("core")] if "core" in regions else 0.0)
    if territory is not None:
        from paracrine import geometry

        shape = geometry.LVShape(**g["shape"])
        segs = geometry.TERRITORIES[territory] if isinstance(territory, str) else tuple(territory)
        inside = np.isin(geometry.aha_segments(np.asarray(disc.coordinates), shape), segs)
        border = share[:, regions.index("border")] > 0 if "border" in regions else False
        rho = rho * (inside | border)
    rho = np.where(np.asarray(disc.mass).reshape(-1) > 0, rho, 0.0)
    return rho


def _cell_survival_extras(scenario: Scenario, cells: dict, x: dict, path: str) -> dict:
    """CellSecretion's immune clearance (allogeneic cells) and retention-by-injection-time fields.

    Every allogeneic dose given after the first one of the scenario (a later dose of a `repeat`, or
    a later [[injection]]) meets a memory response: the repeat onset and half-life."""
    times = np.asarray(x["times"], float)
    out = {}
    if cells.get("donor", "autologous") == "allogeneic":
        first = min(min(inj["times"]) for inj in scenario.data["injections"])
        repeat = times > first
        out["immune_onset"] = np.where(repeat, cells["repeat_immune_onset"], cells["immune_onset"])
        out["immune_rate"] = math.log(2) / np.where(repeat, cells["repeat_immune_half_life"], cells["immune_half_life"])
    table = cells.get("retention_by_time")
    if table is not None:
        # the table's times are after the infarction; the profile's clock is the scenario's
        t_table = np.asarray(table["time"], float) - table["start_after_mi"]
        f_table = np.asarray(table["factor"], float)
        out["retention_time"], out["retention_factor"] = t_table, f_table
        effective = x["retention"] * np.interp(times, t_table, f_table)
        for k in np.flatnonzero(effective > 1.0):
            raise ScenarioError(f"{scenario.source}: {path}: dose {k + 1} at {times[k] / 86400.0:g} d has retention "
                                f"{x['retention']:g} x cells.retention_by_time factor "
                                f"{effective[k] / x['retention']:g} = {effective[k]:g} > 1; allowed: a retained "
                                "fraction <= 1 (lower the factor or the route's retention)")
    return out


def build(scenario: Scenario, *, dtype=None, geometry_and_sites=None) -> Built:
    """Geometry (or the given (geometry, disc, sites)), Model and Params for a scenario."""
    from paracrine import solver

    d = scenario.data
    geom, disc, sites = geometry_and_sites or make_geometry(scenario)
    if tuple(disc.regions) != scenario.regions:
        raise ScenarioError(f"{scenario.source}: the geometry has regions {list(disc.regions)}, the scenario was "
                            f"resolved for {list(scenario.regions)}")
    regions, factors = list(disc.regions), list(d["factors"])
    F = d["factors"]
    cells = d["cells"]
    hyp = np.array([cells["hypoxia"][r] for r in regions]) if cells else np.ones(len(regions))
    share = _region_share(disc)
    sources, profiles, cell_sources, media_retention, cell_dose_share = [], [], [], [], []
    deliveries = [("injection", x) for x in d["injections"]] + [("medium", x) for x in d["media"]]
    for i, ((what, x), pts) in enumerate(zip(deliveries, sites)):
        name = f"{what}{sum(1 for w, _ in deliveries[:i] if w == what) + 1}"
        groups = []  # (placement, multiplier, n_sites)
        if pts is not None:
            # sites spread over a region belong to it (on a coarse mesh a thin band's cells may not
            # contain them); explicit coordinates take the region of the cell containing them
            spec = x["sites"]
            site_region = (np.full(len(pts), regions.index(spec["region"])) if "n" in spec else disc.region_of(pts))
            mult = hyp[site_region]
            for m in np.unique(mult):
                sel = pts[mult == m]
                suffix = "" if len(np.unique(mult)) == 1 else f"-x{m:g}"
                groups.append((solver.point_source(disc, sel, name=name + suffix), float(m), len(sel)))
        else:
            rho = _perfused_density(disc, d["geometry"], x.get("territory"), regions)
            if not np.any(rho > 0):
                raise ScenarioError(f"{scenario.source}: {what} {name}: no perfused tissue in territory "
                                    f"{x.get('territory')!r}")
            node_mult = share @ hyp
            mass = np.asarray(disc.mass).reshape(-1)
            mean_mult = float((mass * rho * node_mult).sum() / (mass * rho).sum())
            density = (rho * node_mult).reshape(disc.spatial_shape)
            groups.append((solver.field_source(disc, density, name=name), mean_mult, 1))
        n_total = sum(n for _, _, n in groups)
        for src, mult, n in groups:
            sources.append(src)
            share_of_dose = 1.0 / n_total  # a point profile's rate applies to each of its sites
            if what == "injection":
                J = len(x["times"])
                cell_sources.append((len(profiles), n))
                cell_dose_share.append(share_of_dose)
                profiles.append(solver.CellSecretion(
                    dose=np.full(J, x["dose"] * share_of_dose), time=np.asarray(x["times"]),
                    retention=np.full(J, x["retention"]),
                    secretion=np.array([cells["secretion"][f] for f in factors]),
                    fast_fraction=cells["fast_fraction"], k_fast=math.log(2) / cells["fast_half_life"],
                    k_slow=math.log(2) / cells["slow_half_life"], multiplier=mult,
                    **_cell_survival_extras(scenario, cells, x, f"injection[{i}]")))
            else:
                amount = np.array([x["amount"][f] for f in factors]) * x["retention"] * share_of_dose
                # scale: (volume, concentration) multipliers, 1 as written (design controls change them)
                profiles.append(solver.Bolus(amount=amount, time=np.asarray(x["times"]), duration=x["duration"],
                                             scale=np.ones(2)))
                media_retention.append(x["retention"])
    model = solver.Model(disc, factors=factors, sources=sources, operator=d["geometry"].get("operator", "p1"),
                         dtype=dtype)
    per_region = lambda key: np.array([[F[f][key][r] for r in regions] for f in factors])  # noqa: E731
    kw = dict(D=per_region("D"), decay=np.array([F[f]["decay"] for f in factors]), uptake=per_region("uptake"),
              clearance=per_region("clearance"), sources=profiles)
    if any(F[f]["robin"] for f in factors):
        kw["robin"] = {b: np.array([(F[f]["robin"] or {}).get(b, 0.0) for f in factors]) for b in model.boundaries}
    if any(F[f]["saturable"] for f in factors):
        kw["saturable"] = {"Vmax": np.array([[(F[f]["saturable"] or {"Vmax": {}})["Vmax"].get(r, 0.0) for r in regions]
                                             for f in factors]),
                           "Km": np.array([(F[f]["saturable"] or {"Km": 1.0})["Km"] for f in factors])}
    if any(F[f].get("hill") for f in factors):
        none = {"Vmax": {}, "K": 1.0, "n": 1.0}
        h = [F[f].get("hill") or none for f in factors]
        kw["hill"] = {"Vmax": np.array([[x["Vmax"].get(r, 0.0) for r in regions] for x in h]),
                      "K": np.array([x["K"] for x in h]), "n": np.array([x["n"] for x in h])}
    if any(F[f]["binding"] for f in factors):
        none = {"kon": 0.0, "koff": 0.0, "capacity": {}, "kdeg": 0.0}
        b = [F[f]["binding"] or none for f in factors]
        kw["binding"] = {"kon": np.array([x["kon"] for x in b]), "koff": np.array([x["koff"] for x in b]),
                         "capacity": np.array([[x["capacity"].get(r, 0.0) for r in regions] for x in b]),
                         "kdeg": np.array([x["kdeg"] for x in b])}
    params = model.params(**kw)
    if dtype is not None:
        params = _cast(params, dtype)
    model.check(params)
    return Built(scenario, geom, disc, model, params, sites, cell_sources, media_retention, cell_dose_share)


def _cast(tree, dtype):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda x: x.astype(dtype) if isinstance(x, jnp.ndarray) and jnp.issubdtype(x.dtype, jnp.floating)
                        else x, tree)
