"""Tests run in float64 (the test's call, never the library's)."""

import jax
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
