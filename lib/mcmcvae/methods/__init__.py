"""Training methods. Each is one object with ``init``/``step``/``proposal`` (see :mod:`mcmcvae.methods.base`).

:func:`build` turns a method name (as on the command line) and options into a method object; options a method
does not take are ignored, so one options dict can serve every method.

| name | class | what it does |
|---|---|---|
| ``vae`` | :class:`ELBO` | ELBO |
| ``iwae`` | :class:`ELBO` | importance-weighted bound L_k |
| ``mala``, ``hmc`` | :class:`MCMC` | Algorithm 1 with a fixed step size, C = I |
| ``dsmala``, ``dshmc`` | :class:`MCMC` | Algorithm 1, h by BlackJAX's dual averaging, C = I |
| ``gradmala``, ``gradhmc`` | :class:`MCMC` | Algorithm 1, (h, C) by the entropy speed measure |
"""

from __future__ import annotations

import dataclasses

from mcmcvae.methods.base import Method
from mcmcvae.methods.elbo import ELBO
from mcmcvae.methods.mcmc import MCMC
from mcmcvae.methods.hvae import HVAE
from mcmcvae.methods.aiwae import AIWAE
from mcmcvae.methods.vcd import VCD, Hoffman

__all__ = ["Method", "ELBO", "MCMC", "build", "METHODS", "AVAILABLE"]

# Every name the command line accepts; AVAILABLE maps the ones implemented so far to (class, fixed options).
METHODS = ("vae", "iwae", "mala", "hmc", "dsmala", "dshmc", "gradmala", "gradhmc", "hvae", "aiwae", "vcd", "hoffman")

AVAILABLE = {
    "vae": (ELBO, {"importance_weighted": False}),
    "iwae": (ELBO, {"importance_weighted": True, "num_samples": 5}),
    "mala": (MCMC, {"algorithm": "mala", "tuning": "fixed"}),
    "hmc": (MCMC, {"algorithm": "hmc", "tuning": "fixed"}),
    "dsmala": (MCMC, {"algorithm": "mala", "tuning": "dual_averaging"}),
    "dshmc": (MCMC, {"algorithm": "hmc", "tuning": "dual_averaging"}),
    "gradmala": (MCMC, {"algorithm": "mala", "tuning": "speed_measure"}),
    "gradhmc": (MCMC, {"algorithm": "hmc", "tuning": "speed_measure"}),
    "hvae": (HVAE, {}),
    "aiwae": (AIWAE, {}),
    "vcd": (VCD, {}),
    "hoffman": (Hoffman, {}),
}
# What identifies the method cannot be overridden by options; defaults (like iwae's k = 5) can.
_IDENTITY = ("importance_weighted", "algorithm", "tuning")


def build(name: str, **options) -> Method:
    """Build a method by name.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones) or a known method not implemented yet.

    Examples
    --------
    >>> build("gradmala", preconditioner="lower_triangular", num_mcmc_steps=5).name
    'gradmala'
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    if name not in AVAILABLE:
        raise ValueError(f"method {name!r} is not implemented in this version; available now: {', '.join(AVAILABLE)}")
    cls, fixed = AVAILABLE[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    chosen = {k: v for k, v in options.items() if k in fields and k not in _IDENTITY and v is not None}
    return cls(**{**fixed, **chosen, **{k: v for k, v in fixed.items() if k in _IDENTITY}})
