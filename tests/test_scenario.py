"""Scenario files: units, resolution to internal units, and one test per validation error."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

from paracrine import scenario as sc
from paracrine.units import ScenarioError, parse

ROOT = Path(__file__).resolve().parents[1]

BASE = """
title = "test"
[geometry]
species = "rat"
mesh_size = "0.7 mm"
[time]
end = "12 h"
dt = "120 s"
[output]
interval = "1 h"
fields = "3 h"
[factors.VEGF]
preset = "VEGF165"
uptake = { border = "1e-3 1/s" }
threshold = "31 pg/mL"
[cells]
secretion = { VEGF = "1203 pg / (1e6 cell * 48 h)" }
[[injection]]
dose = "1e6 cells"
sites = 3
"""


def load(text=BASE, **kw):
    return sc.loads(text, source="s.toml", **kw)


def edit(old, new, text=BASE):
    assert old in text
    return text.replace(old, new)


# ---- units -------------------------------------------------------------------------------------------------

def test_units_convert_to_internal():
    assert parse("1.04e-6 cm^2/s", "diffusivity", "k") == pytest.approx(1.04e-4)
    assert parse("33.7 min", "time", "k") == pytest.approx(2022.0)
    assert parse("7 d", "time", "k") == 604800.0
    assert parse("50 uL", "volume", "k") == pytest.approx(50.0)
    assert parse("4 ng/mL", "concentration", "k") == pytest.approx(4.0)
    assert parse("31 pg/mL", "concentration", "k") == pytest.approx(0.031)
    assert parse("2e6", "cells", "k") == 2e6 and parse("2e6 cells", "cells", "k") == 2e6
    assert parse("1 nM", "concentration", "k", mw_kda=45.0) == pytest.approx(45.0)  # 1 nM x 45 kg/mol = 45 ng/mL
    # 1 molecule/cell/s of a 45 kDa protein = 45e3 g/mol / N_A g/s
    assert parse("1 molecule/cell/s", "secretion", "k", mw_kda=45.0) == pytest.approx(45e3 / 6.02214076e23 * 1e12)
    assert parse("4.2e5 1/M/s", "kon", "k", mw_kda=45.0) == pytest.approx(4.2e5 * 1e-6 / 45e3)
    assert parse(0, "rate", "k") == 0.0  # zero needs no unit


def test_default_scenario_resolves_to_internal_units():
    s = sc.default()
    d = s.data
    assert d["time"]["end"] == 7 * 86400.0
    assert d["factors"]["VEGF"]["D"]["border"] == pytest.approx(1.04e-4)
    assert d["factors"]["VEGF"]["decay"] == pytest.approx(math.log(2) / (33.7 * 60))
    assert d["factors"]["VEGF"]["threshold"] == pytest.approx(0.031)
    assert d["cells"]["secretion"]["VEGF"] == pytest.approx(1203 / 1e6 / (48 * 3600))
    inj = d["injections"][0]
    assert inj["dose"] == 1e6 and inj["sites"]["n"] == 3 and inj["retention"] == pytest.approx(0.136)
    assert "Bonios" in inj["retention_source"]


def test_examples_default_equals_builtin():
    assert (ROOT / "examples" / "default.toml").read_text() == sc.default_text()


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_examples_validate(path):
    s = sc.load(path)
    assert s.data["factors"] and (s.data["injections"] or s.data["media"])


def test_repeat_and_medium_resolution():
    text = BASE + """
[[medium]]
time = "1 h"
volume = "50 uL"
concentration = { VEGF = "4 ng/mL" }
sites = 2
repeat = { count = 3, every = "2 h" }
[[medium]]
route = "intracoronary"
rate = "10 uL/min"
duration = "30 min"
concentration = { VEGF = "0.1 nM" }
"""
    d = load(text).data
    m0, m1 = d["media"]
    assert m0["times"] == [3600.0, 3 * 3600.0, 5 * 3600.0] and m0["amount"]["VEGF"] == pytest.approx(200.0)
    assert m1["amount"]["VEGF"] == pytest.approx(300.0 * 0.1 * 45.0) and m1["duration"] == 1800.0
    assert m1["territory"] == "LAD" and m1["retention"] == pytest.approx(0.154)


# ---- one test per validation error ------------------------------------------------------------------------

ERRORS = {
    "toml syntax": ("[time\nend = 1", r"s\.toml: not valid TOML"),
    "unknown top key": (BASE + "\n[outptu]\n", r"s\.toml: outptu: unknown key; did you mean 'output'\?"),
    "unknown nested key": (edit('threshold = "31 pg/mL"', 'treshold = "31 pg/mL"'),
                           r"factors\.VEGF\.treshold: unknown key; did you mean 'threshold'\?"),
    "missing section": (edit('[time]\nend = "12 h"\ndt = "120 s"\n', ""), r"s\.toml: time: missing \(required\)"),
    "wrong dimension": (edit('end = "12 h"', 'end = "12 kg"'),
                        r"time\.end = '12 kg' has dimension \[mass\]; allowed: a time"),
    "unreadable quantity": (edit('end = "12 h"', 'end = "twelve hours"'), r"time\.end = 'twelve hours' is not a quantity"),
    "negative value": (edit('uptake = { border = "1e-3 1/s" }', 'uptake = { border = "-1e-3 1/s" }'),
                       r"factors\.VEGF\.uptake\.border = '-1e-3 1/s'; allowed: >= 0"),
    "non-finite value": (edit('dose = "1e6 cells"', 'dose = "inf cells"'), r"injection\[0\]\.dose = 'inf cells' is not finite"),
    "unknown region": (edit('uptake = { border = "1e-3 1/s" }', 'uptake = { boarder = "1e-3 1/s" }'),
                       r"factors\.VEGF\.uptake\.boarder: unknown region; did you mean 'border'\? allowed: \['remote', 'border', 'core'\]"),
    "unknown factor": (edit('secretion = { VEGF', 'secretion = { VEFG'),
                       r"cells\.secretion\.VEFG: unknown factor; did you mean 'VEGF'\?"),
    "unknown preset": (edit('preset = "VEGF165"', 'preset = "VEGF121"'), r"factors\.VEGF\.preset = 'VEGF121'.* allowed: \["),
    "unknown route": (edit('sites = 3', 'sites = 3\nroute = "intramuscular"'),
                      r"injection\[0\]\.route = 'intramuscular'; did you mean 'intramyocardial'\?"),
    "time past end": (edit('dose = "1e6 cells"', 'dose = "1e6 cells"\ntime = "13 h"'),
                      r"injection\[0\]\.time: dose 1 at 0.541667 d is not before time\.end"),
    "repeat past end": (edit('dose = "1e6 cells"', 'dose = "1e6 cells"\nrepeat = { count = 3, every = "6 h" }'),
                        r"injection\[0\]\.repeat: dose 3 at 0\.5 d is not before time\.end"),
    "map past end": (edit('fields = "3 h"', 'fields = "3 h"\nmaps = ["1 d"]'), r"output\.maps\[0\] = '1 d' is past time\.end"),
    "fraction above one": (edit('sites = 3', 'sites = 3\nretention = 1.5'), r"injection\[0\]\.retention = 1\.5; allowed: >= 0 and <= 1"),
    "no source": (BASE.split("[cells]")[0], r"injection: the scenario has no source"),
    "injection without cells": (edit('[cells]\nsecretion = { VEGF = "1203 pg / (1e6 cell * 48 h)" }\n', ""),
                                r"cells: missing; \[\[injection\]\] needs a \[cells\] table"),
    "half-life and decay": (edit('preset = "VEGF165"', 'preset = "VEGF165"\nhalf_life = "1 h"\ndecay = "1e-3 1/s"'),
                            r"factors\.VEGF\.decay: give half_life or decay, not both"),
    "preset without half-life": (edit('preset = "VEGF165"', 'preset = "TSG-6"'),
                                 r"factors\.VEGF\.half_life: missing; the TSG-6 preset has no half-life"),
    "molar without mw": (edit('preset = "VEGF165"', 'D = "1e-6 cm^2/s"\nhalf_life = "1 h"').replace(
        'threshold = "31 pg/mL"', 'threshold = "1 pM"'), r"factors\.VEGF\.threshold = '1 pM' is molar; give the factor's molecular weight"),
    "unknown boundary": (edit('threshold = "31 pg/mL"', 'threshold = "31 pg/mL"\nrobin = { endocardium = "1e-4 mm/s" }'),
                         r"factors\.VEGF\.robin\.endocardium: unknown boundary.* allowed: \['endo', 'epi', 'base'\]"),
    "mesh too coarse": (edit('mesh_size = "0.7 mm"', 'mesh_size = "2 mm"'), r"geometry\.mesh_size = 2 mm is thicker than the wall"),
    "missing geometry file": (edit('species = "rat"\nmesh_size = "0.7 mm"', 'file = "nowhere.msh"'),
                              r"geometry\.file = 'nowhere\.msh': no such file"),
    "sites list malformed": (edit('sites = 3', 'sites = [[1.0, 2.0]]'), r"injection\[0\]\.sites\[0\] = \[1\.0, 2\.0\]; allowed: \[x, y, z\]"),
    "sites for field route": (edit('sites = 3', 'sites = 3\nroute = "intravenous"'),
                              r"injection\[0\]\.sites: not used by the intravenous route"),
    "bad method": (edit('dt = "120 s"', 'dt = "120 s"\nmethod = "rk4"'), r"time\.method = 'rk4'.* allowed: \['trbdf2', 'rkl2', 'cn', 'euler'\]"),
    "medium without amount": (edit('[[injection]]\ndose = "1e6 cells"\nsites = 3\n', '[[medium]]\nvolume = "50 uL"\n'),
                              r"medium\[0\]\.volume: give amount, or volume \(or rate and duration\) with concentration"),
    "bad operator": (edit('mesh_size = "0.7 mm"', 'mesh_size = "0.7 mm"\noperator = "mmatrix"'),
                     r"geometry\.operator = 'mmatrix'; did you mean 'm-matrix'\? allowed: \['p1', 'm-matrix'\]"),
    "dt longer than end": (edit('dt = "120 s"', 'dt = "1 d"'), r"time\.dt = '1 d' is longer than time\.end"),
}


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_validation_error(name):
    text, pattern = ERRORS[name]
    with pytest.raises(ScenarioError) as err:
        load(text)
    assert re.search(pattern, str(err.value)), str(err.value)
    assert str(err.value).startswith("s.toml")


def test_site_outside_tissue_is_named(tmp_path):
    from paracrine.build import make_geometry

    s = load(edit('sites = 3', 'sites = [[0.0, 0.0, 0.0], ["3.7 mm", 0, -1]]'))
    with pytest.raises(ScenarioError, match=r"injection\[0\]\.sites\[0\] = \[0\.0, 0\.0, 0\.0\] mm lies outside the tissue"):
        make_geometry(s)


def test_missing_scenario_file(tmp_path):
    with pytest.raises(ScenarioError, match="no such scenario file"):
        sc.load(tmp_path / "none.toml")


def test_save_times_end_exactly():
    s = load(edit('interval = "1 h"\nfields = "3 h"', 'interval = "5 h"\nfields = "10 h"'))
    np.testing.assert_allclose(sc.save_times(s), [5 * 3600.0, 10 * 3600.0, 12 * 3600.0])
