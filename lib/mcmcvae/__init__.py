"""mcmcvae: variational autoencoders refined by short-run MCMC with self-tuning kernels.

``import mcmcvae as mv`` gives the sub-packages named in the public API:

- ``mv.data``: dataset loaders, binarisation and the data directory;
- ``mv.nets``: Haiku encoders and decoders;
- ``mv.models``: NumPyro priors and likelihoods and the VAE's ``log p(x, z)``;
- ``mv.kernels``: MALA and HMC with learnable preconditioners;
- ``mv.adaptation``: the entropy speed measure and BlackJAX's dual averaging;
- ``mv.methods``: training methods (``vae``, ``iwae``, ...), one object each;
- ``mv.train``: the one training loop every method shares, and ``mv.train.fit``, a resumable run in a folder;
- ``mv.evaluate``: importance-sampling and AIS log-likelihoods, KID;
- ``mv.hierarchical``: top-down hierarchical VAEs, linear ones with exact posteriors;
- ``mv.results``: result rows, the results files, cached evaluations, machine and revision stamps for scripts;
- ``mv.distributed``: multi-process data-parallel training with ``jax.distributed``.

The reproductions are research scripts outside the library, in the repository's ``experiments/`` folder.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0.dev0"

_SUBMODULES = ("data", "nets", "models", "kernels", "adaptation", "methods", "train", "evaluate", "hierarchical",
               "results", "distributed")


def __getattr__(name):  # PEP 562: sub-packages load on first use, keeping `import mcmcvae` cheap.
    if name in _SUBMODULES:
        module = _import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'mcmcvae' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
