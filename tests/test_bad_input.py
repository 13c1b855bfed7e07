"""Malformed scenarios, one perturbation of the built-in default each: every one is refused with one
ScenarioError that names the file, the key and the value, before any mesh is generated (fast), and
through the CLI with exit code 2, one line on stderr and nothing written."""

from __future__ import annotations

import math
import os

import pytest

from paracrine import scenario as sc
from paracrine.cli import main

BASE = sc.default_text()
SRC = "bad.toml"
INJECTION = BASE[BASE.index("[[injection]]"):]
BEFORE_INJECTION = BASE[:BASE.index("[[injection]]")]


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def injection(body: str) -> str:
    """The default with its [[injection]] replaced."""
    return BEFORE_INJECTION + "[[injection]]\n" + body + "\n"


def factors(n: int) -> str:
    return "".join(f'\n[factors.F{k}]\npreset = "VEGF165"\n' for k in range(n))


SITES = 'sites = 3\nregion = "border"'
VEGF_UPTAKE = 'uptake = { border = "1e-3 1/s" }      # estimate'
SECRETION_VEGF = 'VEGF = "1203 pg / (1e6 cell * 48 h)"'

#: id -> (scenario text, fragments the message must hold besides the file name)
CASES = {
    # not finite, wherever a number is read
    "end nan text": (edit('end = "7 d"', 'end = "nan d"'), ["time.end", "'nan d'", "not finite"]),
    "end inf text": (edit('end = "7 d"', 'end = "inf d"'), ["time.end", "'inf d'", "not finite"]),
    "end overflow": (edit('end = "7 d"', 'end = "1e400 s"'), ["time.end", "'1e400 s'", "not finite"]),
    "end toml nan": (edit('end = "7 d"', "end = nan"), ["time.end", "nan", "not finite"]),
    "end toml inf": (edit('end = "7 d"', "end = inf"), ["time.end", "inf", "not finite"]),
    "end toml -inf": (edit('end = "7 d"', "end = -inf"), ["time.end", "-inf", "not finite"]),
    "rtol nan": (edit("rtol = 1e-3", "rtol = nan"), ["time.rtol", "nan", "(0, 1)"]),
    "transmural nan": (edit("transmural = 1.0", "transmural = nan"), ["geometry.transmural", "nan"]),
    "fast_fraction inf": (edit("fast_fraction = 0.45", "fast_fraction = inf"), ["cells.fast_fraction", "inf"]),
    "border_width nan": (edit('border_width = "0.5 mm"', 'border_width = "nan mm"'),
                         ["geometry.border_width", "'nan mm'"]),
    "mesh_size inf": (edit('mesh_size = "0.4 mm"', 'mesh_size = "inf mm"'), ["geometry.mesh_size", "'inf mm'"]),
    "uptake nan": (edit(VEGF_UPTAKE, 'uptake = { border = "nan 1/s" }  # estimate'),
                   ["factors.VEGF.uptake.border", "'nan 1/s'", "not finite"]),
    "uptake nan pg": (edit(VEGF_UPTAKE, 'uptake = { core = "nan pg" }  # estimate'), ["factors.VEGF.uptake.core", "'nan pg'"]),
    "threshold nan": (edit('threshold = "31 pg/mL"', 'threshold = "nan pg/mL"'), ["factors.VEGF.threshold", "nan"]),
    "mw nan": (edit('preset = "VEGF165"', 'preset = "VEGF165"\nmw = nan'), ["factors.VEGF.mw", "nan"]),
    "secretion inf": (edit(SECRETION_VEGF, 'VEGF = "inf pg/cell/s"'), ["cells.secretion.VEGF", "inf"]),
    "dose nan": (edit('dose = "1e6 cells"', 'dose = "nan cells"'), ["injection[0].dose", "'nan cells'"]),
    "site nan": (edit(SITES, "sites = [[nan, 0, 0]]"), ["injection[0].sites[0][0]", "nan", "not finite"]),
    "site inf": (edit(SITES, "sites = [[0, 0, inf]]"), ["injection[0].sites[0][2]", "inf", "not finite"]),
    "site inf text": (edit(SITES, 'sites = [[0, "inf mm", 0]]'), ["injection[0].sites[0][1]", "'inf mm'"]),
    "site bool": (edit(SITES, "sites = [[0, true, 0]]"), ["injection[0].sites[0][1]", "True"]),
    "probe nan": (BASE + "\n[probes]\np = [0, nan, 1]\n", ["probes.p[1]", "nan", "not finite"]),
    "probe overflow": (BASE + '\n[probes]\np = [0, 0, "1e999 mm"]\n', ["probes.p[2]", "'1e999 mm'"]),
    "retention nan": (BASE + "retention = nan\n", ["injection[0].retention", "nan"]),
    "repeat every nan": (BASE + 'repeat = {count = 2, every = "nan d"}\n', ["injection[0].repeat.every", "nan"]),
    "retention_by_time factor nan": (
        edit('slow_half_life = "3.6 d"', 'slow_half_life = "3.6 d"\nretention_by_time = {time = ["0 d", "7 d"], '
                                         'factor = [nan, 1.0]}'),
        ["cells.retention_by_time.factor[0]", "nan"]),
    "retention_by_time time inf": (
        edit('slow_half_life = "3.6 d"', 'slow_half_life = "3.6 d"\nretention_by_time = {time = ["0 d", "inf d"], '
                                         'factor = [0.5, 1.0]}'),
        ["cells.retention_by_time.time[1]", "inf"]),
    "hill K nan": (edit('threshold = "31 pg/mL"', 'hill = {Vmax = "1 pg/mL/s", K = "nan pg/mL"}'),
                   ["factors.VEGF.hill.K", "nan"]),
    "hill n inf": (edit('threshold = "31 pg/mL"', 'hill = {Vmax = "1 pg/mL/s", K = "1 pg/mL", n = inf}'),
                   ["factors.VEGF.hill.n", "inf"]),
    "maps nan": (edit('maps = ["6 h", "1 d", "3 d", "7 d"]', 'maps = ["nan h"]'), ["output.maps[0]", "nan"]),
    "exposure inf": (edit('exposure = "24 h"', "exposure = inf"), ["output.exposure", "inf"]),
    "power tower": (edit('end = "7 d"', 'end = "10^10^10 s"'), ["time.end", "10^10^10", "exponents"]),
    "huge power": (edit('end = "7 d"', 'end = "10**400 s"'), ["time.end", "exponents"]),
    "long text": (edit('end = "7 d"', 'end = "7' + " " * 300 + 'd"'), ["time.end", "characters"]),
    "empty text": (edit('end = "7 d"', 'end = ""'), ["time.end", "empty"]),
    # counts and sizes, bounded before anything is built
    "repeat count 1e9 float": (BASE + 'repeat = {count = 1e9, every = "1 s"}\n',
                               ["injection[0].repeat.count", "1000000000.0", "an integer >= 1 and <= 10000"]),
    "repeat count 10**9": (BASE + 'repeat = {count = 1000000000, every = "1 s"}\n',
                           ["injection[0].repeat.count", "1000000000", "<= 10000"]),
    "repeat count 0": (BASE + 'repeat = {count = 0, every = "1 d"}\n', ["injection[0].repeat.count", "0"]),
    "repeat past end": (BASE + 'repeat = {count = 9, every = "1 d"}\n',
                        ["injection[0].repeat", "dose 8 at 7 d", "count <= 7"]),
    "repeat every 0": (BASE + 'repeat = {count = 2, every = "0 d"}\n', ["injection[0].repeat.every", "> 0"]),
    "sites 10**6": (edit("sites = 3", "sites = 1000000"), ["injection[0].sites", "1000000", "<= 10000"]),
    "sites 0": (edit("sites = 3", "sites = 0"), ["injection[0].sites", "= 0", ">= 1"]),
    "sites negative": (edit("sites = 3", "sites = -3"), ["injection[0].sites", "-3"]),
    "sites float": (edit("sites = 3", "sites = 3.5"), ["injection[0].sites", "3.5"]),
    "site list too long": (edit(SITES, "sites = [" + ", ".join(["[0, 0, 0]"] * 10001) + "]"),
                           ["injection[0].sites", "10001 sites", "at most 10000"]),
    "site of two": (edit(SITES, "sites = [[0, 0]]"), ["injection[0].sites[0]", "[0, 0]", "[x, y, z]"]),
    "maps too many": (edit('maps = ["6 h", "1 d", "3 d", "7 d"]', "maps = [" + ", ".join(['"1 h"'] * 101) + "]"),
                      ["output.maps", "101 times", "at most 100"]),
    "maps not a list": (edit('maps = ["6 h", "1 d", "3 d", "7 d"]', 'maps = "1 d"'), ["output.maps", "'1 d'"]),
    "too many factors": (BASE + factors(31), ["factors", "33 factors", "at most 32"]),
    "too many probes": (BASE + "\n[probes]\n" + "".join(f"p{k} = [0, 0, 0]\n" for k in range(1001)),
                        ["probes", "1001 probes", "at most 1000"]),
    "too many output times": (edit('interval = "1 h"', 'interval = "0.1 s"'),
                              ["output.interval", "output times", "at most 1000000"]),
    "too many snapshots": (edit('interval = "1 h"', 'interval = "1 min"').replace('fields = "12 h"', 'fields = "1 min"'),
                           ["output.fields", "field snapshots", "at most 5000"]),
    "too many injections": (BASE + "\n" + "\n".join([INJECTION] * 1000),
                            ["injection", "1001 [[injection]]", "at most 1000"]),
    "mesh_size zero": (edit('mesh_size = "0.4 mm"', 'mesh_size = "0 mm"'), ["geometry.mesh_size", "'0 mm'", "> 0"]),
    "mesh_size negative": (edit('mesh_size = "0.4 mm"', 'mesh_size = "-0.4 mm"'), ["geometry.mesh_size", "-0.4 mm"]),
    "end zero": (edit('end = "7 d"', 'end = "0 d"'), ["time.end", "'0 d'", "> 0"]),
    "end negative": (edit('end = "7 d"', 'end = "-7 d"'), ["time.end", "'-7 d'"]),
    "dt zero": (edit("rtol = 1e-3", 'dt = "0 s"'), ["time.dt", "'0 s'", "> 0"]),
    "chunk negative": (edit("rtol = 1e-3", 'rtol = 1e-3\nchunk = "-1 d"'), ["time.chunk", "'-1 d'"]),
    "refine zero": (edit('refine = "0.25 mm"', 'refine = "0 mm"'), ["geometry.refine", "'0 mm'"]),
    "dose negative": (edit('dose = "1e6 cells"', 'dose = "-1e6 cells"'), ["injection[0].dose", "-1e6 cells"]),
    "retention_by_time too long": (
        edit('slow_half_life = "3.6 d"', 'slow_half_life = "3.6 d"\nretention_by_time = {time = [' +
             ", ".join(f'"{k} h"' for k in range(1001)) + "], factor = [" + ", ".join(["1.0"] * 1001) + "]}"),
        ["cells.retention_by_time.time", "1001 entries", "at most 1000"]),
    "territory segment 18": (edit('territory = "LAD"', "territory = [7, 18]"), ["geometry.territory", "[7, 18]"]),
    # names that become file and dataset names
    "factor slash": (edit("[factors.HGF]", '[factors."HGF/165"]').replace('HGF = "12280', '"HGF/165" = "12280'),
                     ["factors.HGF/165", "'HGF/165'", "^[A-Za-z][A-Za-z0-9_.+-]{0,63}$"]),
    "factor space": (edit("[factors.HGF]", '[factors."HGF 1"]').replace('HGF = "12280', '"HGF 1" = "12280'),
                     ["factors.HGF 1", "'HGF 1'", "names matching"]),
    "factor digit first": (edit("[factors.HGF]", '[factors."1HGF"]').replace('HGF = "12280', '"1HGF" = "12280'),
                           ["factors.1HGF", "names matching"]),
    "factor dots": (edit("[factors.HGF]", '[factors.".."]').replace('HGF = "12280', '".." = "12280'),
                    ["factors...", "'..'"]),
    "factor empty": (edit("[factors.HGF]", '[factors.""]').replace('HGF = "12280', '"" = "12280'),
                     ["factors.", "''", "names matching"]),
    "factor too long": (edit("[factors.HGF]", f"[factors.H{'x' * 64}]").replace('HGF = "12280', f"H{'x' * 64} = \"12280"),
                        ["factors.Hxxx", "names matching"]),
    "factor case collision": (BASE + '\n[factors.vegf]\npreset = "VEGF165"\n', ["factors.vegf", "differ only in case"]),
    "probe comma": (BASE + '\n[probes]\n"a,b" = [0, 0, 0]\n', ["probes.a,b", "'a,b'", "names matching"]),
    "probe is a region": (BASE + "\n[probes]\nborder = [0, 0, 0]\n", ["probes.border", "region name"]),
    "title number": (edit(BASE.splitlines()[3], "title = 5"), ["title", "= 5", "text"]),
    "title newline": (edit(BASE.splitlines()[3], 'title = "a\\nb"'), ["title", "'a\\nb'", "one line"]),
    "cells name list": (edit('name = "MSC"', 'name = ["MSC"]'), ["cells.name", "['MSC']"]),
    # wrong types
    "end bool": (edit('end = "7 d"', "end = true"), ["time.end", "True"]),
    "end table": (edit('end = "7 d"', "end = {a = 1}"), ["time.end", "{'a': 1}"]),
    "end list": (edit('end = "7 d"', 'end = ["7 d"]'), ["time.end", "['7 d']"]),
    "end date": (edit('end = "7 d"', "end = 1979-05-27"), ["time.end", "datetime.date(1979, 5, 27)"]),
    "species list": (edit('species = "rat"', 'species = ["rat"]'), ["geometry.species", "['rat']"]),
    "operator table": (edit('species = "rat"', 'species = "rat"\noperator = {p1 = 1}'), ["geometry.operator", "{'p1': 1}"]),
    "method number": (edit("rtol = 1e-3", "rtol = 1e-3\nmethod = 5"), ["time.method", "= 5"]),
    "sites bool": (edit("sites = 3", "sites = true"), ["injection[0].sites", "True"]),
    "intracoronary territory table": (injection('dose = "1e6 cells"\nroute = "intracoronary"\nterritory = {a = 1}'),
                                      ["injection[0].territory", "{'a': 1}"]),
    "intracoronary territory segment 0": (injection('dose = "1e6 cells"\nroute = "intracoronary"\nterritory = [0]'),
                                          ["injection[0].territory", "[0]", "AHA segments"]),
    "deep value": (edit('end = "7 d"', "end = " + "[" * 40 + "]" * 40), ["time.end", "[[[[", "..."]),
    "length_unit without file": (edit('species = "rat"', 'species = "rat"\nlength_unit = "cm"'),
                                 ["geometry.length_unit", "only with geometry.file"]),
    # TOML structure
    "deep arrays": ("a = " + "[" * 3000 + "]" * 3000, ["nested too deeply"]),
    "deep tables": ("a = " + "{b = " * 3000 + "1" + "}" * 3000, ["nested too deeply"]),
    "deep arrays in scenario": (edit('end = "7 d"', "end = " + "[" * 3000 + "]" * 3000), ["nested too deeply"]),
    "not toml": (edit('end = "7 d"', "end = "), ["not valid TOML"]),
    "duplicate key": (edit('end = "7 d"', 'end = "7 d"\nend = "8 d"'), ["not valid TOML"]),
    "nul in text": (edit('end = "7 d"', 'end = "7\0 d"'), ["not valid TOML"]),
    "unknown top key": (BASE + "\n[geometri]\n", ["geometri", "unknown key", "did you mean 'geometry'"]),
    "factors not a table": (edit("[factors.VEGF]", "[factorz.VEGF]"), ["factorz", "unknown key"]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused(name):
    text, fragments = CASES[name]
    with pytest.raises(sc.ScenarioError) as err:
        sc.loads(text, source=SRC)
    msg = str(err.value)
    assert msg.startswith(f"{SRC}: "), msg
    assert "\n" not in msg and len(msg) < 1000, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_bom_is_skipped(tmp_path):
    assert sc.loads("\ufeff" + BASE, source=SRC).data["time"]["end"] == 7 * 86400.0
    p = tmp_path / "bom.toml"
    p.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert sc.load(p).data["time"]["end"] == 7 * 86400.0


def test_many_allowed_values_still_load():
    """The bounds leave ordinary use alone: 10000 doses, 32 factors, 1000 probes."""
    s = sc.loads(edit('end = "7 d"', 'end = "700 d"') + 'repeat = {count = 10000, every = "1 h"}\n', source=SRC)
    assert len(s.data["injections"][0]["times"]) == 10000
    assert len(sc.loads(BASE + factors(30), source=SRC).factors) == 32
    s = sc.loads(BASE + "\n[probes]\n" + "".join(f"p{k} = [0, 0, {k}]\n" for k in range(1000)), source=SRC)
    assert len(s.data["probes"]) == 1000 and all(map(math.isfinite, s.data["probes"]["p7"]))


# ---- files --------------------------------------------------------------------------------------------------

def _directory(tmp_path):
    (tmp_path / "d.toml").mkdir()
    return tmp_path / "d.toml", "is a folder"


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "f.toml")
    return tmp_path / "f.toml", "is a FIFO"


def _zero(tmp_path):
    (tmp_path / "z.toml").symlink_to("/dev/zero")
    return tmp_path / "z.toml", "is a device"


def _latin1(tmp_path):
    p = tmp_path / "l.toml"
    p.write_bytes(BASE.replace('name = "MSC"', 'name = "MSC, café"').encode("latin-1"))
    return p, "not UTF-8 text"


def _binary(tmp_path):
    p = tmp_path / "b.toml"
    p.write_bytes(bytes(range(256)) * 4)
    return p, "not UTF-8 text"


def _nul(tmp_path):
    p = tmp_path / "n.toml"
    p.write_bytes(b"\0" * 100)
    return p, "NUL character"


def _big(tmp_path):
    p = tmp_path / "big.toml"
    p.write_text(BASE + "#" * 1_000_001)
    return p, "allowed: a scenario file of at most 1000000 bytes"


def _missing(tmp_path):
    return tmp_path / "missing.toml", "no such scenario file"


FILES = {"directory": _directory, "fifo": _fifo, "symlink to /dev/zero": _zero, "latin-1": _latin1,
         "binary": _binary, "nul bytes": _nul, "too big": _big, "missing": _missing}


@pytest.mark.parametrize("name", sorted(FILES))
def test_file_refused(tmp_path, name):
    path, fragment = FILES[name](tmp_path)
    with pytest.raises(sc.ScenarioError) as err:
        sc.load(path)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value), str(err.value)


# ---- geometry.length_unit -------------------------------------------------------------------------------------

def _box(tmp_path, regions=("remote", "border", "core")):
    from paracrine import geometry
    import numpy as np

    m = geometry.box_mesh(np.zeros(3), np.ones(3) * 4, 2,
                          regions={regions[0]: True, regions[1]: geometry.halfspace(0, 1.5),
                                   regions[2]: geometry.halfspace(0, 3.0)})
    return geometry.write(tmp_path / "heart.vtu", m)


def _with_file(extra=""):
    return edit(BASE[BASE.index("[geometry]"):BASE.index("[time]")], f'[geometry]\nfile = "heart.vtu"\n{extra}\n')


def test_length_unit(tmp_path):
    _box(tmp_path)
    assert sc.loads(_with_file(), source=SRC, base=tmp_path).data["geometry"]["length_unit"] == "mm"
    for u in sc.LENGTH_UNITS:   # the same box is a heart in mm; in other units its size is refused, naming the unit
        try:
            s = sc.loads(_with_file(f'length_unit = "{u}"'), source=SRC, base=tmp_path)
        except sc.ScenarioError as err:
            assert u != "mm" and "bounding box" in str(err) and f"read with length_unit = '{u}'" in str(err), err
        else:
            assert s.data["geometry"]["length_unit"] == u
    with pytest.raises(sc.ScenarioError, match=r"bad.toml: geometry.length_unit = 'km'; did you mean 'm'\? allowed: \['mm', 'cm', 'm', "
                                               r"'um'\]"):
        sc.loads(_with_file('length_unit = "km"'), source=SRC, base=tmp_path)
    with pytest.raises(sc.ScenarioError, match=r"geometry.length_unit = 1;"):
        sc.loads(_with_file("length_unit = 1"), source=SRC, base=tmp_path)


def test_mesh_region_names_checked(tmp_path):
    _box(tmp_path, ("remote", "border zone", "core"))
    with pytest.raises(sc.ScenarioError, match=r"geometry.file = 'heart.vtu': the region name 'border zone' is not "
                                               r"allowed"):
        sc.loads(_with_file(), source=SRC, base=tmp_path)


# ---- the command line: exit code 2, one line, nothing written -------------------------------------------------

CLI = ["end nan text", "site nan", "probe nan", "repeat count 10**9", "factor slash", "deep arrays", "mesh_size zero",
       "length_unit without file", "title newline", "sites 10**6", "power tower", "too many output times"]
CLI_FILES = ["directory", "fifo", "symlink to /dev/zero", "latin-1", "too big"]


def _cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("name", CLI)
def test_cli_refuses(tmp_path, capsys, name):
    path = tmp_path / "bad.toml"
    path.write_text(CASES[name][0])
    out = tmp_path / "out"
    rc, stdout, err = _cli(["run", str(path), "--out", str(out)], capsys)
    assert rc == 2
    assert err.startswith(f"paracrine run: {path}: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and not stdout
    assert all(f in err for f in CASES[name][1][:1]), err
    assert not out.exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("name", CLI_FILES)
def test_cli_refuses_file(tmp_path, capsys, name):
    path, fragment = FILES[name](tmp_path)
    out = tmp_path / "out"
    rc, stdout, err = _cli(["run", str(path), "--out", str(out)], capsys)
    assert rc == 2 and err.startswith(f"paracrine run: {path}: ") and fragment in err, err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "out.partial").exists()
