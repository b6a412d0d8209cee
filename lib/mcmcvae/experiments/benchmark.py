"""``benchmark``: median wall time of one training step for every registered method, and reference rows.

Setting: batch 100 of 28x28x1 binary images, d_z = 10, 200-200 MLPs, Bernoulli likelihood (the MNIST models of
Table 1). Each case is jitted once, run ``WARMUP`` times, then timed ``REPEATS`` times with
``block_until_ready``; the median is reported in milliseconds. A plain jitted Haiku + Optax VAE step, written
without NumPyro or the method interface, is timed beside them as the floor the library's ``vae`` should match.
"""

from __future__ import annotations

import time

import numpy as np

from mcmcvae.experiments import common

DESCRIPTION = "median training-step time (ms) of every method, batch 100, MNIST-sized MLP VAE"
NAME = "benchmark"
WARMUP, REPEATS = 5, 50
QUICK_WARMUP, QUICK_REPEATS = 1, 3


def _model():
    import mcmcvae as mv

    return mv.models.VAE(image_shape=(28, 28, 1), latent_dim=10, hidden_sizes=(200, 200))


def _images(batch_size=100):
    rng = np.random.default_rng(0)
    return (rng.random((batch_size, 28, 28, 1)) < 0.2).astype(np.float32)


def method_case(name: str, **options):
    """A timed case: one ``method.step`` on a batch of 100, parameters and state donated as in training."""
    def build():
        import jax

        import mcmcvae as mv

        model, method = _model(), mv.methods.build(name, **options)
        params = model.init(jax.random.key(0))
        state = method.init(jax.random.key(1), model, params)
        images = jax.numpy.asarray(_images())
        step = jax.jit(lambda k, p, s, x: method.step(k, model, p, s, x)[:2], donate_argnums=(1, 2))
        carry = {"params": params, "state": state, "i": 0}

        def call():
            carry["i"] += 1
            carry["params"], carry["state"] = step(jax.random.key(carry["i"]), carry["params"], carry["state"], images)
            return carry["params"]

        return call
    return build


def plain_haiku_vae_case():
    """The floor: a minimal jitted Haiku + Optax VAE step (same networks, analytic-free one-sample ELBO)."""
    def build():
        import haiku as hk
        import jax
        import jax.numpy as jnp
        import optax

        def forward(x, eps):
            h = hk.nets.MLP([200, 200], activate_final=True)(x.reshape(x.shape[0], -1))
            loc, raw = hk.Linear(10)(h), hk.Linear(10)(h)
            scale = jax.nn.softplus(raw) + 1e-4
            z = loc + scale * eps
            logits = hk.nets.MLP([200, 200, 784])(z)
            log_px = -jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x.reshape(x.shape[0], -1)), -1)
            log_pz = jnp.sum(jax.scipy.stats.norm.logpdf(z), -1)
            log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, loc, scale), -1)
            return -jnp.mean(log_px + log_pz - log_q)

        net = hk.without_apply_rng(hk.transform(forward))
        images = jnp.asarray(_images())
        params = net.init(jax.random.key(0), images, jnp.zeros((100, 10)))
        opt = optax.adam(1e-3)

        @jax.jit
        def step(key, params, opt_state):
            grads = jax.grad(net.apply)(params, images, jax.random.normal(key, (100, 10)))
            updates, opt_state = opt.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        carry = {"params": params, "opt": opt.init(params), "i": 0}

        def call():
            carry["i"] += 1
            carry["params"], carry["opt"] = step(jax.random.key(carry["i"]), carry["params"], carry["opt"])
            return carry["params"]

        return call
    return build


def cases() -> dict:
    """Every timed case: name -> (builder, description). Methods register here as they are implemented."""
    from mcmcvae import methods

    out = {"reference: plain Haiku VAE": (plain_haiku_vae_case(), "hand-written jitted Haiku + Optax ELBO step")}
    out["vae"] = (method_case("vae"), "ELBO, 1 sample")
    out["iwae"] = (method_case("iwae", num_samples=5), "IWAE bound, k = 5")
    for name in methods.AVAILABLE:
        if name not in out:
            out[name] = (method_case(name), "K = 10 kernel steps")
    return out


def time_case(build, warmup: int, repeats: int) -> float:
    """Median milliseconds of one call after ``warmup`` calls."""
    import jax

    call = build()
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - tic)
    return 1e3 * float(np.median(times))


def run(*, quick: bool = False, out_dir=None):
    warmup, repeats = (QUICK_WARMUP, QUICK_REPEATS) if quick else (WARMUP, REPEATS)
    rows, body = [], []
    for name, (build, description) in cases().items():
        ms = time_case(build, warmup, repeats)
        rows.append(common.row(NAME, "mnist", name, "step_time_ms", ms, None, 1, description=description,
                               repeats=repeats, machine=common.machine()))
        body.append([name, description, f"{ms:.2f}"])
    vae = next(r["value"] for r in rows if r["method"] == "vae")
    floor = next(r["value"] for r in rows if r["method"].startswith("reference"))
    markdown = f"""# benchmark: training-step time

Regenerate with `mcmcvae experiment benchmark`. Median of {repeats} timed steps after {warmup} warm-up steps,
batch 100, 28x28x1 binary images, d_z = 10, 200-200 MLPs, Bernoulli likelihood.
{'**Quick run: too few repeats to mean anything.**' if quick else ''}

**Machine.** {common.machine()}; revision {common.git_revision()}.

{common.markdown_table(['case', 'what', 'ms per step'], body)}

The library's `vae` step takes {vae / floor:.2f}x the hand-written Haiku floor: the NumPyro model, the
per-image `vmap` of `log p(x, z)` and the non-finite-gradient guard around Adam cost little once compiled, since
XLA fuses them into the same matrix products.
"""
    return common.write_results(NAME, rows, markdown, out_dir)
