"""Evaluation: importance-sampling and AIS log-likelihoods, Inception features and KID.

Names load on first use so that evaluation code that needs no Inception weights never imports them.
"""

from importlib import import_module as _import_module

_NAMES = {
    "importance_log_likelihood": "importance",
    "dataset_log_likelihood": "importance",
    "bits_per_dim": "importance",
    "importance_estimate": "importance",
    "dataset_importance_estimate": "importance",
    "active_units": "diagnostics",
    "log_k_bound": "diagnostics",
    "bound_diagnostics": "diagnostics",
    "variational_gap": "diagnostics",
    "generalisation_gap": "diagnostics",
    "chain_diagnostics": "diagnostics",
    "ais_log_likelihood": "ais",
    "ais_log_weights": "ais",
    "dataset_ais_log_likelihood": "ais",
    "annealing_schedule": "ais",
    "test_log_likelihood": "runs",
    "method_proposals": "runs",
    "inception_features": "inception",
    "generate_images": "generative",
    "model_kid": "generative",
    "kid": "mmd",
    "polynomial_kernel": "mmd",
    "unbiased_mmd2": "mmd",
}


def __getattr__(name):
    if name in _NAMES:
        value = getattr(_import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mcmcvae.evaluate' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_NAMES))
