"""paracrine: how much of each factor secreted by injected cells reaches the infarct border zone.

The application layer (CLI, scenario files, run folders) on top of `geometry`
and `solver`.
"""

__version__ = "0.1.0"
