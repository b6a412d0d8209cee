"""Test-suite settings: a persistent compilation cache so that repeated runs skip XLA compiles."""

import os
import pathlib

import jax
import pytest

_CACHE = pathlib.Path(os.environ.get("MCMCVAE_JAX_CACHE", pathlib.Path(__file__).parent.parent / ".jax_cache"))
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)




@pytest.fixture(scope="session")
def mnist_available():
    """Skip (naming the fix) when MNIST has not been fetched; the test command fetches it, so CI never skips."""
    import mcmcvae as mv

    try:
        mv.data.load("mnist", "test")
    except mv.data.DataNotFoundError:
        pytest.skip("MNIST is not in the data directory: run `mcmcvae data fetch mnist`")
