"""Training methods. Each is one object with ``init``/``step``/``proposal`` (see :mod:`mcmcvae.methods.base`).

:func:`build` turns a method name (as on the command line) and options into a method object.
"""

from __future__ import annotations

from mcmcvae.methods.base import Method
from mcmcvae.methods.elbo import ELBO

__all__ = ["Method", "ELBO", "build", "METHODS", "AVAILABLE"]

# Every name the command line accepts; AVAILABLE maps the ones implemented so far to their builders.
METHODS = ("vae", "iwae", "mala", "hmc", "dsmala", "dshmc", "gradmala", "gradhmc", "hvae", "aiwae", "vcd", "hoffman")


def _vae(learning_rate=1e-3, num_samples=1, **_):
    return ELBO(learning_rate=learning_rate, num_samples=num_samples, importance_weighted=False)


def _iwae(learning_rate=1e-3, num_samples=5, **_):
    return ELBO(learning_rate=learning_rate, num_samples=num_samples, importance_weighted=True)


AVAILABLE = {"vae": _vae, "iwae": _iwae}


def build(name: str, **options) -> Method:
    """Build a method by name; options the method does not use are ignored.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a known method not implemented yet.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    if name not in AVAILABLE:
        raise ValueError(
            f"method {name!r} is not implemented in this version; available now: {', '.join(AVAILABLE)}"
        )
    return AVAILABLE[name](**options)
