"""``benchmark``: median wall time of one training step for every registered method, its peers, and evaluation.

Setting: batch 100 of 28x28x1 binary images, d_z = 10, 200-200 MLPs, Bernoulli likelihood (the MNIST models of
Table 1). Each case runs in a fresh process, twice: pinned to one core (``taskset -c 0``, which also sizes
XLA:CPU's thread pool to the one schedulable CPU, with ``--xla_cpu_multi_thread_eigen=false`` for Eigen's
matrix products) and with every core. In its process a case is built and jitted once, run ``WARMUP`` times,
then timed ``REPEATS`` times with ``block_until_ready``; the median is reported in milliseconds, with the CPU
seconds the process used per wall second while timed (the cores it actually had) and the machine's load average
before and after. Ratios are formed only between cases of the same run and threading.

Peers timed in the same run: a plain jitted Haiku + Optax VAE step (the floor the library's ``vae`` should
match), MALA and HMC chains written with ``blackjax.mala``/``blackjax.hmc``, and importance-sampling evaluation as
written at 704ea25 (one jitted ``vmap`` of the single-point estimator per batch of 100, a host sync per batch)
beside today's. GPU figures, when ``results/benchmark-gpu.json`` exists, appear in a column of their own.

Run a single case by hand with ``python experiments/benchmark.py --case NAME``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import numpy as np

import mcmcvae as mv

DESCRIPTION = "median training-step time (ms) of every method and its peers, one core and all cores"
NAME = "benchmark"
WARMUP, REPEATS = 3, 30
QUICK_WARMUP, QUICK_REPEATS = 1, 3
# (command prefix, environment) of each threading; the one-core form needs util-linux's taskset
THREADINGS = {
    "1 core": (["taskset", "-c", "0"], {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"}),
    "all cores": ([], {}),
}
# importance-sampling cases: each implementation is compiled once with the parameters as arguments and timed in
# steady state at two image counts; the per-image cost is the difference (fixed per-call costs cancel). (The
# library's functions compile afresh on every call, by design: a cached trace would keep the parameters it closed
# over; timing that compile, as this benchmark once did, left the per-image figure to compile-time jitter.)
IS_IMAGES, IS_SAMPLES = (100, 300), 500
IS_WARMUP, IS_REPEATS = 1, 5
QUICK_IS_IMAGES, QUICK_IS_SAMPLES = (4,), 20
FULL_TEST_SET, FULL_SAMPLES = 10_000, 10_000


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


def _posterior_setup():
    """The VAE posterior of a batch of 100 images: shared decoder parameters, one x per chain."""
    import jax

    model = _model()
    params = model.init(jax.random.key(0))
    images = jax.numpy.asarray(_images())
    z0 = model.encode(params, images)[0]
    return model, params, images, z0


def chain_case(algorithm: str, implementation: str, num_steps: int = 10, num_integration_steps: int = 2):
    """K kernel steps for 100 chains on the VAE posterior, ``vmap`` over chains, ``lax.scan`` over steps.

    ``implementation`` is ``"mcmcvae"`` (our kernel with C = I) or ``"blackjax"`` (``blackjax.mala`` /
    ``blackjax.hmc`` with an identity inverse mass matrix, written the obvious way).
    """
    def build():
        import blackjax
        import jax
        import jax.numpy as jnp

        from mcmcvae import kernels

        model, params, images, z0 = _posterior_setup()
        h = 0.05

        def logdensity(x):
            return lambda z: model.log_joint(params, x, z)

        if implementation == "mcmcvae":
            module = kernels.hmc if algorithm == "hmc" else kernels.mala
            kernel = (kernels.hmc.build_kernel(num_integration_steps) if algorithm == "hmc"
                      else kernels.mala.build_kernel())
            precond = kernels.Preconditioner.diagonal(z0.shape[-1], step_size=h)
            init = lambda z, x: module.init(z, logdensity(x))  # noqa: E731
            step = lambda k, s, x: kernel(k, s, logdensity(x), precond)[0]  # noqa: E731
        else:
            def make(x):
                if algorithm == "hmc":
                    return blackjax.hmc(logdensity(x), h, jnp.ones(z0.shape[-1]), num_integration_steps)
                return blackjax.mala(logdensity(x), h**2 / 2)
            init = lambda z, x: make(x).init(z)  # noqa: E731
            step = lambda k, s, x: make(x).step(k, s)[0]  # noqa: E731

        @jax.jit
        def run(key, z):
            states = jax.vmap(init)(z, images)

            def body(states, k):
                keys = jax.random.split(jax.random.fold_in(key, k), z.shape[0])
                return jax.vmap(step)(keys, states, images), None

            return jax.lax.scan(body, states, jnp.arange(num_steps))[0].position

        carry = {"i": 0}

        def call():
            carry["i"] += 1
            return run(jax.random.key(carry["i"]), z0)

        return call
    return build


def adaptation_case(algorithm: str, preconditioner: str, adapt: bool, num_integration_steps: int = 2):
    """One step of 100 chains on the VAE posterior: a plain kernel step, or a speed-measure adaptation step."""
    def build():
        import jax

        import mcmcvae as mv

        model, params, images, z0 = _posterior_setup()
        module = mv.kernels.hmc if algorithm == "hmc" else mv.kernels.mala
        options = {"num_integration_steps": num_integration_steps} if algorithm == "hmc" else {}
        tuner = mv.adaptation.speed_measure(module, preconditioner=preconditioner, **options)

        def log_joint(z, context):
            return model.log_joint(context[0], context[1], z)

        context, axes = (params, images), (None, 0)
        chains = tuner.init_chains(z0, log_joint, context, context_axes=axes)
        state = tuner.init(z0.shape[-1])
        kernel = mv.kernels.hmc.build_kernel(num_integration_steps) if algorithm == "hmc" else mv.kernels.mala.build_kernel()

        @jax.jit
        def adapt_step(key, chains, state):
            return tuner.update(key, state, chains, log_joint, context, context_axes=axes)[:2]

        @jax.jit
        def plain_step(key, chains, state):
            precond = tuner.final(state)
            keys = jax.random.split(key, z0.shape[0])
            step = jax.vmap(lambda k, c, x: kernel(k, c, lambda z: model.log_joint(params, x, z), precond)[0])
            return step(keys, chains, images), state

        fn = adapt_step if adapt else plain_step
        carry = {"chains": chains, "state": state, "i": 0}

        def call():
            carry["i"] += 1
            carry["chains"], carry["state"] = fn(jax.random.key(carry["i"]), carry["chains"], carry["state"])
            return carry["chains"].position

        return call
    return build


def _importance_704ea25(rng_key, log_joint_fn, *, num_samples, batch_size=100, variance_factor=1.0):
    """``dataset_importance_estimate`` as written at 704ea25, as ``run(params, images, loc, scale) -> log p(x_i)``:
    per batch, one jitted ``vmap`` of the single-point estimator (a ``lax.scan`` over chunks of
    ``10000 / batch_size`` samples inside), then a host sync. ``log_joint_fn(params, x, z)``; the parameters are an
    argument, so the batch function compiles once."""
    import math

    import jax
    import jax.numpy as jnp

    from mcmcvae.batching import map_padded_batches
    from mcmcvae.evaluate.importance import importance_estimate

    chunk_size = min(num_samples, max(1, 10_000 // batch_size))
    std_factor = math.sqrt(variance_factor)

    @jax.jit
    def batch_estimate(params, indices, images, loc, scale):
        def point_estimate(index, x, loc, scale):
            return importance_estimate(jax.random.fold_in(rng_key, index), lambda z: log_joint_fn(params, x, z),
                                       loc, scale * std_factor, num_samples, chunk_size=chunk_size).log_likelihood

        return jax.vmap(point_estimate)(indices, images, loc, scale)

    def run(params, images, loc, scale):
        return map_padded_batches(lambda _, indices, batch: batch_estimate(params, jnp.asarray(indices), *batch),
                                  (images, loc, scale), batch_size)

    return run


def _log_joint_704ea25(model):
    """``log p(x, z)`` of a standard-normal-prior Bernoulli VAE as ``model.log_joint`` computed it at 704ea25: the
    prior's log density plus NumPyro's ``Bernoulli(logits=decoded).to_event(3).log_prob(x)``."""
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist

    if model.prior != "standard" or model.likelihood != "bernoulli":
        raise ValueError("the 704ea25 log-joint is written for a standard prior and a Bernoulli likelihood")

    def log_joint(params, x, z):
        decoded = model.decode(params, z[None])[0]
        return (jnp.sum(jax.scipy.stats.norm.logpdf(z))
                + dist.Bernoulli(logits=decoded).to_event(3).log_prob(x))

    return log_joint


def importance_case(implementation: str, num_images: int, num_samples: int):
    """Importance-sampling ``log p(x)`` of ``num_images`` images with ``num_samples`` samples each, tau = 1.5.

    ``implementation`` is ``"now"`` (:func:`mcmcvae.evaluate.importance.dataset_importance_estimate` on
    ``model.log_joint``) or ``"704ea25"`` (the same estimator as written then, :func:`_importance_704ea25`, on
    ``log p(x, z)`` as the model computed it then, :func:`_log_joint_704ea25`: NumPyro's guarded
    ``Bernoulli(logits).log_prob``); the same keys give the same per-image values to float rounding, so the two
    time the same work.
    """
    def build():
        import jax
        import jax.numpy as jnp

        import mcmcvae as mv

        model = _model()
        params = model.init(jax.random.key(0))
        images = jnp.asarray(_images(num_images))
        loc, scale = model.encode(params, images)
        if implementation == "now":
            @jax.jit
            def run(params, images, loc, scale):
                return mv.evaluate.dataset_importance_estimate(
                    jax.random.key(1), lambda data, z: model.log_joint(params, data[0], z),
                    lambda data: (data[1], data[2]), (images, loc, scale), num_samples=num_samples,
                    batch_size=100, variance_factor=1.5).log_likelihood
        else:
            run = _importance_704ea25(jax.random.key(1), _log_joint_704ea25(model), num_samples=num_samples,
                                      batch_size=100, variance_factor=1.5)

        def call():
            return run(params, images, loc, scale)

        return call
    return build


def cases(*, quick: bool = False) -> dict:
    """Every timed case: name -> (builder, description, warm-up calls, timed calls, work units per call)."""
    from mcmcvae import methods

    warmup, repeats = (QUICK_WARMUP, QUICK_REPEATS) if quick else (WARMUP, REPEATS)
    out = {"reference: plain Haiku VAE": (plain_haiku_vae_case(), "hand-written jitted Haiku + Optax ELBO step")}
    out["vae"] = (method_case("vae"), "ELBO, 1 sample")
    out["iwae"] = (method_case("iwae", num_samples=5), "IWAE bound, k = 5")
    for name in ("mala", "hmc", "dsmala", "dshmc"):
        out[name] = (method_case(name), "Algorithm 1, K = 10" + (", L = 2" if "hmc" in name else ""))
    for name in ("gradmala", "gradhmc"):
        for kind, suffix in (("diagonal", "diag"), ("lower_triangular", "lt")):
            out[f"{name}-{suffix}"] = (method_case(name, preconditioner=kind),
                                       f"Algorithm 1, K = 10{', L = 2' if 'hmc' in name else ''}, {kind} C")
    for name in methods.AVAILABLE:
        if not any(key == name or key.startswith(name + "-") for key in out):
            out[name] = (method_case(name), "defaults")
    for algorithm in ("mala", "hmc"):
        for implementation in ("mcmcvae", "blackjax"):
            out[f"chain: {algorithm} ({implementation})"] = (
                chain_case(algorithm, implementation),
                "10 steps x 100 chains on the VAE posterior, vmap + lax.scan, C = I" + (", L = 2" if algorithm == "hmc" else ""))
    for algorithm in ("mala", "hmc"):
        for kind, suffix in (("diagonal", "diag"), ("lower_triangular", "lt")):
            for adapt in (False, True):
                what = "speed-measure adaptation step" if adapt else "plain kernel step"
                out[f"{'adapt' if adapt else 'step'}: {algorithm}-{suffix}"] = (
                    adaptation_case(algorithm, kind, adapt), f"one {what}, 100 chains" + (", L = 2" if algorithm == "hmc" else ""))
    out = {name: (build, what, warmup, repeats) for name, (build, what) in out.items()}
    counts, samples = (QUICK_IS_IMAGES, QUICK_IS_SAMPLES) if quick else (IS_IMAGES, IS_SAMPLES)
    for implementation in ("704ea25", "now"):
        for images in counts:
            out[_is_case_name(implementation, images)] = (
                importance_case(implementation, images, samples),
                f"importance sampling, {images} images x S = {samples}, tau = 1.5, compiled once",
                IS_WARMUP, 1 if quick else IS_REPEATS)
    return out


def _is_case_name(implementation: str, images: int) -> str:
    return f"evaluate: IS ({implementation}), {images} images"


# The smoke test times one case of each kind.
QUICK_CASES = ("reference: plain Haiku VAE", "vae", "mala", "chain: mala (mcmcvae)", "chain: mala (blackjax)",
               *(_is_case_name(i, n) for i in ("704ea25", "now") for n in QUICK_IS_IMAGES))


def time_case(build, warmup: int, repeats: int) -> dict:
    """Median milliseconds of one call after ``warmup`` calls, and the CPU seconds per wall second while timed."""
    import jax

    call = build()
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - tic)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"ms": 1e3 * float(np.median(times)), "cores_used": cpu / wall}


def time_in_subprocess(names: list[str], threading: str, quick: bool) -> dict:
    """Run cases in a fresh process under ``threading`` (a key of :data:`THREADINGS`); name -> timing and loads.

    The full budget gives every case its own process; the quick one runs its few cases in one process per
    threading (one start of Python and JAX instead of several).
    """
    prefix, extra_env = THREADINGS[threading]
    env = dict(os.environ)
    for key, value in extra_env.items():
        env[key] = f"{env[key]} {value}" if env.get(key) else value
    library = str(pathlib.Path(mv.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (library, env.get("PYTHONPATH")) if p)
    command = [*prefix, sys.executable, str(pathlib.Path(__file__).resolve())]
    for name in names:
        command += ["--case", name]
    if quick:
        command.append("--quick")
    load_before = os.getloadavg()[0]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark cases {names} ({threading}) failed:\n{done.stderr[-3000:]}")
    results = [json.loads(line) for line in done.stdout.strip().splitlines()[-len(names):]]
    load_after = os.getloadavg()[0]
    return {name: {**result, "load_before": load_before, "load_after": load_after}
            for name, result in zip(names, results, strict=True)}


def _gpu_figures(out_dir) -> dict:
    """``results/benchmark-gpu.json``'s step times by case name, when that file exists (``{}`` otherwise)."""
    path = pathlib.Path(out_dir if out_dir is not None else "results") / "benchmark-gpu.json"
    if not path.exists():
        return {}
    return {r["method"]: r for r in json.loads(path.read_text()) if r.get("metric") == "step_time_ms"}


def _is_per_image_ms(ms: dict) -> dict:
    """Per-image milliseconds of each IS implementation from its two image counts (``{}`` in the quick form)."""
    if len(IS_IMAGES) != 2 or not all(_is_case_name(i, n) in ms for i in ("704ea25", "now") for n in IS_IMAGES):
        return {}
    small, large = IS_IMAGES
    return {i: (ms[_is_case_name(i, large)] - ms[_is_case_name(i, small)]) / (large - small)
            for i in ("704ea25", "now")}


def _notes(ms: dict, threading: str) -> list[str]:
    """The ratios between cases of one run and one threading (``ms``: case name -> milliseconds)."""
    notes = []
    if "vae" in ms and "reference: plain Haiku VAE" in ms:
        notes.append(f"- `vae` takes {ms['vae'] / ms['reference: plain Haiku VAE']:.2f}x the hand-written Haiku + "
                     "Optax step.")
    targets = {"gradmala-diag": 4, "gradmala-lt": 6, "gradhmc-diag": 10, "gradhmc-lt": 10}
    for name in ("mala", "hmc", "gradmala-diag", "gradmala-lt", "gradhmc-diag", "gradhmc-lt"):
        if name in ms and "vae" in ms:
            target = f" (target: at most {targets[name]}x)" if name in targets else ""
            notes.append(f"- `{name}` step = {ms[name] / ms['vae']:.1f}x a `vae` step{target}.")
    for algorithm in ("mala", "hmc"):
        ours, theirs = ms.get(f"chain: {algorithm} (mcmcvae)"), ms.get(f"chain: {algorithm} (blackjax)")
        if ours and theirs:
            notes.append(f"- {algorithm.upper()} chains: ours take {ours / theirs:.2f}x the time of the same chains "
                         f"written with `blackjax.{algorithm}` (target: at most 1.0x).")
    for kind in ("mala-diag", "mala-lt", "hmc-diag", "hmc-lt"):
        plain, adapt = ms.get(f"step: {kind}"), ms.get(f"adapt: {kind}")
        if plain and adapt:
            notes.append(f"- A speed-measure adaptation step for {kind} costs {adapt / plain:.1f}x a plain kernel "
                         "step.")
    per_image = _is_per_image_ms(ms)
    if per_image:
        old, new = per_image["704ea25"], per_image["now"]
        minutes = {k: v * (FULL_SAMPLES / IS_SAMPLES) * FULL_TEST_SET / 6e4 for k, v in per_image.items()}
        notes.append(f"- Importance sampling, per image at S = {IS_SAMPLES} (difference of the steady-state "
                     f"{IS_IMAGES[1]}- and {IS_IMAGES[0]}-image calls, compiled once): 704ea25 {old:.1f} ms, now {new:.1f} ms, "
                     f"{old / new:.2f}x as fast (target: at least 2x). Extrapolated linearly to S = {FULL_SAMPLES} on "
                     f"the {FULL_TEST_SET} MNIST test images: 704ea25 {minutes['704ea25']:.0f} min, now "
                     f"{minutes['now']:.0f} min per model.")
    return [f"**{threading}.**", *notes] if notes else []


def run(*, quick: bool = False, out_dir=None):
    """Time every case (``quick``: :data:`QUICK_CASES`, few repeats) at both threadings; write the results."""
    all_cases = cases(quick=quick)
    selected = [name for name in all_cases if not quick or name in QUICK_CASES]
    load_start = os.getloadavg()
    rows, measured = [], {}
    for threading in THREADINGS:
        groups = [selected] if quick else [[name] for name in selected]
        for group in groups:
            measured.update({(name, threading): result
                             for name, result in time_in_subprocess(group, threading, quick).items()})
        for name in selected:
            _, description, warmup, repeats = all_cases[name]
            result = measured[name, threading]
            rows.append(mv.results.row(
                NAME, "mnist", name, "step_time_ms", result["ms"], None, 1, description=description,
                threading=threading, warmup=warmup, repeats=repeats, cores_used=round(result["cores_used"], 2),
                load_before=result["load_before"], load_after=result["load_after"], machine=mv.results.machine()))
    load_end = os.getloadavg()
    gpu = _gpu_figures(out_dir)
    header = ["case", "what", "1 core: ms", "all cores: ms", "cores used (1 / all)", "load before -> after (all)"]
    if gpu:
        header.append(f"GPU: ms ({next(iter(gpu.values())).get('machine', 'GPU')})")
    body = []
    for name in selected:
        one, many = measured[name, "1 core"], measured[name, "all cores"]
        line = [name, all_cases[name][1], f"{one['ms']:.2f}", f"{many['ms']:.2f}",
                f"{one['cores_used']:.2f} / {many['cores_used']:.2f}",
                f"{many['load_before']:.1f} -> {many['load_after']:.1f}"]
        if gpu:
            line.append(f"{gpu[name]['value']:.2f}" if name in gpu else "")
        body.append(line)
    notes = []
    for threading in THREADINGS:
        notes += _notes({name: measured[name, threading]["ms"] for name in selected}, threading) + [""]
    load = (f"load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in load_start)} at the start and "
            f"{', '.join(f'{v:.1f}' for v in load_end)} at the end, on {os.cpu_count()} CPUs")
    warmup, repeats = (QUICK_WARMUP, QUICK_REPEATS) if quick else (WARMUP, REPEATS)
    markdown = f"""# benchmark: training-step time

Regenerate with `python experiments/run.py benchmark`. Each case runs in a fresh process, pinned to one core
(`taskset -c 0`, `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false`) and with all cores; median of {repeats} timed
calls after {warmup} warm-up calls (importance sampling: median of {IS_REPEATS} after {IS_WARMUP}), batch 100, 28x28x1
binary images, d_z = 10, 200-200 MLPs, Bernoulli likelihood. "Cores used" is the process's CPU seconds per wall
second while timed: on a loaded machine it falls below what the threading allows. Ratios below compare cases of
this run at one threading only; compare rows of one file, not files of different runs.
{'**Quick run: too few repeats to mean anything.**' if quick else ''}

**Machine.** {mv.results.machine()}; revision {mv.results.git_revision()}; {load}.

{mv.results.markdown_table(header, body)}

{chr(10).join(notes)}
"""
    return mv.results.write_results(NAME, rows, markdown, out_dir)


def main(argv=None) -> int:
    """``--case NAME [--case NAME ...] [--quick]``: time cases in this process, one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True,
                        help="a case name, e.g. 'gradhmc-diag' (repeat to time several, one JSON line each)")
    parser.add_argument("--quick", action="store_true", help="the quick budget's repeats and sizes")
    args = parser.parse_args(argv)
    all_cases = cases(quick=args.quick)
    for name in args.case:
        if name not in all_cases:
            parser.error(f"unknown case {name!r}; valid cases: {', '.join(all_cases)}")
    for name in args.case:
        build, _, warmup, repeats = all_cases[name]
        print(json.dumps(time_case(build, warmup, repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
