r"""``linear-hvae``: how well learnt preconditioners fit the exact posterior of a linear hierarchical VAE.

Hirt, Kreouzis and Dellaportas (2024), section 6.7, Tables 4 and 5. Data: :func:`mcmcvae.hierarchical.make_dataset`
(1000 training points from a fixed two-layer linear model, observation standard deviation 0.5, ``D = 2 d_2``;
1000 held-out points from the same model). Model: a two-layer :class:`mcmcvae.hierarchical.LinearHVAE` with the
generating model's layer sizes, learnable ``sigma_x``, the linear residual encoder of 6.7.2, batch 100, Adam at
1e-3. It is first trained as an hVAE (ELBO), then each MCMC method trains it further from those parameters
(Algorithm 1).

Everything about the learnt model is exact: ``Sigma_{z|x}^{-1}`` (eq. 12, the same for every ``x``) gives
``condition_number`` = cond(Sigma_{z|x}^{-1}); the learnt ``C`` (``method.kernel_parameters``, ``C = I`` for the
dual-averaging methods) gives ``transformed_condition_number`` = cond(C^T Sigma_{z|x}^{-1} C), the conditioning that
a MALA or HMC kernel with preconditioner ``C`` faces; ``log_likelihood_gap`` is the held-out mean of the exact
``log p_true(x) - log p_learnt(x)``.

Reference: BlackJAX's window adaptation with a dense mass matrix (``mv.adaptation.window_adaptation``), run on the
exact posterior of the hVAE-phase model for the first held-out point; ``C = cholesky(M^{-1})``. Gradient
evaluations of ``log p(x, z)`` are counted for both: for training methods, every chain's initial gradient plus
``K L`` per batch (``L = 1`` for MALA) summed over the MCMC phase (the speed measure's own differentiation through
the proposal comes on top); for the window adaptation ``1 + steps L``.

The shared trainer checks that data lie in [0, 1] (it was written for images), so the model is trained on
``(x - lo) / s`` with ``lo`` and ``s`` the training set's minimum and range. The map is affine: the learnt model of
the mapped data is turned back into a model of ``x`` (:meth:`LinearGaussian.rescale_observations`), whose posterior
is the same and whose log-likelihood differs by ``D log s``; all numbers are in the units of ``x``.
"""

from __future__ import annotations

import resource
import time

import numpy as np

import mcmcvae as mv

import common

DESCRIPTION = "linear hVAE (10-20, 50-100): condition numbers of learnt preconditioners, log-likelihood gaps"
NAME = "linear-hvae"
DIMS = {"10-20": (10, 20), "50-100": (50, 100)}
# name -> (method, preconditioner)
METHODS = {
    "gradmala-diag": ("gradmala", "diagonal"),
    "gradmala-lt": ("gradmala", "lower_triangular"),
    "gradhmc-diag": ("gradhmc", "diagonal"),
    "gradhmc-lt": ("gradhmc", "lower_triangular"),
    "dsmala": ("dsmala", "diagonal"),
    "dshmc": ("dshmc", "diagonal"),
}
FULL = {
    "schedules": {"10-20": {"vae_epochs": 1000, "mcmc_epochs": 1000, "num_mcmc_steps": 2},
                  "50-100": {"vae_epochs": 5000, "mcmc_epochs": 5000, "num_mcmc_steps": 10}},
    "methods": tuple(METHODS),
    "window": ("mala", "hmc"),
    "window_steps": 20_000,
}
# What fits a 2-core CPU in about an hour: the 10-20 model at the paper's schedule; the 50-100 model with the paper's
# 5000 hVAE epochs but a fifth of its MCMC epochs (gradhmc-lt alone takes about 1.2 s of CPU an epoch here).
CPU = {
    "schedules": {"10-20": FULL["schedules"]["10-20"],
                  "50-100": {"vae_epochs": 5000, "mcmc_epochs": 1000, "num_mcmc_steps": 10}},
    "methods": FULL["methods"],
    "window": FULL["window"],
    "window_steps": FULL["window_steps"],
}
# Compiling each method's training epoch costs 15-25 s of CPU here, so --quick runs the two speed-measure MALA
# methods (what its check compares) and the MALA window adaptation only.
QUICK = {
    "schedules": {"10-20": {"vae_epochs": 100, "mcmc_epochs": 30, "num_mcmc_steps": 2},
                  "50-100": {"vae_epochs": 40, "mcmc_epochs": 10, "num_mcmc_steps": 10}},
    "methods": ("gradmala-diag", "gradmala-lt"),
    "window": ("mala",),
    "window_steps": 2000,
}
BUDGETS = {"paper": FULL, "cpu": CPU, "quick": QUICK}
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
NUM_INTEGRATION_STEPS = 2  # L of the HMC methods and of the HMC window adaptation
INITIAL_OBSERVATION_STD = 0.1  # sigma_x at initialisation, on the [0, 1] scale (about the data's spread there)
SEED = 0


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _host(tree):
    import jax

    return jax.tree_util.tree_map(np.array, tree)


def _device(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(jnp.array, tree)  # fresh buffers: the trainer donates what it is given


def _exact(model, params, offset, scale):
    """The learnt model's exact Gaussian structure, in the units of the original data."""
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                  model.linear_gaussian(params).rescale_observations(offset, scale))


def _evaluate(exact, true_log_likelihood, test_x):
    from mcmcvae.hierarchical import LinearGaussian, condition_number

    precision = np.asarray(LinearGaussian(*exact).posterior_precision(), np.float64)
    learnt = np.asarray(LinearGaussian(*exact).log_marginal(test_x), np.float64)
    return precision, condition_number(precision), float(np.mean(true_log_likelihood - learnt))


def _window_reference(kind, exact, x0, num_steps):
    """Window adaptation on the exact posterior N(mu_{z|x0}, Sigma_{z|x0}), started from an exact draw (already
    in stationarity); returns C, h, gradient evaluations and the mean acceptance rate."""
    import jax
    import jax.numpy as jnp

    import mcmcvae as mv
    from mcmcvae.hierarchical import LinearGaussian

    model = LinearGaussian(*(jnp.asarray(a, jnp.float32) for a in exact))
    precision, mean = model.posterior_precision(), model.posterior_mean(jnp.asarray(x0, jnp.float32))

    def logdensity(z):
        r = z - mean
        return -0.5 * r @ precision @ r

    algorithm = mv.kernels.mala if kind == "mala" else mv.kernels.hmc
    options = {"num_integration_steps": NUM_INTEGRATION_STEPS} if kind == "hmc" else {}
    warmup = mv.adaptation.window_adaptation(algorithm, logdensity, **options)
    k_start, k_run = jax.random.split(jax.random.key(SEED + 7))
    start = mean + jnp.linalg.solve(jnp.linalg.cholesky(precision).T, jax.random.normal(k_start, mean.shape))
    results = jax.jit(warmup.run, static_argnums=2)(k_run, start, num_steps)
    return (np.asarray(results.parameters.matrix(), np.float64), float(results.step_size),
            int(results.num_gradient_evaluations), float(np.mean(results.acceptance_rate)))


def run_dims(dims: str, *, budget: str = "paper") -> tuple[list[dict], dict]:
    """Train and evaluate every method for one pair of layer sizes under ``budget`` (a key of ``BUDGETS``);
    returns result rows and a summary."""
    import mcmcvae as mv
    from mcmcvae import hierarchical
    from mcmcvae.train import Phase, Trainer

    budget_name, quick = budget, budget == "quick"
    budget = BUDGETS[budget_name]
    schedule = budget["schedules"][dims]
    sizes = DIMS[dims]
    train = hierarchical.make_dataset(sizes, split="train", seed=SEED)
    test = hierarchical.make_dataset(sizes, split="test", seed=SEED)
    test_x = test.images.reshape(test.images.shape[0], -1).astype(np.float64)
    true = train.model.linear_gaussian(train.params)
    true_log_likelihood = np.asarray(true.log_marginal(test_x), np.float64)
    true_condition = hierarchical.condition_number(true.posterior_precision())

    offset = float(train.images.min())
    scale = float(train.images.max() - train.images.min())
    mapped = (train.images - offset) / scale
    model = hierarchical.LinearHVAE(image_shape=train.images.shape[1:], latent_sizes=sizes,
                                    likelihood_scale=INITIAL_OBSERVATION_STD)
    num_batches = train.images.shape[0] // BATCH_SIZE

    rows, table = [], []

    def add(method, metric, value, **extra):
        rows.append(mv.results.row(NAME, dims, method, metric, value, None, 1, quick=quick, budget=budget_name,
                                   **extra))

    # hVAE phase
    tic, cpu = time.perf_counter(), _cpu_seconds()
    vae = Trainer(model, [Phase(mv.methods.build("vae", learning_rate=LEARNING_RATE), schedule["vae_epochs"])],
                  batch_size=BATCH_SIZE, seed=SEED, progress=False)
    vae_params, _ = vae.run(mapped)
    vae_params = _host(vae_params)
    vae_seconds, vae_cpu = time.perf_counter() - tic, _cpu_seconds() - cpu
    vae_exact = _exact(model, vae_params, offset, scale)
    vae_precision, vae_condition, vae_gap = _evaluate(vae_exact, true_log_likelihood, test_x)
    add("vae", "condition_number", vae_condition, epochs=schedule["vae_epochs"])
    add("vae", "log_likelihood_gap", vae_gap, epochs=schedule["vae_epochs"])
    table.append(["hVAE (ELBO) only", f"{vae_condition:.1f}", "-", f"{vae_gap:.2f}", "-", "-", "-",
                  f"{vae_seconds:.0f} ({vae_cpu:.0f})"])

    # MCMC phase, every method from the same hVAE parameters
    for name in budget["methods"]:
        method_name, preconditioner = METHODS[name]
        method = mv.methods.build(method_name, **mv.methods.select_options(method_name, dict(
            num_mcmc_steps=schedule["num_mcmc_steps"], num_integration_steps=NUM_INTEGRATION_STEPS,
            preconditioner=preconditioner, learning_rate=LEARNING_RATE)))
        tic, cpu = time.perf_counter(), _cpu_seconds()
        trainer = Trainer(model, [Phase(method, schedule["mcmc_epochs"])], batch_size=BATCH_SIZE, seed=SEED,
                          progress=False)
        params, state = trainer.run(mapped, params=_device(vae_params))
        seconds, cpu_seconds = time.perf_counter() - tic, _cpu_seconds() - cpu
        kernel = method.kernel_parameters(model, state)
        c = np.asarray(kernel.matrix(), np.float64)
        precision, condition, gap = _evaluate(_exact(model, params, offset, scale), true_log_likelihood, test_x)
        transformed = hierarchical.condition_number(c.T @ precision @ c)
        steps = NUM_INTEGRATION_STEPS if method.kernel is mv.kernels.hmc else 1
        gradients = schedule["mcmc_epochs"] * num_batches * BATCH_SIZE * (1 + schedule["num_mcmc_steps"] * steps)
        extra = {"epochs": schedule["mcmc_epochs"], "num_mcmc_steps": schedule["num_mcmc_steps"],
                 "step_size": float(kernel.step_size), "train_seconds": seconds}
        add(name, "condition_number", condition, **extra)
        add(name, "transformed_condition_number", transformed, **extra)
        add(name, "log_likelihood_gap", gap, **extra)
        add(name, "gradient_evaluations", gradients, per_chain=1 + schedule["num_mcmc_steps"] * steps, **extra)
        table.append([name, f"{condition:.1f}", f"{transformed:.2f}", f"{gap:.2f}", f"{float(kernel.step_size):.3f}",
                      "-", f"{gradients:.2e}", f"{seconds:.0f} ({cpu_seconds:.0f})"])

    # the tuned reference: window adaptation on the exact posterior of the hVAE-phase model
    for kind in budget["window"]:
        tic, cpu = time.perf_counter(), _cpu_seconds()
        c, step_size, gradients, acceptance = _window_reference(kind, vae_exact, test_x[0], budget["window_steps"])
        seconds, cpu_seconds = time.perf_counter() - tic, _cpu_seconds() - cpu
        transformed = hierarchical.condition_number(c.T @ vae_precision @ c)
        extra = {"warmup_steps": budget["window_steps"], "step_size": step_size, "acceptance_rate": acceptance,
                 "target": "exact posterior of the hVAE-phase model"}
        add(f"window-{kind}", "condition_number", vae_condition, **extra)
        add(f"window-{kind}", "transformed_condition_number", transformed, **extra)
        add(f"window-{kind}", "gradient_evaluations", gradients, per_chain=gradients, **extra)
        table.append([f"window-{kind} (dense, exact posterior)", f"{vae_condition:.1f}", f"{transformed:.2f}", "-",
                      f"{step_size:.3f}", f"{acceptance:.2f}", f"{gradients:.2e}",
                      f"{seconds:.0f} ({cpu_seconds:.0f})"])

    summary = {"dims": dims, "schedule": schedule, "true_condition": true_condition, "table": table,
               "data_dim": train.images.shape[1], "true_test_log_likelihood": float(true_log_likelihood.mean())}
    return rows, summary


def run(*, quick: bool = False, out_dir=None, budget: str | None = None, dims=tuple(DIMS)):
    """Run the experiment (both latent sizes unless ``dims`` names a subset, e.g. ``("10-20",)``); write results.

    ``budget``: ``paper`` (the default: the paper's schedules), ``cpu`` (the 50-100 MCMC phase cut, see ``CPU``);
    ``quick=True`` is the smoke test."""
    budget_name = common.budget_name(BUDGETS, quick, budget)
    tic, cpu = time.perf_counter(), _cpu_seconds()
    rows, summaries = [], []
    for name in dims:
        dims_rows, summary = run_dims(name, budget=budget_name)
        rows += dims_rows
        summaries.append(summary)
    minutes, cpu_minutes = (time.perf_counter() - tic) / 60, (_cpu_seconds() - cpu) / 60
    markdown = _markdown(summaries, rows, budget_name, minutes, cpu_minutes)
    return mv.results.write_results(NAME, rows, markdown, out_dir)


def check_preconditioning(rows: list[dict], dims: str) -> dict:
    """The quick run's acceptance check: the lower-triangular C of gradmala brings cond(C^T Sigma^{-1} C) below a
    fifth of cond(Sigma^{-1}) and no higher than the diagonal C's. Returns the numbers and ``passed``."""
    def value(method, metric):
        return next(r["value"] for r in rows
                    if r["dataset"] == dims and r["method"] == method and r["metric"] == metric)

    posterior = value("gradmala-lt", "condition_number")
    lower = value("gradmala-lt", "transformed_condition_number")
    diagonal = value("gradmala-diag", "transformed_condition_number")
    return {"posterior": posterior, "lower_triangular": lower, "diagonal": diagonal,
            "passed": lower < posterior / 5 and lower <= diagonal}


def _markdown(summaries, rows, budget_name, minutes, cpu_minutes) -> str:
    budget, quick = BUDGETS[budget_name], budget_name == "quick"
    header = ["method", "cond(Sigma_{z|x}^{-1})", "cond(C^T Sigma_{z|x}^{-1} C)", "log-lik gap (nats)", "h",
              "acceptance", "gradient evaluations", "seconds (CPU s)"]
    option = {"quick": " --quick", "paper": ""}.get(budget_name, f" --budget {budget_name}")
    command = f"python experiments/run.py linear-hvae{option}"
    parts = ["# linear-hvae: learnt preconditioners on a linear hierarchical VAE\n\n"
             + f"Regenerate with `{command}` (this file and `linear-hvae.json`).\n"]
    if quick:
        parts.append("**Quick run: short schedules and gradmala with a diagonal and a lower-triangular C only, for "
                     "smoke testing; the condition numbers still show what a lower-triangular C does, the "
                     "log-likelihood gaps mean little.**\n")
    elif budget_name != "paper":
        cuts = [f"{dims}: {budget['schedules'][dims]['mcmc_epochs']} MCMC epochs (paper: "
                f"{FULL['schedules'][dims]['mcmc_epochs']})" for dims in DIMS
                if budget["schedules"][dims] != FULL["schedules"][dims]]
        parts.append(f"**Budget `{budget_name}`, cut from the paper's:** {'; '.join(cuts)}; everything else as the "
                     "paper's schedule below.\n")
    for summary in summaries:
        dims, schedule = summary["dims"], summary["schedule"]
        compared = {"gradmala-lt", "gradmala-diag"} <= set(budget["methods"])
        check = check_preconditioning(rows, dims) if compared else None
        parts.append(
            f"## latent sizes {dims} (D = {summary['data_dim']})\n\n"
            f"{schedule['vae_epochs']} hVAE epochs, then {schedule['mcmc_epochs']} MCMC epochs with "
            f"K = {schedule['num_mcmc_steps']} (HMC: L = {NUM_INTEGRATION_STEPS}); window adaptation "
            f"{budget['window_steps']} steps. The generating model's own posterior has "
            f"cond(Sigma_{{z|x}}^{{-1}}) = {summary['true_condition']:.1f}; its held-out log-likelihood is "
            f"{summary['true_test_log_likelihood']:.2f} nats per point.\n\n"
            + mv.results.markdown_table(header, summary["table"]) + "\n")
        if check is not None:
            verdict = "holds" if check["passed"] else "DOES NOT hold"
            parts.append(f"Lower-triangular C: cond {check['lower_triangular']:.2f} against the posterior's "
                         f"{check['posterior']:.1f} (a fifth: {check['posterior'] / 5:.1f}) and the diagonal C's "
                         f"{check['diagonal']:.2f}: the check {verdict}.\n")
    full = FULL["schedules"]
    parts.append(f"""## Setting

Paper: section 6.7, Tables 4 (condition numbers) and 5 (log-likelihood gaps). Two-layer linear hVAE with the
generating model's sizes, Adam at {LEARNING_RATE} for every parameter group (the kernel's own learning rate is the
method default), batch {BATCH_SIZE}, one seed ({SEED}). Full schedules: 10-20: {full['10-20']['vae_epochs']} hVAE +
{full['10-20']['mcmc_epochs']} MCMC epochs with K = {full['10-20']['num_mcmc_steps']}; 50-100:
{full['50-100']['vae_epochs']} hVAE + {full['50-100']['mcmc_epochs']} MCMC epochs with
K = {full['50-100']['num_mcmc_steps']}. Methods: {', '.join(budget['methods'])}; window adaptation with
{', '.join(budget['window'])}.

The data are mapped affinely into [0, 1] for the shared trainer (see the module docstring); all numbers are in the
original units. Window adaptation follows Stan's schedule: the step size in fast windows, the dense covariance from
slow windows of 25, 50, 100, ... draws. Its early windows hold fewer draws than there are dimensions (30 or 150),
and where its cond(C^T Sigma_{{z|x}}^{{-1}} C) exceeds the posterior's own, the estimated covariance is far too small
in some directions and the warm-up was too short to recover; the gradient-evaluation column shows what each
tuner spent. "h" is the learnt step size; gradient evaluations count ``grad_z log p(x, z)`` calls summed over all
chains of the MCMC phase (training methods) or of the single warm-up chain (window adaptation). The window
reference adapts on the exact posterior of the hVAE-phase model, so its condition numbers refer to that model;
each MCMC method's row refers to the model it trained.

**Machine.** {mv.results.machine()}; {minutes:.1f} min wall, {cpu_minutes:.1f} min CPU in all (JIT compilation
included: 15-25 s of CPU per method and dimension here); code at revision {mv.results.git_revision()}.
""")
    return "\n".join(parts)
