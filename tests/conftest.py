"""Tests run in float64 (the test's call, never the library's), and XLA:CPU compiles them at backend
optimisation level 0 unless XLA_FLAGS says otherwise: most of the suite's time is compiling small
programs run once (tests/test_core_v2.py: 115 s against 152 s on 2 cores); the results are the same
programs' to round-off, and speed is measured by benchmarks/, run at XLA's default level. The flag
reaches the CLI and benchmark scripts the tests start, which inherit the environment."""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop the compiled programs of the previous test module: the suite compiles several thousand
    programs in one process, and XLA:CPU was seen to abort in a compile late in the run without it."""
    yield
    jax.clear_caches()
