"""Reading scenario tables: values with units, choices, per-region tables, with the key path
(`factors.VEGF.uptake.border`) and the file in every error."""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

from .units import NAME_PATTERN, NAME_RE, ScenarioError, parse, show, suggest


class Reader:
    """Walks the TOML tables, converting values and collecting the key path for messages."""

    def __init__(self, source: str):
        self.source = source

    def where(self, path: str) -> str:
        return f"{self.source}: {path}"

    def error(self, path: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.source}: {path}{msg}")

    def table(self, value, path: str, allowed: dict | tuple, *, required=()) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f" = {show(value)}; allowed: a table with keys {sorted(allowed)}")
        for key in value:
            if key not in allowed:
                raise self.error(f"{path}.{key}" if path else key,
                                 f": unknown key{suggest(key, allowed)} allowed: {sorted(allowed)}")
        for key in required:
            if key not in value:
                raise self.error(f"{path}.{key}" if path else key, ": missing (required)")
        return value

    def quantity(self, value, path, kind, *, mw=None, low=0.0, strict=False, high=None):
        v = parse(value, kind, self.where(path), mw_kda=mw)
        if (strict and not v > low) or v < low or (high is not None and v > high):
            rel = ">" if strict else ">="
            rng = f"{rel} {low:g}" + (f" and <= {high:g}" if high is not None else "")
            raise self.error(path, f" = {show(value)}; allowed: {rng} ({kind})")
        return v

    def number(self, value, path, *, low=0.0, high=None, strict=False):
        return self.quantity(value, path, "number", low=low, high=high, strict=strict)

    def choice(self, value, path, allowed):
        if not isinstance(value, str) or value not in allowed:
            sug = suggest(value, allowed) if isinstance(value, str) else ""
            raise self.error(path, f" = {show(value)}{sug or ';'} allowed: {list(allowed)}")
        return value

    def integer(self, value, path, *, low=1, high=None):
        if (isinstance(value, bool) or not isinstance(value, int) or value < low
                or (high is not None and value > high)):
            rng = f">= {low}" + (f" and <= {high}" if high is not None else "")
            raise self.error(path, f" = {show(value)}; allowed: an integer {rng}")
        return value

    def text(self, value, path, *, longest=200):
        """Free text (a title, a cell type): a string of at most `longest` characters on one line."""
        if not isinstance(value, str) or len(value) > longest or any(c in value for c in "\n\r\0"):
            raise self.error(path, f" = {show(value)}; allowed: text on one line of at most {longest} characters")
        return value

    def name(self, value, path, what="name"):
        """A name that becomes a file, column or dataset name (a factor, region or probe)."""
        if not isinstance(value, str) or not NAME_RE.fullmatch(value):
            raise self.error(path, f": {show(value)} is not allowed as a {what}; allowed: names matching "
                                   f"{NAME_PATTERN} (a letter, then up to 63 letters, digits or _ . + -)")
        return value

    def items(self, value, path, *, most, what="items", example=""):
        """A list of at most `most` entries (checked before anything is built from it)."""
        if not isinstance(value, list):
            raise self.error(path, f" = {show(value)}; allowed: a list of {what}{example}")
        if len(value) > most:
            raise self.error(path, f": {len(value)} {what}; allowed: at most {most}")
        return value

    def point(self, value, path):
        """[x, y, z] in mm: numbers or lengths, each finite."""
        if not (isinstance(value, list) and len(value) == 3):
            raise self.error(path, f" = {show(value)}; allowed: [x, y, z] in mm (numbers or lengths)")
        out = []
        for i, v in enumerate(value):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if not math.isfinite(v):
                    raise self.error(f"{path}[{i}]", f" = {v!r} is not finite; allowed: a finite coordinate "
                                                     "(a number in mm or a length)")
                out.append(float(v))
            else:
                out.append(self.quantity(v, f"{path}[{i}]", "length", low=-math.inf))
        return out

    def per_region(self, value, path, kind, regions, *, default=0.0, mw=None, strict=False):
        """A scalar for all regions or a table {region: value}; regions not named get `default`."""
        if isinstance(value, dict):
            for r in value:
                if r not in regions:
                    raise self.error(f"{path}.{r}", f": unknown region{suggest(r, regions)} allowed: {list(regions)}")
            out = {r: default for r in regions}
            out.update({r: self.quantity(v, f"{path}.{r}", kind, mw=mw, strict=strict) for r, v in value.items()})
            return out
        v = self.quantity(value, path, kind, mw=mw, strict=strict)
        return {r: v for r in regions}


def read_text(path, *, what: str, limit: int, error=ScenarioError) -> str:
    """The text of a regular file of at most `limit` bytes, UTF-8 (a byte-order mark is skipped);
    anything else (a folder, a FIFO, a device, a larger file, other encodings) is refused unread."""
    path = Path(path)
    try:  # opened without blocking (a FIFO), and checked on the open file before anything is read
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder; allowed: a {what} file (a regular file)") from None
    except OSError as err:
        raise error(f"{path}: cannot read the {what} file ({err.strerror or err})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise error(f"{path}: is {kind}; allowed: a {what} file (a regular file)")
    with os.fdopen(fd, "rb") as fh:
        if st.st_size > limit:
            raise error(f"{path}: {st.st_size} bytes; allowed: a {what} file of at most {limit} bytes")
        try:
            raw = fh.read(limit + 1)
        except OSError as err:
            raise error(f"{path}: cannot read the {what} file ({err.strerror or err})") from None
    if len(raw) > limit:
        raise error(f"{path}: more than {limit} bytes; allowed: a {what} file of at most {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise error(f"{path}: not UTF-8 text (byte {err.start + 1}, line {line}: {raw[err.start:err.start + 1]!r}); "
                    f"allowed: a {what} file saved as UTF-8") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise error(f"{path}: line {line} holds a NUL character (binary data); allowed: a {what} file of UTF-8 text")
    return text.removeprefix("\ufeff")
