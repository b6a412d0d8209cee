"""Settings for the docstring examples of ``lib/mcmcvae`` (run by ``pytest --doctest-modules``, see pyproject.toml).

Each example imports what it uses, as a reader would, and runs in a fresh temporary working directory, so an
example that writes ``runs/demo`` or ``samples.png`` leaves nothing behind. The namespace is pre-filled with
nothing: an example that needs a model or data builds a tiny one itself.
"""

import os
import pathlib

import jax
import pytest

# The same persistent compilation cache as tests/conftest.py, so that repeated runs skip XLA compiles.
_CACHE = pathlib.Path(os.environ.get("MCMCVAE_JAX_CACHE", pathlib.Path(__file__).parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)



@pytest.fixture(autouse=True)
def _doctest_in_tmp_path(tmp_path, monkeypatch):
    """Run every docstring example in its own empty working directory (files it writes go to ``tmp_path``)."""
    monkeypatch.chdir(tmp_path)


def pytest_pycollect_makeitem(collector, name, obj):
    """Library functions are not tests, whatever their names (``mv.evaluate.test_log_likelihood``): a file of
    ``lib/`` named on the command line is searched for docstring examples only."""
    return []
