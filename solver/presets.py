"""Literature values for the secreted factors, in internal units (mm, s, pg).

Each preset carries its source; `estimate=True` marks values with no measurement
(free-water diffusivities from molecular weight, or missing half-lives): treat
them as priors to fit, not as facts. Plasma half-lives include liver and kidney
clearance and so bound the tissue loss rate from above.

Units: 1e-6 cm^2/s = 1e-4 mm^2/s; 1 pg/mm^3 = 1 ng/mL = 1e-6 / MW[g/mol] mol/L.
"""

from __future__ import annotations

import dataclasses
import math

MIN, HOUR = 60.0, 3600.0


from .units import kon_per_molar_to_internal, molar_to_pg_per_mm3  # noqa: F401 - the project's one units module


@dataclasses.dataclass(frozen=True)
class FactorPreset:
    name: str
    mw_kda: float
    D: float                   # mm^2/s, free diffusivity in tissue
    half_life: float | None    # s, loss half-life (None: no data)
    source: str
    estimate: bool = False     # True where a value is not measured
    kon: float | None = None   # mm^3/(pg s), ECM (HSPG) binding
    koff: float | None = None  # 1/s
    capacity: float | None = None  # pg/mm^3 of ECM binding sites

    @property
    def decay(self) -> float | None:
        return None if self.half_life is None else math.log(2) / self.half_life


_HSPG_SITES = 0.75e-6  # M, interstitial ECM binding sites (Stefanini et al. 2008; Vempati et al. 2011)

FACTORS = {
    "VEGF165": FactorPreset(
        "VEGF165", 45.0, 1.04e-4, 33.7 * MIN,
        "D: Mac Gabhann, Ji & Popel 2006, PLoS Comput Biol 2:e127; t1/2: Eppler et al. 2002, Clin Pharmacol "
        "Ther 72:20 (human plasma); HSPG kon 4.2e5 /M/s, koff 1e-2 /s: BMC Syst Biol 2011, 5:170, Table 2; "
        "sites 0.75 uM: Stefanini et al. 2008",
        kon=kon_per_molar_to_internal(4.2e5, 45.0), koff=1e-2, capacity=molar_to_pg_per_mm3(_HSPG_SITES, 45.0)),
    "HGF": FactorPreset(
        "HGF", 84.0, 0.85e-4, 26.5 * MIN,
        "D: free-water estimate from MW (no measurement); t1/2 (beta phase): Uematsu et al. 1999, J Pharm Sci "
        "88:131 (rat plasma)", estimate=True),
    "IGF-1": FactorPreset(
        "IGF-1", 7.6, 1.59e-4, 14.4 * MIN,
        "D: Nauman et al. 2007, Biophys J 92:4444 (0.27 % fibrin gel); t1/2: Frystyk et al. (free IGF-I, human)"),
    "SDF-1a": FactorPreset(
        "SDF-1a", 8.0, 1.9e-4, 3600.0 * math.log(2) / math.log(3),
        "D: free-water estimate (no measurement); ~2/3 lost in 1 h with DPP4 or serum at 37 C: PLoS ONE 2015 "
        "(PMC4636157), in vitro", estimate=True),
    "FGF2": FactorPreset(
        "FGF2", 17.0, 1.45e-4, 7.6 * HOUR,
        "D: free-water estimate; 98 % of interstitial FGF2 is HSPG-bound (Filion & Popel 2005, Am J Physiol "
        "Heart 288:H263); terminal t1/2 7.6 h: Bush et al. 2001, J Clin Pharmacol 41:378", estimate=True),
    "TSG-6": FactorPreset(
        "TSG-6", 35.0, 1.1e-4, None,
        "D: free-water estimate (no measurement); half-life: no data, must be given or fitted", estimate=True),
}


def preset(name: str) -> FactorPreset:
    if name not in FACTORS:
        raise ValueError(f"no preset for factor {name!r}; presets: {sorted(FACTORS)}")
    return FACTORS[name]
