"""Training methods. Each is one object with ``init``/``step``/``proposal`` (see :mod:`mcmcvae.methods.base`).

:func:`build` turns a method name (as on the command line) and options into a method object. It is strict: an
option the method does not take is a ``TypeError`` that names it and the closest valid option, as a misspelt
keyword is in Python. :func:`options` lists what a method takes; :func:`from_config` rebuilds a method from its
``config()`` (what a run's ``config.json`` records), so a reloaded run trains and evaluates the same method.

| name | class | what it does |
|---|---|---|
| ``vae`` | :class:`ELBO` | ELBO |
| ``iwae`` | :class:`ELBO` | importance-weighted bound L_k |
| ``mala``, ``hmc`` | :class:`MCMC` | Algorithm 1, :func:`mcmcvae.adaptation.fixed`: h fixed, C = I |
| ``dsmala``, ``dshmc`` | :class:`MCMC` | Algorithm 1, :func:`mcmcvae.adaptation.dual_averaging` of h, C = I |
| ``gradmala``, ``gradhmc`` | :class:`MCMC` | Algorithm 1, :func:`mcmcvae.adaptation.speed_measure` of (h, C) |
| ``hvae`` | :class:`HVAE` | Hamiltonian VAE |
| ``aiwae`` | :class:`AIWAE` | annealed importance-weighted training |
| ``vcd``, ``hoffman`` | :class:`VCD`, :class:`Hoffman` | VCD and Hoffman's HMC-refined training |

One options dict for several methods (a sweep) goes through :func:`select_options`, which keeps what each method
takes and still rejects keys no method takes. The registry is a convenience for the command line and for configs: any tuner, kernel module or method object
works without it (``MCMC(tuner=...)``).
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

from mcmcvae import adaptation, kernels
from mcmcvae.methods.aiwae import AIWAE
from mcmcvae.methods.base import Method
from mcmcvae.methods.elbo import ELBO
from mcmcvae.methods.hvae import HVAE
from mcmcvae.methods.mcmc import MCMC
from mcmcvae.methods.vcd import VCD, Hoffman

__all__ = ["Method", "ELBO", "MCMC", "HVAE", "AIWAE", "VCD", "Hoffman", "build", "options", "select_options",
           "from_config", "METHODS", "AVAILABLE"]

# -- the MCMC methods: a kernel module and a tuner per name --------------------------------------------------------

_MCMC_COMMON = {"num_mcmc_steps": 10, "learning_rate": 1e-3, "encoder_learning_rate": None,
                "num_proposal_chains": 16}
_TUNINGS = {
    "": {"step_size": 0.05},
    "ds": {"target_acceptance_rate": None, "restart_dual_averaging": False},
    "grad": {"preconditioner": "diagonal", "step_size": 0.05, "kernel_learning_rate": 1e-2,
             "target_acceptance_rate": None, "stop_gradient_proposal_grad": False, "dual_averaged_step_size": False,
             "log_det": "auto"},
}
_KERNELS = {"mala": (kernels.mala, {}), "hmc": (kernels.hmc, {"num_integration_steps": 2})}


def _mcmc_builder(prefix: str, kernel_name: str) -> tuple[dict, Callable[..., MCMC]]:
    module, kernel_defaults = _KERNELS[kernel_name]
    name = prefix + kernel_name
    defaults = {**_MCMC_COMMON, **kernel_defaults, **_TUNINGS[prefix]}

    def make(**chosen) -> MCMC:
        o = {**defaults, **chosen}
        kernel_options = {k: o[k] for k in kernel_defaults}
        if prefix == "":
            tuner = adaptation.fixed(module, step_size=o["step_size"], **kernel_options)
        elif prefix == "ds":
            tuner = adaptation.dual_averaging(module, target_acceptance_rate=o["target_acceptance_rate"],
                                              **kernel_options)
        else:
            tuner = adaptation.speed_measure(
                module, preconditioner=o["preconditioner"], target_acceptance_rate=o["target_acceptance_rate"],
                learning_rate=o["kernel_learning_rate"], initial_step_size=o["step_size"],
                stop_gradient_proposal_grad=o["stop_gradient_proposal_grad"], log_det=o["log_det"],
                **kernel_options)
            if o["dual_averaged_step_size"]:
                # Unjittered, as the training results in results/ were run (the default jitter guards long runs
                # on one fixed target, where fixed-L HMC can be periodic).
                tuner = adaptation.with_dual_averaged_step_size(tuner, step_size_jitter=0.0)
        return MCMC(tuner, num_mcmc_steps=o["num_mcmc_steps"], learning_rate=o["learning_rate"],
                    encoder_learning_rate=o["encoder_learning_rate"],
                    restart_tuner=bool(o.get("restart_dual_averaging", False)),
                    num_proposal_chains=o["num_proposal_chains"], name=name, options=tuple(o.items()))

    return defaults, make


def _dataclass_builder(cls, identity: dict, **defaults_override) -> tuple[dict, Callable[..., Any]]:
    """Options = the dataclass's fields except those that identify the method (``identity``, fixed)."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in identity}
    defaults.update(defaults_override)

    def make(**chosen):
        return cls(**{**defaults, **chosen}, **identity)

    return defaults, make


# Every name the command line accepts, mapped to (its options with their defaults, a builder).
AVAILABLE: dict[str, tuple[dict, Callable[..., Any]]] = {
    "vae": _dataclass_builder(ELBO, {"importance_weighted": False}),
    "iwae": _dataclass_builder(ELBO, {"importance_weighted": True}, num_samples=5),
    **{prefix + kernel: _mcmc_builder(prefix, kernel) for prefix in ("", "ds", "grad") for kernel in ("mala", "hmc")},
    "hvae": _dataclass_builder(HVAE, {}),
    "aiwae": _dataclass_builder(AIWAE, {}),
    "vcd": _dataclass_builder(VCD, {}),
    "hoffman": _dataclass_builder(Hoffman, {}),
}
METHODS = ("vae", "iwae", "mala", "hmc", "dsmala", "dshmc", "gradmala", "gradhmc", "hvae", "aiwae", "vcd", "hoffman")


def _check_name(name: str) -> None:
    if name not in AVAILABLE:
        close = difflib.get_close_matches(str(name), list(AVAILABLE), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {name!r}{hint}; valid methods: {', '.join(METHODS)}")


def options(name: str) -> dict[str, Any]:
    """The options method ``name`` takes, with their defaults.

    Examples
    --------
    >>> sorted(options("dshmc"))  # no preconditioner: dual averaging keeps C = I
    ['encoder_learning_rate', 'learning_rate', 'num_integration_steps', 'num_mcmc_steps', 'num_proposal_chains', 'restart_dual_averaging', 'target_acceptance_rate']
    """
    _check_name(name)
    return dict(AVAILABLE[name][0])


def select_options(name: str, options: dict) -> dict:
    """The entries of ``options`` that method ``name`` takes, for one options dict shared by several methods (a
    sweep, the command line). A key that no method takes is still an error: misspellings never pass silently.

    Raises
    ------
    TypeError
        For a key no registered method takes, naming the closest valid one.

    Examples
    --------
    >>> shared = {"num_mcmc_steps": 5, "num_integration_steps": 3, "preconditioner": "lower_triangular"}
    >>> select_options("dsmala", shared)
    {'num_mcmc_steps': 5}
    """
    _check_name(name)
    known = {key for defaults, _ in AVAILABLE.values() for key in defaults}
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TypeError(f"no method takes the option {key!r}{hint}")
    taken = AVAILABLE[name][0]
    return {key: value for key, value in options.items() if key in taken}


def build(name: str, **options) -> Method:
    """Build a method by name, with the options it takes.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones).
    TypeError
        For an option the method does not take, naming it and the closest valid option.

    Examples
    --------
    >>> build("gradmala", preconditioner="lower_triangular", num_mcmc_steps=5).name
    'gradmala'
    >>> build("gradhmc", preconditoner="lower_triangular")
    Traceback (most recent call last):
    ...
    TypeError: gradhmc takes no option 'preconditoner'; did you mean 'preconditioner'?

    The variant of gradHMC whose chains move with a dual-averaged multiple of the learnt step size (a wrapper
    around the speed-measure tuner, :func:`mcmcvae.adaptation.with_dual_averaged_step_size`):

    >>> method = build("gradhmc", preconditioner="lower_triangular", dual_averaged_step_size=True)
    >>> type(method.tuner).__name__
    'DualAveragedStepSize'
    """
    _check_name(name)
    defaults, make = AVAILABLE[name]
    unknown = [key for key in options if key not in defaults]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, list(defaults), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; it takes {', '.join(sorted(defaults))}"
        raise TypeError(f"{name} takes no option {key!r}{hint}")
    return make(**options)


def from_config(config: dict) -> Method:
    """Rebuild the method a ``config()`` (a run's ``config.json`` entry) describes.

    ``frozen_groups`` (recorded by :class:`mcmcvae.hierarchical.FreezeParams`) wraps the method again, so a
    reloaded run has the same frozen parameter groups. A config of a method built by hand (not by :func:`build`)
    cannot be rebuilt and raises a ``ValueError`` saying so.

    Examples
    --------
    >>> method = build("gradhmc", num_mcmc_steps=3)
    >>> from_config(method.config()).config() == method.config()
    True
    """
    config = dict(config)
    name = config.pop("name", None)
    groups = config.pop("frozen_groups", None)
    if name not in AVAILABLE:
        raise ValueError(f"cannot rebuild method {name!r}: only methods built by mcmcvae.methods.build (names "
                         f"{', '.join(METHODS)}) record what rebuilds them")
    if "tuning" in config or "importance_weighted" in config:
        config = _from_legacy_config(name, config)
    method = build(name, **config)
    if groups is not None:
        from mcmcvae.hierarchical.training import FreezeParams

        method = FreezeParams(method, tuple(groups))
    return method


def _from_legacy_config(name: str, config: dict) -> dict:
    """Options of a config written before methods took tuners (runs trained with earlier versions): the identity
    keys go, ``step_size_adaptation`` becomes ``dual_averaged_step_size``, and options the method never used
    (e.g. dshmc's recorded ``preconditioner``) are dropped."""
    config = {k: v for k, v in config.items() if k not in ("importance_weighted", "algorithm", "tuning")}
    if "step_size_adaptation" in config:
        config["dual_averaged_step_size"] = config.pop("step_size_adaptation") == "dual_averaging"
    taken = AVAILABLE[name][0]
    return {k: v for k, v in config.items() if k in taken}
