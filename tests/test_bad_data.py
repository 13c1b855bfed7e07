"""Malformed data CSVs for `paracrine fit`: each refused with one DataError naming the file, the line
and the column; identical rows warned about; a byte-order mark accepted. And random perturbations of
the default scenario either load or raise ScenarioError, never anything else."""

from __future__ import annotations

import os
import tomllib
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paracrine import data as pdata
from paracrine import scenario as sc

HEADER = "time [h],quantity,factor,where,value [pg/mL],sd [pg/mL]\n"
ROW = "24,concentration,VEGF,border,12.5,3.1\n"


@pytest.fixture(scope="module")
def scen():
    return sc.default()


#: id -> (file text, fragments of the message besides the file name)
BAD = {
    "empty": ("", ["no header and no data"]),
    "comments only": ("# a source\n# a note\n", ["no header and no data"]),
    "blank lines only": ("\n\n  \n", ["no header and no data"]),
    "header only": (HEADER, ["a header but no data rows"]),
    "decimal commas": (HEADER + "24,concentration,VEGF,border,12,5,3,1\n",
                       ["line 2: 8 fields, the header has 6", "decimal commas"]),
    "one field more": (HEADER + ROW.strip() + ",x\n", ["line 2: 7 fields, the header has 6"]),
    "trailing comma": (HEADER + ROW.strip() + ",\n", ["line 2: 7 fields, the header has 6"]),
    "one field less": (HEADER + "24,concentration,VEGF,border,12.5\n", ["line 2: 5 fields, the header has 6"]),
    "short row after good ones": (HEADER + ROW + "# note\n" + "48,concentration,VEGF,border\n",
                                  ["line 4: 4 fields, the header has 6"]),
    "semicolons": (HEADER.replace(",", ";") + "24;concentration;VEGF;border;12,5;3,1\n",
                   ["line 1: the header is separated by semicolons", "commas"]),
    "tabs": (HEADER.replace(",", "\t") + ROW.replace(",", "\t"), ["line 1: the header is separated by tabs"]),
    "nan value": (HEADER + "24,concentration,VEGF,border,nan,3.1\n", ["line 2, column value", "'nan'", "finite"]),
    "inf sd": (HEADER + "24,concentration,VEGF,border,1,inf\n", ["line 2, column sd", "'inf'", "finite"]),
    "overflow value": (HEADER + "24,concentration,VEGF,border,1e999,1\n", ["line 2, column value", "'1e999'"]),
    "inf time": (HEADER + "inf,concentration,VEGF,border,1,1\n", ["line 2, column time", "'inf'"]),
    "negative concentration": (HEADER + "24,concentration,VEGF,border,-12.5,3.1\n",
                               ["line 2, column value", "-12.5", ">= 0"]),
    "negative sd": (HEADER + "24,concentration,VEGF,border,12.5,-3.1\n", ["line 2, column sd", "-3.1", "> 0"]),
    "negative time": (HEADER + "-24,concentration,VEGF,border,12.5,3.1\n", ["line 2, column time", "outside"]),
    "word for a number": (HEADER + "24,concentration,VEGF,border,twelve,3.1\n",
                          ["line 2, column value", "'twelve' is not a number"]),
    "quoted decimal comma": (HEADER + '24,concentration,VEGF,border,"12,5",3.1\n',
                             ["line 2, column value", "'12,5'", "decimal comma"]),
    "empty value": (HEADER + "24,concentration,VEGF,border,,3.1\n", ["line 2, column value", "''"]),
    "unknown factor": (HEADER + "24,concentration,VEGF165,border,1,1\n", ["line 2, column factor", "'VEGF165'"]),
    "unknown region": (HEADER + "24,concentration,VEGF,boarder,1,1\n", ["line 2, column where", "'boarder'"]),
    "duplicate column": (HEADER.strip() + ",sd\n" + ROW.strip() + ",1\n", ["header columns 6 and 7 are both 'sd'"]),
    "empty header": (",,,\n" + ROW, ["header"]),
    "nul byte": (HEADER + ROW.replace("border", "bor\0der"), ["line 2 holds a NUL character"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_data_file(tmp_path, scen, name):
    text, fragments = BAD[name]
    p = tmp_path / "d.csv"
    p.write_text(text)
    with pytest.raises(pdata.DataError) as err:
        pdata.read_csv(p, scen)
    msg = str(err.value)
    assert msg.startswith(str(p)) and "\n" not in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_not_utf8(tmp_path, scen):
    p = tmp_path / "d.csv"
    p.write_bytes(HEADER.encode() + "24,concentration,VEGF,bördér,1,1\n".encode("latin-1"))
    with pytest.raises(pdata.DataError, match=r"d.csv: not UTF-8 text \(byte \d+, line 2"):
        pdata.read_csv(p, scen)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_not_a_file(tmp_path, scen, kind):
    p = tmp_path / "d.csv"
    p.mkdir() if kind == "folder" else os.mkfifo(p)
    with pytest.raises(pdata.DataError, match=f"d.csv: is a {'folder' if kind == 'folder' else 'FIFO'}"):
        pdata.read_csv(p, scen)


def test_bom_accepted(tmp_path, scen):
    p = tmp_path / "d.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + ROW).encode())
    obs = pdata.read_csv(p, scen)
    assert len(obs) == 1 and obs.lines == [2]


def test_duplicate_rows_warned(tmp_path, scen):
    p = tmp_path / "d.csv"
    p.write_text(HEADER + ROW + "48,concentration,VEGF,core,1,1\n" + "# note\n" + ROW)
    with pytest.warns(pdata.DataWarning, match=r"d.csv: identical data rows \(lines 2, 5\)"):
        obs = pdata.read_csv(p, scen)
    assert len(obs) == 3 and "lines 2, 5" in obs.warnings[0]
    p.write_text(HEADER + ROW + "48,concentration,VEGF,core,1,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not pdata.read_csv(p, scen).warnings


# ---- property: random perturbations of the default scenario ------------------------------------------------

RAW = tomllib.loads(sc.default_text())


def _leaves(d, path=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        for i, v in enumerate(d):
            yield from _leaves(v, path + (i,))
    else:
        yield path


LEAVES = sorted(_leaves(RAW), key=str)
_scalar = st.one_of(st.text(max_size=30), st.integers(-10**19, 10**19), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans(), st.sampled_from(["nan pg", "inf d", "1e400 s", "-1 d", "0", "7 d", "1e6 cells",
                                                    "10^10^10", "mm", "1/s", "border", "rat", "1 mol"]))
VALUES = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=8)


def _dump(v) -> str:
    """A TOML value (inline)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(map(_dump, v)) + "]"
    return "{" + ", ".join(f"{_dump(k)} = {_dump(x)}" for k, x in v.items()) + "}"


def _toml(d) -> str:
    """The perturbed scenario as TOML: one inline value per top-level key."""
    return "".join(f"{_dump(k)} = {_dump(v)}\n" for k, v in d.items())


def _replace(d, path, value):
    import copy

    d = copy.deepcopy(d)
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return d


def test_roundtrip_of_the_toml_writer():
    assert tomllib.loads(_toml(RAW)) == RAW
    sc.loads(_toml(RAW), source="p.toml")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(LEAVES), value=VALUES)
def test_perturbed_scenario_loads_or_is_refused(path, value):
    text = _toml(_replace(RAW, path, value))
    try:
        sc.loads(text, source="p.toml")
    except sc.ScenarioError as err:
        assert str(err).startswith("p.toml: ") and "\n" not in str(err)
