"""The literature validation cases in examples/validation/ at their quick sizes: each reproduces the
number its README row states (from the full size) to the tolerance given there."""

import importlib.util
import math
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1] / "examples" / "validation"


def load(name):
    spec = importlib.util.spec_from_file_location(f"validation_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_francis_palsson_one_cell_sets_up_its_field_over_250_um_in_about_11_minutes():
    case = load("francis_palsson_1997")
    out = case.compute(quick=True)
    # the exact Green's function: 11.45 min at D = 1e-6 cm^2/s, twice that at half D
    assert out["t50_250um_exact_min"] == pytest.approx(11.45, abs=0.01)
    assert out["t50_250um_halfD_exact_min"] == pytest.approx(2 * out["t50_250um_exact_min"], rel=1e-6)
    # the solver on a 25 um octant mesh: within 4 % of the exact time (full size, 10 um: README)
    assert out["t50_250um_min"] == pytest.approx(out["t50_250um_exact_min"], rel=0.04)
    assert out["field_error_vs_exact"] < 0.04
    assert out["t50_250um_uptake_min"] == pytest.approx(out["t50_250um_uptake_exact_min"], rel=0.04)
    assert out["final_error_uptake"] < 0.02
    # closed forms: one MSC's VEGF reaches 31 pg/mL only within 0.36 um; 10 pM at 125 um needs 946 /s
    assert out["msc_vegf_range_um"] == pytest.approx(0.3645, rel=1e-3)
    assert out["secretion_for_10pM_at_125um_molecules_per_s"] == pytest.approx(946, rel=1e-3)


def test_filion_popel_98_percent_bound_slows_transport_and_lengthens_retention_50_fold():
    case = load("filion_popel_2005")
    out = case.compute(quick=True)
    assert out["kon_times_capacity_per_s"] == pytest.approx(0.315, rel=1e-3)   # the stiff regime, 60 s steps
    assert out["bound_fraction_equilibrated"] == pytest.approx(0.98, abs=1e-4)
    assert out["bound_fraction_1h"] == pytest.approx(0.98, abs=1e-4)
    assert out["D_eff_over_D"] == pytest.approx(1 / 50, rel=0.01)
    assert out["retention_half_life_h"] == pytest.approx(out["retention_half_life_exact_h"], rel=1e-3)
    assert out["retention_half_life_h"] == pytest.approx(out["retention_half_life_fast_binding_h"], rel=0.01)
    assert out["retention_half_life_h"] > 40 * out["free_half_life_h"]


def test_le_a_25_fold_clearance_rise_cuts_the_penetration_depth_5_fold_in_a_thick_wall():
    case = load("le_2009")
    out = case.compute(quick=True)
    assert out["wide_depth_before_mm"] == pytest.approx(0.5, rel=0.01)
    assert out["wide_ratio"] == pytest.approx(5.0, rel=0.01)
    assert out["wide_multiplier_for_5fold"] == pytest.approx(25.0, rel=0.01)
    assert out["rat_wall_ratio"] == pytest.approx(out["rat_wall_ratio_exact"], rel=0.01)
    # a narrow patch: lateral spread shortens the depth before treatment, so 25-fold is not enough
    assert out["narrow_depth_before_mm"] < 0.85 * out["wide_depth_before_mm"]
    assert out["narrow_multiplier_for_5fold"] > 35
    assert math.isfinite(out["narrow_ratio"]) and out["narrow_ratio"] < 4.2
