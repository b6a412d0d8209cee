"""Every registered experiment runs end to end in its --quick form and writes rows in the public schema."""

import json

import pytest

from mcmcvae import experiments

KEYS = {"experiment", "dataset", "method", "metric", "value", "std", "num_seeds"}


@pytest.mark.parametrize("name", sorted(experiments.REGISTRY))
def test_quick_experiment(name, tmp_path, mnist_available):
    paths = experiments.run(name, quick=True, out_dir=tmp_path)
    rows = json.loads((tmp_path / f"{name}.json").read_text())
    assert rows and all(KEYS <= set(r) for r in rows)
    assert all(r["experiment"] == name for r in rows)
    assert (tmp_path / f"{name}.md").read_text().startswith("# ")
    assert {p.name for p in paths} >= {f"{name}.json", f"{name}.md"}


def test_table1_lr_validation_split_is_carved_from_training_and_best_rate_is_per_method():
    """The validation images are the training set's last images and never reach the fit; the best learning rate
    is chosen per (dataset, method) by validation log-likelihood, ignoring diverged (non-finite) runs."""
    import numpy as np

    from mcmcvae.experiments import common, table1_lr

    images = np.arange(50).reshape(50, 1)
    fit, validation = table1_lr.split(images, 10)
    assert len(fit) == 40 and len(validation) == 10
    assert not set(fit.ravel()) & set(validation.ravel()) and validation[-1, 0] == 49
    with pytest.raises(ValueError, match="validation_size must be between 1 and 49"):
        table1_lr.split(images, 50)
    rows = [{"dataset": "d", "method": m, "learning_rate": lr, "value": v}
            for m, lr, v in [("vae", 1e-3, -90.0), ("vae", 5e-3, -95.0), ("gradhmc-lt", 1e-3, float("nan")),
                             ("gradhmc-lt", 5e-3, -99.0), ("gradhmc-lt", 3e-4, -98.0)]]
    best = table1_lr.best_learning_rates(rows)
    assert best[("d", "vae")]["learning_rate"] == 1e-3 and best[("d", "gradhmc-lt")]["learning_rate"] == 3e-4
    mean, se = common.paired_difference([1.0, 2.0, 4.0], [0.0, 1.0, 2.0])  # differences 1, 1, 2
    assert mean == pytest.approx(4 / 3) and se == pytest.approx(np.std([1, 1, 2], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="unknown budget 'gpu'"):
        table1_lr.run(budget="gpu")
    # the MNIST study writes its own files and says how to regenerate them, so the Fashion-MNIST one stands
    budget = table1_lr.BUDGETS["cpu-mnist"]
    rows = [{"dataset": "mnist", "method": m, "learning_rate": lr, "value": -90.0 - (lr > 5e-4),
             "standard_error": 0.1, "nonfinite_updates": 0} for m in budget["methods"] for lr in (1e-3, 3e-4)]
    per_image = {(r["dataset"], r["method"], r["learning_rate"]): np.zeros(3) for r in rows}
    text = table1_lr._markdown(rows, per_image, "cpu-mnist", budget, 1.0)
    assert "`mcmcvae experiment table1-lr --budget cpu-mnist` (this file and `table1-lr-mnist.json`)" in text
    assert "Budget `cpu-mnist`, cut from the paper's" in text
    assert "| vae | -91.00 +- 0.10 | -90.00 +- 0.10 **best** |" in text


def test_train_run_reports_the_training_time_of_a_restored_run(tmp_path):
    """A finished run is restored, not retrained, and reports the seconds its epochs took (from metrics.jsonl),
    not the few this call spent restoring it."""
    import numpy as np

    import mcmcvae as mv
    from mcmcvae.experiments import common
    from mcmcvae.train import Phase, read_metrics

    images = (np.random.default_rng(0).random((40, 4, 4, 1)) < 0.5).astype(np.float32)
    model = mv.models.VAE(image_shape=(4, 4, 1), latent_dim=2, hidden_sizes=(8,))
    phases = [Phase(mv.methods.build("vae"), 2)]
    _, _, first = common.train_run(tmp_path / "run", model, phases, images, seed=0, batch_size=20, progress=False)
    epochs = read_metrics(tmp_path / "run")
    assert len(epochs) == 2 and first == pytest.approx(sum(r["seconds"] for r in epochs))
    _, _, again = common.train_run(tmp_path / "run", model, phases, images, seed=0, batch_size=20, progress=False)
    assert again == first and len(read_metrics(tmp_path / "run")) == 2


def test_table1_acceptance_plans_its_runs_and_compares_like_with_like(tmp_path):
    """dshmc runs at its own target first and then at each higher target, beside the speed-measure methods; targets
    that would not shorten dshmc's steps and unknown methods are refused; the kernel summary reads the last epoch;
    the verdict pairs each speed-measure run with the dshmc run whose acceptance rate is nearest its own."""
    import json

    import numpy as np

    from mcmcvae.experiments import table1_acceptance as acc
    from mcmcvae.experiments import table1_lr

    cpu = acc.BUDGETS["cpu"]
    plan = acc.runs_of(cpu)
    assert [(name, target) for name, _, _, target in plan] == [
        ("dshmc", 0.65), ("dshmc-0.75", 0.75), ("dshmc-0.85", 0.85), ("gradhmc-lt", None), ("gradhmc-lt-da", None)]
    assert plan[2][2] == {"target_acceptance_rate": 0.85} and plan[3][1:3] == ("gradhmc", {"preconditioner":
                                                                                          "lower_triangular"})
    # the variant is gradhmc-lt with the chains moved by a dual-averaged multiple of h
    assert plan[4][1:3] == ("gradhmc", {"preconditioner": "lower_triangular", "dual_averaged_step_size": True})
    # the same split, pre-training, rate and schedule as table1-lr's 10-epoch MNIST study, whose runs it repeats
    ten = table1_lr.BUDGETS["cpu-mnist-10epochs"]
    assert all(cpu[k] == ten[k] for k in ("datasets", "vae_epochs", "mcmc_epochs", "validation_size",
                                          "validation_images", "num_samples", "seed"))
    assert cpu["learning_rate"] == ten["learning_rates"][0] == 3e-4
    with pytest.raises(ValueError, match="between 0.65 and 1"):
        acc.runs_of({**cpu, "dshmc_targets": (0.5,)})
    with pytest.raises(ValueError, match="unknown speed-measure methods \\['dshmc'\\]"):
        acc.runs_of({**cpu, "speed_measure_methods": ("dshmc",)})
    with pytest.raises(ValueError, match="unknown budget 'gpu'"):
        acc.run(budget="gpu", out_dir=tmp_path)

    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"acceptance_rate": 0.5, "step_size": 1.0, "log_abs_det": 0.0},
        {"acceptance_rate": 0.84, "step_size": 0.05, "log_abs_det": 10 * np.log(2.0), "beta": 100.0}]) + "\n")
    kernel = acc.kernel_summary(tmp_path, latent_dim=10)
    assert kernel["acceptance_rate"] == 0.84 and kernel["beta"] == 100.0 and "step_size_factor" not in kernel
    assert kernel["geometric_mean_step"] == pytest.approx(0.1)  # h * |det C|^(1/d) = 0.05 * 2

    rows = [{"dataset": "mnist", "method": m, "target_acceptance_rate": t, "acceptance_rate": a, "step_size": 0.1,
             "log_abs_det": 0.0, "geometric_mean_step": 0.1, "value": -90.0, "standard_error": 0.1,
             "nonfinite_updates": 0, **extra}
            for m, t, a, extra in [("dshmc", 0.65, 0.64, {}), ("dshmc-0.85", 0.85, 0.83, {}),
                                   ("gradhmc-lt", None, 0.80, {"beta": 100.0})]]
    per_image = {("mnist", "dshmc"): np.array([0.0, 0.0, 0.0]), ("mnist", "dshmc-0.85"): np.array([1.0, 1.0, 2.0]),
                 ("mnist", "gradhmc-lt"): np.array([0.0, 0.0, 1.0])}
    text = acc._markdown(rows, per_image, "cpu", cpu, 1.0)
    assert "gradhmc-lt (acceptance 0.80) minus dshmc-0.85 (acceptance 0.83, the dshmc run nearest it): -1.00" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len({line.replace("\\|", "").count("|") for line in table}) == 1  # escaped pipes keep the columns
    assert "the paper's 10 MCMC epochs" in text and "Budget `cpu`, cut from the paper's" in text


def test_table1_loglik_mcmc_rate_override_and_paired_differences():
    """A budget's MCMC learning rate overrides the paper's per dataset only; the criterion's paired differences
    average per-seed mean differences, with the standard error of the images alone."""
    import numpy as np

    from mcmcvae.experiments import table1_loglik as table1

    cpu = table1.BUDGETS["cpu"]
    assert table1.mcmc_learning_rate(cpu, "fashion_mnist") == 1e-3
    assert table1.mcmc_learning_rate(cpu, "mnist") == 3e-4
    assert table1.mcmc_learning_rate(cpu, "omniglot") == table1.DATASETS["omniglot"]["learning_rate"]
    assert set(cpu["mcmc_learning_rate_reason"]) == set(cpu["mcmc_learning_rates"])
    assert table1.mcmc_learning_rate(table1.BUDGETS["paper"], "fashion_mnist") == 5e-3
    leader = [np.array([1.0, 2.0, 4.0]), np.array([0.0, 0.0, 3.0])]
    rival = [np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0])]  # differences (1, 1, 2) and (0, -1, 2)
    d = table1.paired_differences(leader, rival)
    assert d["per_seed"] == pytest.approx([4 / 3, 1 / 3]) and d["mean"] == pytest.approx(5 / 6)
    se = np.sqrt(np.var([1, 1, 2], ddof=1) / 3 + np.var([0, -1, 2], ddof=1) / 3) / 2
    assert d["standard_error"] == pytest.approx(se)
    with pytest.raises(ValueError):
        table1.paired_differences(leader, rival[:1])


def test_vcd_cpu_budget_runs_its_mcmc_phase_at_table1s_cpu_rates():
    """vcd's cpu budget takes table1-loglik's per-dataset MCMC rates (and their reasons); the paper budget keeps the
    schedule's rates, Fashion-MNIST's 5e-3 included, and pre-training keeps the schedule's rate under every budget."""
    from mcmcvae.experiments import common, vcd
    from mcmcvae.experiments import table1_loglik as table1

    cpu, paper = vcd.BUDGETS["cpu"], vcd.BUDGETS["paper"]
    for dataset in ("mnist", "fashion_mnist"):
        default = vcd.SCHEDULE[dataset]["learning_rate"]
        assert common.mcmc_learning_rate(cpu, dataset, default) == table1.mcmc_learning_rate(
            table1.BUDGETS["cpu"], dataset)
        assert common.mcmc_learning_rate(paper, dataset, default) == default
        assert dataset in cpu["mcmc_learning_rate_reason"]
    assert common.mcmc_learning_rate(paper, "fashion_mnist", vcd.SCHEDULE["fashion_mnist"]["learning_rate"]) == 5e-3
    assert common.mcmc_learning_rate(cpu, "fashion_mnist", 5e-3) == 1e-3
    text = vcd._rates_text(cpu, {"fashion_mnist": 1e-3, "mnist": 3e-4})
    assert "fashion_mnist at 0.001 (overriding the schedule's 0.005" in text and "table1-lr" in text
    assert "overriding" not in vcd._rates_text(paper, {"mnist": 1e-3})


def test_table1_loglik_variant_budget_repeats_the_cpu_mnist_rows_beside_the_variant():
    """``cpu-mnist-variant`` is the cpu budget's MNIST setting (same seeds, schedule, rate and scores), so its
    paper-method rows repeat cpu's; the variant runs only where a budget names it, is paired against the rivals
    and the best speed-measure method, and is kept out of the criterion."""
    import numpy as np

    from mcmcvae.experiments import table1_loglik as table1

    cpu, variant = table1.BUDGETS["cpu"], table1.BUDGETS["cpu-mnist-variant"]
    shared = set(cpu) - {"datasets", "mcmc_learning_rates", "mcmc_learning_rate_reason"}
    assert all(variant[k] == cpu[k] for k in shared) and variant["datasets"] == ("mnist",)
    assert table1.mcmc_learning_rate(variant, "mnist") == table1.mcmc_learning_rate(cpu, "mnist")
    assert "gradhmc-lt-da" in variant["methods"] and {"vae", "dsmala", "dshmc"} < set(variant["methods"])
    assert "methods" not in cpu and "gradhmc-lt-da" not in [name for name, _, _ in table1.METHODS]
    ten = table1.BUDGETS["cpu-mnist-variant-10epochs"]
    changed = {k for k in set(ten) | set(variant) if ten.get(k) != variant.get(k)}
    assert changed == {"mcmc_epochs", "seeds", "methods", "results_name"} and ten["mcmc_epochs"] == 10
    assert "gradhmc-lt-da" in ten["methods"] and {"vae", "dsmala", "dshmc", "gradhmc-lt"} <= set(ten["methods"])
    rows = [{"dataset": "mnist", "method": m, "metric": "test_log_likelihood", "value": v}
            for m, v in [("vae", -83.0), ("dsmala", -82.0), ("dshmc", -81.0), ("gradhmc-lt", -81.5),
                         ("gradhmc-lt-da", -80.0)]]
    best, _, _, passed = table1.verdict(rows, "mnist")
    assert best == "gradhmc-lt" and not passed  # the variant's better value does not count
    per_image = {("mnist", r["method"]): [np.array([r["value"], r["value"] + 1.0])] for r in rows}
    lines = table1._paired_lines("mnist", rows, per_image)
    assert len(lines) == 2 and lines[1].startswith("- gradhmc-lt-da, a variant")
    assert "dshmc +1.00" in lines[1] and "gradhmc-lt +1.50" in lines[1]


def test_aiwae_budgets_cut_only_what_they_say(tmp_path):
    """``--budget cpu`` keeps the paper's model, batch, AIS chains and learning-rate schedule (a prefix of its
    stages) and cuts only what its results file states; an unknown budget is refused before anything trains."""
    from mcmcvae.experiments import aiwae

    paper, cpu = aiwae.BUDGETS["paper"], aiwae.BUDGETS["cpu"]
    assert set(cpu["configurations"]) < set(paper["configurations"]) and ("aiwae", 5, 5) in cpu["configurations"]
    assert cpu["schedule"] == paper["schedule"][: len(cpu["schedule"])] and len(cpu["schedule"]) < 8
    assert cpu["batch_size"] == paper["batch_size"] and cpu["seed"] == paper["seed"]
    cut = aiwae._cut(cpu)
    stated = {"configurations": "IWAE K in 1, 5, 50", "schedule": "(paper: 3280 epochs",
              "train_size": "(paper: all 60000)", "batch_size": f"(paper: {paper['batch_size']})",
              "eval_images": f"(paper: {paper['eval_images']} each)",
              "num_samples_bound": f"S = {cpu['num_samples_bound']} for the NVLB (paper: {paper['num_samples_bound']})",
              **{key: f"{cpu[key]} {key[4:]} (paper: {paper[key]})" for key in ("ais_temperatures", "ais_chains")}}
    assert set(stated) | {"seed"} == set(paper) == set(cpu)
    for key, text in stated.items():
        assert (text in cut) == (cpu[key] != paper[key]), key
    with pytest.raises(ValueError, match="unknown budget 'gpu'.*paper, cpu, quick"):
        aiwae.run(budget="gpu", out_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_hvae_mnist_has_no_cpu_budget(tmp_path):
    """hvae-mnist's convolutional networks need a GPU: ``--budget cpu`` is refused by name, like any unknown
    budget, before anything trains."""
    from mcmcvae.experiments import hvae_mnist

    assert set(hvae_mnist.BUDGETS) == {"paper", "quick"}
    with pytest.raises(ValueError, match="unknown budget 'cpu'.*paper, quick"):
        hvae_mnist.run(budget="cpu", out_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_cached_evaluation_reuses_only_equal_settings_and_returns_what_it_stores(tmp_path):
    """One cache for every experiment: equal settings (tuples compared as stored) reuse the file without
    evaluating; other settings, or a saved summary missing a required key, evaluate afresh; fresh and reused
    summaries have the same types."""
    import numpy as np

    from mcmcvae.experiments import common

    calls = []

    def evaluate():
        calls.append(1)
        return {"value": np.float32(len(calls)), "per_image": np.arange(3.0)}

    path = tmp_path / "eval.json"
    fresh = common.cached_evaluation(path, {"epochs": (1, 2)}, evaluate)
    again = common.cached_evaluation(path, {"epochs": (1, 2)}, evaluate)
    assert len(calls) == 1 and fresh == again and fresh["per_image"] == [0.0, 1.0, 2.0]
    assert fresh["value"] == 1.0 and fresh["settings"] == {"epochs": [1, 2]} and fresh["eval_seconds"] >= 0
    assert common.cached_evaluation(path, {"epochs": (1, 3)}, evaluate)["value"] == 2.0
    assert common.cached_evaluation(path, {"epochs": (1, 3)}, evaluate, require=("missing",))["value"] == 3.0
