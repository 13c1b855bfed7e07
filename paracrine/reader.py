"""Reading scenario tables: values with units, choices, per-region tables, with the key path
(`factors.VEGF.uptake.border`) and the file in every error."""

from __future__ import annotations

from .units import ScenarioError, parse, suggest


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
            raise self.error(path, f" = {value!r}; allowed: a table with keys {sorted(allowed)}")
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
            raise self.error(path, f" = {value!r}; allowed: {rng} ({kind})")
        return v

    def number(self, value, path, *, low=0.0, high=None, strict=False):
        return self.quantity(value, path, "number", low=low, high=high, strict=strict)

    def choice(self, value, path, allowed):
        if value not in allowed:
            raise self.error(path, f" = {value!r}{suggest(str(value), allowed) or ';'} allowed: {list(allowed)}")
        return value

    def integer(self, value, path, *, low=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(path, f" = {value!r}; allowed: an integer >= {low}")
        return value

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
