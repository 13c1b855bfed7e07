import math

import pytest

from paracrine.solver import presets


def test_unit_conversions():
    # 1 ng/mL of a 45 kDa protein is 22.2 pM
    assert presets.molar_to_pg_per_mm3(22.222e-12, 45.0) == pytest.approx(1.0, rel=1e-4)
    # 4.2e5 /M/s for VEGF: x 1e-6 / 45000 g/mol; 1 pg/mm^3 = 22 pM gives kon c = 9.3e-6 /s
    assert presets.kon_per_molar_to_internal(4.2e5, 45.0) == pytest.approx(9.333e-6, rel=1e-3)


def test_presets_match_the_reference_table():
    v = presets.preset("VEGF165")
    assert v.D == pytest.approx(1.04e-4) and v.decay == pytest.approx(math.log(2) / (33.7 * 60))
    assert v.koff / v.kon == pytest.approx(1071.4, rel=1e-3)  # K_D = 24 nM in pg/mm^3
    assert v.capacity == pytest.approx(0.75e-6 * 45e3 * 1e6)
    sdf = presets.preset("SDF-1a")
    assert math.exp(-sdf.decay * 3600) == pytest.approx(1 / 3)  # 2/3 lost in one hour
    assert presets.preset("TSG-6").decay is None
    for p in presets.FACTORS.values():
        assert p.source and p.D > 0 and p.mw_kda > 0
    assert {n for n, p in presets.FACTORS.items() if p.estimate} == {"HGF", "SDF-1a", "FGF2", "TSG-6"}
    with pytest.raises(ValueError, match="no preset for factor 'PDGF'"):
        presets.preset("PDGF")
