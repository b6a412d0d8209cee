"""``profile-step``: where the flops of one gradMALA / gradHMC training step go, and the exact log-det crossover.

Part 1 walks the jaxpr of one jitted ``method.step`` (batch 100 of 28x28x1 images, d_z = 10, 200-200 MLPs,
K = 10, L = 2, diagonal C; gradHMC with its default ``log_det="auto"``, exact at d = 10, and with the roulette) and
adds up the floating-point operations of every matrix product
(``2 * output size * contracted size``), multiplied by the length of every enclosing ``lax.scan``, grouped by
the control-flow region they run in. The bodies of ``while`` loops run a data-dependent number of times (the
Russian roulette's ``max(N, 4)`` Hessian-vector products); they are counted once per iteration and said so. Each
figure is also given in *decoder passes*: multiples of one forward pass of the decoder over the batch, the unit in
which redundant work shows. Host callbacks in the program (which would force a host sync) are counted, and
XLA's own estimate of the compiled program (``compile().cost_analysis()``, which counts a ``while`` body once)
is given beside the walk.

Part 2 times, for an MLP decoder (d -> 200 -> 200 -> 784, Bernoulli) and 100 chains, the value and gradient (with
respect to h and C) of the log-determinant term ``log det(I - c h^2 C^T Hess U C)`` computed exactly
(:func:`mcmcvae.adaptation.logdet.exact_log_det_identity_minus`: d batched Hessian-vector products and a
factorisation) and by the roulette estimator (:func:`mcmcvae.adaptation.logdet.log_det_identity_minus` with
``N = 4``, its usual length: ``max(N, 4) + 2`` sequential products), for growing d; the crossover is the first d
at which the exact term is the slower. A third form computes the roulette with the gradient linearised once per
chain (``jax.linearize``) instead of a fresh ``jvp`` of ``grad`` per product, to size that proposed change.
"""

from __future__ import annotations

import functools
import math
import time

import numpy as np

import mcmcvae as mv

DESCRIPTION = "flop accounting of one gradMALA/gradHMC step and the exact-vs-roulette log-det crossover in d"
NAME = "profile-step"
BATCH, LATENT, HIDDEN, DATA = 100, 10, (200, 200), 784
CROSSOVER_DIMS, QUICK_CROSSOVER_DIMS = (2, 4, 8, 16, 24, 32, 48, 64), (2, 4)
REPEATS, QUICK_REPEATS = 20, 2
_CALLBACKS = ("pure_callback", "io_callback", "debug_callback", "callback")


def _dot_flops(eqn) -> float:
    (contracting, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contracting)


def _sub_jaxprs(eqn):
    """The jaxprs an equation calls, with how often each runs per call (None: data-dependent)."""
    import jax

    name, params = eqn.primitive.name, eqn.params
    if name == "scan":
        return [(params["jaxpr"], params["length"], f"scan({params['length']})")]
    if name == "while":
        return [(params["body_jaxpr"], None, "while"), (params["cond_jaxpr"], None, "while")]
    if name == "cond":
        return [(branch, 1, "cond") for branch in params["branches"]]
    out = []
    for value in params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr | jax.extend.core.Jaxpr):
                out.append((item, 1, None))
    return out


def flop_accounting(jaxpr, multiplier: float = 1.0, region: str = "top level", table=None) -> dict:
    """``{region: [matmul flops, number of matmuls, host callbacks]}`` of a (closed) jaxpr, scan lengths applied."""
    table = {} if table is None else table
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        entry = table.setdefault(region, [0.0, 0, 0])
        if eqn.primitive.name == "dot_general":
            entry[0] += multiplier * _dot_flops(eqn)
            entry[1] += 1
        elif any(c in eqn.primitive.name for c in _CALLBACKS):
            entry[2] += 1
        for sub, times, label in _sub_jaxprs(eqn):
            inner = region if label is None else (label if region == "top level" else f"{region} > {label}")
            flop_accounting(sub, multiplier * (times or 1), inner, table)
    return table


def _decoder_pass_flops(latent_dim: int = LATENT, batch: int = BATCH) -> float:
    sizes = (latent_dim, *HIDDEN, DATA)
    return 2.0 * batch * sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def _step_setup(name: str, **options):
    import jax
    import jax.numpy as jnp

    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=LATENT, hidden_sizes=HIDDEN)
    method = mv.methods.build(name, preconditioner="diagonal", **options)
    params = model.init(jax.random.key(0))
    state = method.init(jax.random.key(1), model, params)
    images = jnp.asarray((np.random.default_rng(0).random((BATCH, 28, 28, 1)) < 0.2).astype(np.float32))

    def step(key, params, state):
        return method.step(key, model, params, state, images)[:2]

    return step, (jax.random.key(2), params, state)


def _median_ms(fn, args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return 1e3 * float(np.median(times))


def profile_step(name: str, repeats: int, **options) -> dict:
    """The flop accounting, XLA's cost analysis and the median step time of ``name`` (a method name)."""
    import jax

    step, args = _step_setup(name, **options)
    table = flop_accounting(jax.make_jaxpr(step)(*args))
    compiled = jax.jit(step).lower(*args).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    return {"regions": table, "xla_flops": float(cost.get("flops", float("nan"))),
            "step_ms": _median_ms(jax.jit(step), args, repeats)}


def _log_det_setup(dim: int, form: str):
    """Value and (h, C)-gradient of the log-det term for 100 chains of a d-dimensional MLP VAE posterior.

    ``form`` is ``"exact"``, ``"roulette"`` (each product a fresh ``jvp`` of ``grad``, as the speed measure computes
    it: the gradient at the fixed position is recomputed for every product) or ``"roulette, linearized"`` (the
    gradient linearised once per chain with ``jax.linearize``, each product only the linear map).
    """
    import jax
    import jax.numpy as jnp

    from mcmcvae.adaptation import logdet

    model = mv.models.VAE(image_shape=(28, 28, 1), latent_dim=dim, hidden_sizes=HIDDEN)
    params = model.init(jax.random.key(0))
    images = jnp.asarray((np.random.default_rng(0).random((BATCH, 28, 28, 1)) < 0.2).astype(np.float32))
    positions = 0.1 * jax.random.normal(jax.random.key(1), (BATCH, dim))
    curvature = (2**2 - 1) / 6.0  # L = 2

    def term(kernel_params, key):
        def one(x, position, probe):
            grad_potential = jax.grad(lambda z: -model.log_joint(params, x, z))
            position = jax.lax.stop_gradient(position)
            if form == "roulette, linearized":
                hessian_product = jax.linearize(grad_potential, position)[1]
            else:
                def hessian_product(u):
                    return jax.jvp(grad_potential, (position,), (u,))[1]

            def matvec(theta, v):
                log_h, scale = theta
                return curvature * jnp.exp(2 * log_h) * scale * hessian_product(scale * v)

            if form == "exact":
                return logdet.exact_log_det_identity_minus(matvec, kernel_params, dim).log_det
            # as the speed measure calls it: the radius's product forward only (its gradient is formed from it)
            return logdet.log_det_identity_minus(probe, 4, matvec, kernel_params, differentiable_radius=False).log_det

        probes = jax.random.rademacher(key, (BATCH, dim), dtype=jnp.float32)
        return jnp.mean(jax.vmap(one)(images, positions, probes))

    kernel_params = (jnp.log(jnp.float32(0.05)), jnp.ones(dim))
    return jax.jit(jax.value_and_grad(term)), (kernel_params, jax.random.key(3))


FORMS = ("exact", "roulette", "roulette, linearized")


def crossover(dims, repeats: int) -> list[tuple]:
    """``(d, ms of each of FORMS)`` for each d: value and gradient of the log-det term, 100 chains."""
    return [(dim, *(_median_ms(*_log_det_setup(dim, form), repeats) for form in FORMS)) for dim in dims]


def run(*, quick: bool = False, out_dir=None):
    import os

    repeats = QUICK_REPEATS if quick else REPEATS
    load_start = os.getloadavg()
    rows, sections = [], []
    unit = _decoder_pass_flops()
    # gradhmc twice: log_det="auto" (the default: exact at d = 10) and the roulette estimator
    for name, options, label in (("gradmala", {}, "gradmala-diag"), ("gradhmc", {}, "gradhmc-diag"),
                                 ("gradhmc", {"log_det": "stochastic"}, "gradhmc-diag, log_det=stochastic")):
        result = profile_step(name, repeats, **options)
        total = sum(v[0] for v in result["regions"].values())
        body = []
        for region, (flops, count, callbacks) in sorted(result["regions"].items(), key=lambda kv: -kv[1][0]):
            if count == 0 and callbacks == 0:
                continue
            per = " per iteration" if "while" in region else ""
            body.append([region, count, f"{flops / 1e9:.3f}{per}", f"{flops / unit:.1f}{per}",
                         f"{100 * flops / total:.0f}%", callbacks])
            rows.append(mv.results.row(NAME, "mnist", f"{label}: {region}", "matmul_gflops", flops / 1e9,
                                       decoder_passes=flops / unit, matmuls=count, host_callbacks=callbacks))
        rows.append(mv.results.row(NAME, "mnist", label, "step_time_ms", result["step_ms"], repeats=repeats,
                                   machine=mv.results.machine()))
        callbacks = sum(v[2] for v in result["regions"].values())
        sections.append(
            f"### {label} (K = 10{', L = 2' if name == 'gradhmc' else ''})\n\n"
            f"Median step {result['step_ms']:.1f} ms; matmul flops by the walk {total / 1e9:.2f} GFLOP "
            f"({total / unit:.0f} decoder passes, while bodies once); XLA's cost analysis "
            f"{result['xla_flops'] / 1e9:.2f} GFLOP; host callbacks in the program: {callbacks}.\n\n"
            + mv.results.markdown_table(["region", "matmuls", "GFLOP", "decoder passes", "share", "host callbacks"],
                                        body))
    points = crossover(QUICK_CROSSOVER_DIMS if quick else CROSSOVER_DIMS, repeats)
    for dim, *times in points:
        for form, ms in zip(FORMS, times, strict=True):
            rows.append(mv.results.row(NAME, "mlp-vae", f"log-det {form}, d = {dim}", "step_time_ms", ms,
                                       repeats=repeats))
    slower = [dim for dim, exact, roulette, _ in points if exact > roulette]
    verdict = (f"the exact term is slower than the roulette from d = {slower[0]} on (of the dimensions timed)"
               if slower else f"the exact term is faster at every d timed (up to {points[-1][0]})")
    table = mv.results.markdown_table(
        ["d", "exact: ms", "roulette (N = 4): ms", "roulette, linearized: ms", "exact / roulette",
         "linearized / roulette"],
        [[d, f"{e:.1f}", f"{r:.1f}", f"{li:.1f}", f"{e / r:.2f}", f"{li / r:.2f}"] for d, e, r, li in points])
    markdown = f"""# profile-step: where one speed-measure training step spends its work

Regenerate with `python experiments/run.py profile-step`. Batch 100, 28x28x1 binary images, d_z = 10, 200-200 MLPs,
diagonal C. One *decoder pass* = one forward pass of the decoder over the batch ({unit / 1e6:.1f} MFLOP).
{'**Quick run: too few repeats to mean anything.**' if quick else ''}

**Machine.** {mv.results.machine()}; revision {mv.results.git_revision()}; load average (1 min)
{load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.

## Matrix-product flops by region

{(chr(10) * 2).join(sections)}

## Exact log-det against the roulette estimator

Value and gradient with respect to (h, C) of the log-det term for 100 chains, MLP decoder d -> 200 -> 200 -> 784,
median of {repeats} calls: {verdict}. The third column computes the same roulette estimate with the gradient
linearised once per chain (`jax.linearize`), where the speed measure's `residual_matvec` recomputes it for every
product.

{table}
"""
    return mv.results.write_results(NAME, rows, markdown, out_dir)
