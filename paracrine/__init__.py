"""paracrine: how much of each factor secreted by injected cells reaches the infarct border zone.

The application layer (CLI, scenario files, run folders) on top of `geometry`
and `solver`. `paracrine.run(scenario)` runs a scenario into a run folder and
`paracrine.load_run(path)` reads one back (xarray and pandas); both are imported
on first use, so `import paracrine` stays light.
"""

__version__ = "0.1.0"

_LAZY = {"load_run": ("paracrine.load", "load_run"), "Run": ("paracrine.load", "Run"),
         "RunFolderError": ("paracrine.load", "RunFolderError"), "run": ("paracrine.load", "run")}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'paracrine' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
