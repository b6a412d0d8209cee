"""Every experiment script runs end to end in its --quick form and writes rows in the public schema; the runner
finds them, and refuses unknown names and budgets clearly."""

import importlib.util
import inspect
import json
import os
import pathlib
import time

import pytest

import mcmcvae as mv

RUNNER = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "run.py"


def _load_runner():
    """The research scripts' runner, loaded by path (the experiments live outside the library)."""
    spec = importlib.util.spec_from_file_location("experiments_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
KEYS = {"experiment", "dataset", "method", "metric", "value", "std", "num_seeds"}


@pytest.mark.parametrize("name", sorted(runner.discover()))
def test_quick_experiment(name, tmp_path, mnist_available):
    paths = runner.run(name, quick=True, out_dir=tmp_path)
    rows = json.loads((tmp_path / f"{name}.json").read_text())
    assert rows and all(KEYS <= set(r) for r in rows)
    assert all(r["experiment"] == name for r in rows)
    text = (tmp_path / f"{name}.md").read_text()
    assert text.startswith("# ")
    assert {p.name for p in paths} >= {f"{name}.json", f"{name}.md"}
    for check in QUICK_CHECKS.get(name, ()):
        check(rows, text)


def _verdicts_computed(rows, text):
    """Verdict rows carry a verdict that the interval gives, and the page prints each one's sentence."""
    verdicts = [r for r in rows if r["metric"] in ("verdict", "kid_verdict") or r.get("comparison")]
    assert verdicts, "no seed-level verdict was computed"
    for r in verdicts:
        c = r.get("comparison") or next(iter(r["comparisons"].values()))
        expected = "holds" if c["lower"] > 0 else "fails" if c["upper"] < 0 else "not resolved"
        assert c["verdict"] == expected
    assert ": holds." in text or ": fails." in text or ": not resolved." in text


def _random_sample_stated(rows, text):
    assert "random sample of" in text and "fixed seed" in text


def _ais_check_ran(rows, text):
    assert "AIS check (the same images" in text
    assert any(r.get("check") for r in rows if r["metric"] == "test_log_likelihood_ais")


def _estimator_stated_first(rows, text):
    first_table = text.index("\n|")
    assert -1 < text.find("Estimator of the verdicts, decided before the numbers") < first_table


def _both_binarisations(rows, text):
    assert {r.get("binarization") for r in rows if r["metric"] == "test_log_likelihood"} >= {"fixed_stochastic"}


def _per_point_control_variates(rows, text):
    fractions = [f for r in rows if r["method"] == "vcd" for f in r.get("per_point_fraction") or []]
    assert fractions and min(fractions) > 0.5  # 2 of the quick form's 3 iterations


def _paper_training_fraction_stated(rows, text):
    """The page sets its training length beside Ruiz and Titsias's 400000 iterations (the quick form's 3)."""
    assert "iterations of each method's own objective (Ruiz and Titsias's training) 3/400000" in text


def _binary_kid(rows, text):
    kids = [r for r in rows if r["metric"] == "kid" and r["value"] is not None]
    assert "binary" in text and kids and all(r.get("samples") == "binary" for r in kids)
    # the rows say which test images they were compared with, so seed-verdicts can describe them
    assert all(r.get("test_sample_seed") is not None and r.get("num_images") == r["num_reference"] for r in kids)


QUICK_CHECKS = {
    "table1-loglik": (_verdicts_computed, _random_sample_stated, _ais_check_ran, _estimator_stated_first),
    "table2-kid": (_verdicts_computed, _random_sample_stated, _binary_kid),
    "vcd": (_verdicts_computed, _random_sample_stated, _estimator_stated_first, _both_binarisations,
            _per_point_control_variates, _paper_training_fraction_stated),
    "nonlinear-hvae": (_verdicts_computed, _random_sample_stated, _ais_check_ran, _estimator_stated_first,
                       _binary_kid),
    "vae-baseline": (_verdicts_computed, _random_sample_stated, _both_binarisations),
    "seed-verdicts": (_verdicts_computed,),
}



# ------------------------------------------------------------------------------------------------- runner
def test_runner_lists_every_experiment_script_and_only_those(capsys):
    """``list`` names every script that defines DESCRIPTION and run, by its file stem with dashes, beside its
    description; helpers (common.py), figure scripts (kernels_figure.py) and the runner itself are not listed."""
    assert runner.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines}
    stems = {p.stem.replace("_", "-") for p in RUNNER.parent.glob("*.py")}
    assert set(listed) == set(runner.discover()) and set(listed) <= stems
    assert {"vae-baseline", "table1-loglik", "table3-augmentation", "vcd"} <= set(listed)
    assert not {"common", "kernels-figure", "run"} & set(listed)
    for name in ("vae-baseline", "table1-lr"):
        module = runner.load(name)
        assert listed[name] == module.DESCRIPTION and module.NAME == name


def test_runner_refuses_unknown_names_and_budgets_clearly(capsys):
    assert runner.main(["table9"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'table9'" in err and "valid experiments: " in err and "vae-baseline" in err
    assert runner.main(["table1_loglik"]) == 2
    assert "did you mean 'table1-loglik'?" in capsys.readouterr().err
    assert runner.main(["benchmark", "--budget", "cpu"]) == 2
    assert "experiment 'benchmark' has one budget; drop --budget" in capsys.readouterr().err
    assert runner.main(["vae-baseline", "--quick", "--budget", "cpu"]) == 2
    assert "either --quick or --budget cpu" in capsys.readouterr().err
    assert runner.main(["table1-lr", "--budget", "gpu"]) == 2  # refused by the experiment before anything runs
    assert "unknown budget 'gpu'; choose one of" in capsys.readouterr().err
    assert runner.main(["list", "--quick"]) == 2
    assert "list takes no options" in capsys.readouterr().err


def test_a_new_experiment_is_one_new_file(tmp_path):
    """The runner discovers a new script by reading it; a script that is not an experiment is never executed."""
    (tmp_path / "my_study.py").write_text(
        "import mcmcvae as mv\n\n"
        "DESCRIPTION = 'a study in one file'\n\n\n"
        "def run(*, quick=False, out_dir=None):\n"
        "    rows = [mv.results.row('my-study', 'none', 'none', 'answer', 42 if quick else 43)]\n"
        "    return mv.results.write_results('my-study', rows, '# my-study', out_dir)\n")
    (tmp_path / "side_effect.py").write_text("raise SystemExit('a script that is not an experiment ran')\n")
    (tmp_path / "helper.py").write_text("DESCRIPTION = 'no run function: not an experiment'\n")
    found = runner.discover(tmp_path)
    assert list(found) == ["my-study"] and found["my-study"].description == "a study in one file"
    paths = runner.run("my-study", quick=True, out_dir=tmp_path / "results", directory=tmp_path)
    assert [p.name for p in paths] == ["my-study.json", "my-study.md"]
    assert json.loads(paths[0].read_text())[0]["value"] == 42.0
    with pytest.raises(ValueError, match="experiment 'my-study' has one budget"):
        runner.run("my-study", budget="cpu", directory=tmp_path)


def test_runner_runs_as_a_script_from_the_repository_root():
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RUNNER.parents[1] / "lib"),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "experiments/run.py", "list"], cwd=RUNNER.parents[1], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "table1-loglik" in done.stdout and "vae-baseline" in done.stdout

def test_table1_lr_validation_split_is_carved_from_training_and_best_rate_is_per_method():
    """The validation images are the training set's last images and never reach the fit; the best learning rate
    is chosen per (dataset, method) by validation log-likelihood, ignoring diverged (non-finite) runs."""
    import numpy as np

    table1_lr = runner.load("table1-lr")

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
    mean, se = mv.results.paired_difference([1.0, 2.0, 4.0], [0.0, 1.0, 2.0])  # differences 1, 1, 2
    assert mean == pytest.approx(4 / 3) and se == pytest.approx(np.std([1, 1, 2], ddof=1) / np.sqrt(3))
    with pytest.raises(ValueError, match="unknown budget 'gpu'"):
        table1_lr.run(budget="gpu")
    # the MNIST study writes its own files and says how to regenerate them, so the Fashion-MNIST one stands
    budget = table1_lr.BUDGETS["cpu-mnist"]
    rows = [{"dataset": "mnist", "method": m, "learning_rate": lr, "value": -90.0 - (lr > 5e-4),
             "standard_error": 0.1, "nonfinite_updates": 0} for m in budget["methods"] for lr in (1e-3, 3e-4)]
    per_image = {(r["dataset"], r["method"], r["learning_rate"]): np.zeros(3) for r in rows}
    text = table1_lr._markdown(rows, per_image, "cpu-mnist", budget, 1.0)
    assert "`python experiments/run.py table1-lr --budget cpu-mnist` (this file and `table1-lr-mnist.json`)" in text
    assert "Budget `cpu-mnist`, cut from the paper's" in text
    assert "| vae | -91.00 +- 0.10 | -90.00 +- 0.10 **best** |" in text


def test_table1_acceptance_plans_its_runs_and_compares_like_with_like(tmp_path):
    """dshmc runs at its own target first and then at each higher target, beside the speed-measure methods; targets
    that would not shorten dshmc's steps and unknown methods are refused; the kernel summary reads the last epoch;
    the verdict pairs each speed-measure run with the dshmc run whose acceptance rate is nearest its own."""
    import json

    import numpy as np

    acc, table1_lr = runner.load("table1-acceptance"), runner.load("table1-lr")

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

    table1 = runner.load("table1-loglik")

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
    vcd, table1 = runner.load("vcd"), runner.load("table1-loglik")
    common = vcd.common  # the experiments' shared helpers

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
    paper-method rows repeat cpu's; the variant runs only where a budget names it, is compared against the rivals
    and the speed-measure methods, and is kept out of the criterion."""
    table1 = runner.load("table1-loglik")

    cpu, variant = table1.BUDGETS["cpu"], table1.BUDGETS["cpu-mnist-variant"]
    shared = set(cpu) - {"datasets", "mcmc_learning_rates", "mcmc_learning_rate_reason"}
    assert all(variant[k] == cpu[k] for k in shared) and variant["datasets"] == ("mnist",)
    assert table1.mcmc_learning_rate(variant, "mnist") == table1.mcmc_learning_rate(cpu, "mnist")
    assert "gradhmc-lt-da" in variant["methods"] and {"vae", "dsmala", "dshmc"} < set(variant["methods"])
    assert "methods" not in cpu and "gradhmc-lt-da" not in [name for name, _, _ in table1.METHODS]
    ten = table1.BUDGETS["cpu-mnist-variant-10epochs"]
    changed = {k for k in set(ten) | set(variant) if ten.get(k) != variant.get(k)}
    assert changed == {"mcmc_epochs", "methods", "results_name"} and ten["mcmc_epochs"] == 10
    assert "gradhmc-lt-da" in ten["methods"] and {"vae", "dsmala", "dshmc", "gradhmc-lt"} <= set(ten["methods"])
    # five seeds per method; the variant's better values do not count in the criterion
    base = {"vae": -83.0, "dsmala": -82.0, "dshmc": -81.0, "gradhmc-lt": -81.5, "gradhmc-lt-da": -80.0}
    noise = [0.0, 0.1, -0.1, 0.05, -0.05]
    rows = [{"dataset": "mnist", "method": m, "metric": "test_log_likelihood_ais", "value": v,
             "per_seed": [v + e for e in noise]} for m, v in base.items()]
    result = table1.criterion(rows, "mnist", "ais")
    assert result["per_method"] == {"gradhmc-lt": "fails"} and result["verdict"] == "fails"
    assert result["comparisons"][("gradhmc-lt", "vae")].verdict == "holds"
    lines = table1._criterion_lines(rows, "mnist")
    assert lines[0].startswith("- AIS, **the verdict**: the criterion") and "**fails**" in lines[0]
    assert any(line.startswith("- gradhmc-lt-da, a variant") for line in lines)
    assert any("gradhmc-lt-da beats dshmc: mean paired difference +1.00 nats over 5 seeds" in line and
               line.endswith(": holds.") for line in lines)


def test_table1_loglik_criterion_is_decided_by_seed_level_intervals():
    """A lead in the mean that the seeds do not support is "not resolved"; a consistent one "holds"; the criterion
    holds when one speed-measure method holds against all three rivals; it is decided by AIS, stated in the file."""
    table1 = runner.load("table1-loglik")

    assert table1.VERDICT_ESTIMATOR == "ais"
    assert all(len(table1.BUDGETS[b]["seeds"]) >= 5 for b in ("paper", "cpu"))
    assert set(table1.BUDGETS["cpu"]["datasets"]) == {"mnist", "fashion_mnist"}
    assert table1.BUDGETS["cpu"]["test_images"] >= 5000 and table1.BUDGETS["paper"]["test_images"] is None
    assert all(table1.BUDGETS[b]["ais_images"] >= 1000 for b in ("paper", "cpu"))

    def rows(values):
        return [{"dataset": "d", "method": m, "metric": "test_log_likelihood_ais", "value": sum(v) / len(v),
                 "per_seed": v} for m, v in values.items()]

    rivals = {"vae": [-83.0, -83.0, -83.0], "dsmala": [-82.0, -82.0, -82.0], "dshmc": [-81.0, -81.2, -80.8]}
    # the case: +1.87, -0.19, +0.77 over dshmc (t = 1.4 on 2 degrees of freedom) is not resolved
    noisy = {**rivals, "gradmala-diag": [-81.0 + 1.87, -81.2 - 0.19, -80.8 + 0.77]}
    result = table1.criterion(rows(noisy), "d")
    assert result["comparisons"][("gradmala-diag", "dshmc")].verdict == "not resolved"
    assert result["per_method"]["gradmala-diag"] == "not resolved" and result["verdict"] == "not resolved"
    steady = {**noisy, "gradhmc-lt": [-80.5, -80.6, -80.3]}
    assert table1.criterion(rows(steady), "d")["verdict"] == "holds"
    assert table1.criterion(rows({"vae": [-1.0]}), "d") is None
    partial = table1.criterion(rows({"vae": rivals["vae"], "gradhmc-lt": steady["gradhmc-lt"]}), "d")
    assert partial["rivals"] == ["vae"] and partial["verdict"] == "holds"


def test_test_samples_are_random_fixed_and_nested():
    """Every evaluation's test images are the first n of one fixed random order, never the file's first n; a smaller
    sample (AIS) lies inside a larger one (importance sampling)."""
    import numpy as np

    common = runner.load("vcd").common
    order = common.test_order(10_000)
    assert np.array_equal(order, common.test_order(10_000)) and np.array_equal(np.sort(order), np.arange(10_000))
    assert not np.array_equal(np.sort(order[:1000]), np.arange(1000))
    assert np.mean(order[:1000]) == pytest.approx(5000, abs=300)  # spread over the file, not its start
    assert set(order[:1000]) < set(order[:5000])
    assert "random sample of 5000 of the 10000 test images" in common.sample_text(5000)
    assert common.sample_text(None) == "all 10000 test images"
    text = common.fraction_text([("MCMC epochs", 2, 10), ("test images", None, 10_000)])
    assert text == "Fraction of the paper's budget used: MCMC epochs 2/10 (20%); test images 10000/10000 (100%)."


def test_ais_check_text_says_when_more_temperatures_move_the_estimate():
    common = runner.load("vcd").common
    still = {"vae": {"num_temperatures": 200, "difference": 0.05, "standard_error": 0.04, "moved": False,
                     "acceptance_rate": 0.8}}
    assert "do not move any estimate beyond 2 standard errors" in common.ais_check_text(still)
    moved = {**still, "gradmala": {**still["vae"], "difference": 0.5, "moved": True}}
    text = common.ais_check_text(moved)
    assert "move gradmala beyond 2 standard errors" in text and "200 temperatures" in text
    assert common.ais_check_text({}) == ""


def test_kid_claims_are_oriented_lower_is_better():
    table2 = runner.load("table2-kid")

    assert all(len(table2.BUDGETS[b]["seeds"]) >= 5 for b in ("paper", "cpu"))
    per_seed = {"gradmala": [0.010, 0.011, 0.009], "vae": [0.020, 0.021, 0.019], "dsmala": [0.005, 0.006, 0.004]}
    found = table2.kid_comparisons(per_seed)
    assert found[("gradmala", "vae")].verdict == "holds" and found[("gradmala", "vae")].mean == pytest.approx(0.01)
    assert found[("gradmala", "dsmala")].verdict == "fails" and ("gradhmc", "vae") not in found
    text = table2._verdict_lines([{"method": m, "value": 1.0, "per_seed": v} for m, v in per_seed.items()])
    assert "- gradmala has a lower KID than vae: mean paired difference +10.00 (KID x 1000) over 3 seeds" in text


def test_vcd_per_point_control_variates_cover_most_of_every_budgets_mcmc_phase():
    """The wait is a fraction of the budget's MCMC iterations (the paper's 3000 equalled the cpu budget's whole
    phase), so the per-point stage runs for 90% of it in every budget."""
    vcd = runner.load("vcd")

    for name, budget in vcd.BUDGETS.items():
        num_train = budget["train_size"] or 60_000
        iterations = budget["mcmc_epochs"] * -(-num_train // 100)
        wait = vcd.control_variate_wait(budget, num_train)
        assert wait == max(1, round(0.1 * iterations)), name
        # most of the phase: 90% in the real budgets; 2 of the quick form's 3 iterations
        assert (iterations - wait) / iterations >= (0.85 if name != "quick" else 0.6), name
    assert vcd.control_variate_wait(vcd.BUDGETS["cpu"], 60_000) == 300  # 10% of 5 x 600
    # but each image is visited once per epoch: 4.5 updates per point, 0.9 ** 4.5 of the global value left
    updates, left = vcd.control_variate_updates(vcd.BUDGETS["cpu"], 60_000)
    assert updates == pytest.approx(4.5) and left == pytest.approx(0.9**4.5)
    assert vcd.control_variate_updates(vcd.BUDGETS["long"], 60_000)[0] == pytest.approx(600.3)
    # the training each budget gives a method, beside Ruiz and Titsias's 400000 iterations from scratch
    assert vcd.training_iterations(vcd.BUDGETS["cpu"], ["mnist", "fashion_mnist"]) == {
        "mnist": (15000, 3000), "fashion_mnist": (15000, 3000)}  # (20 + 5) x 600 and 5 x 600
    assert vcd.training_iterations(vcd.BUDGETS["paper"], ["fashion_mnist"]) == {"fashion_mnist": (180000, 6000)}
    assert vcd.training_iterations(vcd.BUDGETS["long"], ["mnist"])["mnist"][1] >= vcd.PAPER_ITERATIONS
    assert ("mnist", "fixed_stochastic") in vcd.CASES and ("mnist", "threshold") in vcd.CASES
    assert vcd.PUBLISHED[("mnist", "fixed_stochastic", "vcd")] == -101.26
    assert not any(key[:2] == ("mnist", "threshold") for key in vcd.PUBLISHED)  # no anchor on other data
    rows = [{"dataset": "mnist", "binarization": "fixed_stochastic", "method": m, "metric": "vcd",
             "per_seed": v, "published": p} for m, v, p in [("vcd", [-101.0, -100.0, -102.0], -101.26),
                                                           ("hoffman", [-104.0, -103.5, -104.5], -103.61)]]
    found = {v["claim"]: v["comparison"].verdict for v in vcd.verdicts(rows, "vcd")}
    assert found["vcd beats hoffman"] == "holds"
    assert found["our vcd lies above the published -101.26"] == "not resolved"


def test_vae_baseline_compares_with_the_published_number_only_on_its_data():
    vae_baseline = runner.load("vae-baseline")

    assert set(vae_baseline.PUBLISHED) == {"fixed_stochastic"}
    assert "cannot be compared" in vae_baseline._comparison_text("threshold", None)
    above = mv.results.compare_seeds([-90.0, -91.0, -89.0], [-111.2] * 3)
    text = vae_baseline._comparison_text("fixed_stochastic", above)
    assert ": holds." in text and "Our VAE scores 21.20 nats above it" in text
    assert "our estimator does not make this gap" in text and "Larochelle and Murray" in text  # a lower bound
    below = mv.results.compare_seeds([-120.0, -121.0, -119.0], [-111.2] * 3)
    text = vae_baseline._comparison_text("fixed_stochastic", below, num_train=1000)
    assert ": fails." in text and "8.80 nats below it; part of the gap can be the estimator" in text
    assert "another fixed draw of the same kind, 1000)" in text
    inside = mv.results.compare_seeds([-112.0, -110.0, -111.5], [-111.2] * 3)
    assert "inside our interval" in vae_baseline._comparison_text("fixed_stochastic", inside)


def test_aiwae_budgets_cut_only_what_they_say(tmp_path):
    """``--budget cpu`` keeps the paper's model, batch, AIS chains and learning-rate schedule (a prefix of its
    stages) and cuts only what its results file states; an unknown budget is refused before anything trains."""
    aiwae = runner.load("aiwae")

    paper, cpu = aiwae.BUDGETS["full"], aiwae.BUDGETS["cpu"]  # "full": the paper's schedule, not all its protocol
    assert set(cpu["configurations"]) < set(paper["configurations"]) and ("aiwae", 5, 5) in cpu["configurations"]
    assert cpu["schedule"] == paper["schedule"][: len(cpu["schedule"])] and len(cpu["schedule"]) < 8
    assert cpu["batch_size"] == paper["batch_size"] and cpu["seed"] == paper["seed"]
    cut = aiwae._cut(cpu)
    stated = {"configurations": "IWAE K in 1, 5, 50", "schedule": "(full budget: 3280 epochs",
              "train_size": "(full budget: all 60000)", "batch_size": f"(full budget: {paper['batch_size']})",
              "eval_images": f"(full budget: {paper['eval_images']} each)",
              "num_samples_bound": (f"S = {cpu['num_samples_bound']} for the NVLB "
                                    f"(full budget: {paper['num_samples_bound']})"),
              **{key: f"{cpu[key]} {key[4:]} (full budget: {paper[key]})"
                 for key in ("ais_temperatures", "ais_chains")}}
    assert set(stated) | {"seed"} == set(paper) == set(cpu)
    for key, text in stated.items():
        assert (text in cut) == (cpu[key] != paper[key]), key
    with pytest.raises(ValueError, match="unknown budget 'gpu'.*full, cpu, quick"):
        aiwae.run(budget="gpu", out_dir=tmp_path)
    with pytest.raises(ValueError, match="budget 'paper' was renamed 'full': .*; run --budget full"):
        aiwae.run(budget="paper", out_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_hvae_mnist_has_no_cpu_budget(tmp_path):
    """hvae-mnist's convolutional networks need a GPU: ``--budget cpu`` is refused by name, like any unknown
    budget, before anything trains."""
    hvae_mnist = runner.load("hvae-mnist")

    assert set(hvae_mnist.BUDGETS) == {"paper", "quick"}
    with pytest.raises(ValueError, match="unknown budget 'cpu'.*paper, quick"):
        hvae_mnist.run(budget="cpu", out_dir=tmp_path)
    assert not (tmp_path / "runs").exists()


def test_table1_part_refuses_a_dataset_its_budget_does_not_run(tmp_path):
    """run_part trains one dataset of a budget (so datasets can run side by side); any other is an error."""
    module = runner.load("table1-loglik")
    with pytest.raises(ValueError, match="does not run 'svhn'; its datasets: \\('mnist', 'fashion_mnist'\\)"):
        module.run_part("svhn", budget="cpu", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown budget 'cpu-typo'"):
        module.run_part("mnist", budget="cpu-typo", out_dir=tmp_path)


# ------------------------------------------------------------------------------------------------- parts
PARTS_EXPERIMENT = '''
import json
import os
import pathlib

DESCRIPTION = "three parts, run side by side, then collected"
NAME = "three-parts"


def parts(*, quick=False, budget=None):
    return ("quick" if quick else budget or "small"), [{"letter": "a"}, {"letter": "b"}, {"letter": "c"}]


def run_part(letter, *, quick=False, out_dir=None, budget=None):
    if letter == os.environ.get("THREE_PARTS_FAIL"):
        raise RuntimeError("part " + letter + " broke")
    folder = pathlib.Path(out_dir) / "made"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / (letter + ".txt"), "a") as handle:  # one line per time the part ran
        handle.write(json.dumps({"budget": budget, "cores": sorted(os.sched_getaffinity(0)),
                                 "xla_flags": os.environ.get("XLA_FLAGS", "")}) + "\\n")


def run(*, quick=False, out_dir=None, budget=None):
    made = sorted(p.name for p in (pathlib.Path(out_dir) / "made").glob("*.txt"))
    path = pathlib.Path(out_dir) / "three-parts.json"
    path.write_text(json.dumps({"made": made, "budget": budget}))
    return [path]
'''


@pytest.fixture
def parts_experiment(tmp_path, monkeypatch):
    """A folder holding one experiment that splits into three parts (a fresh module name per test)."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    stem = f"three_parts_{tmp_path.name.replace('-', '_')}"
    (folder / f"{stem}.py").write_text(PARTS_EXPERIMENT)
    monkeypatch.delenv("THREE_PARTS_FAIL", raising=False)
    return folder, stem.replace("_", "-")


def test_workers_run_each_part_once_on_its_own_core_then_collect(parts_experiment, tmp_path):
    """--workers runs every part in a process of its own, pinned to its share of the cores (one core: XLA's CPU
    backend single-threaded), marks it done, then runs the experiment, which finds every part's output; run
    again, it skips the finished parts and only collects."""
    folder, name = parts_experiment
    out = tmp_path / "out"
    cores = sorted(os.sched_getaffinity(0))[:1] * 2  # two workers, each given one core
    paths = runner.run_parts(name, workers=2, out_dir=out, budget="small", directory=folder, poll_seconds=0.1,
                             cores=cores)
    assert json.loads(paths[0].read_text()) == {"made": ["a.txt", "b.txt", "c.txt"], "budget": "small"}
    for letter in "abc":
        runs = [json.loads(line) for line in (out / "made" / f"{letter}.txt").read_text().splitlines()]
        assert len(runs) == 1 and runs[0]["budget"] == "small" and runs[0]["cores"] == cores[:1]
        assert "--xla_cpu_multi_thread_eigen=false" in runs[0]["xla_flags"]
        marker = json.loads((out / "runs" / "three-parts" / "small" / "parts" / f"letter-{letter}.done").read_text())
        assert marker["part"] == {"letter": letter}
        # the code the part ran: this checkout's revision and its uncommitted changes under lib/ and experiments/
        assert marker["revision"] == mv.results.git_revision() and isinstance(marker["uncommitted"], list)
    (out / "three-parts.json").unlink()
    runner.run_parts(name, workers=2, out_dir=out, budget="small", directory=folder, poll_seconds=0.1, cores=cores)
    assert (out / "three-parts.json").exists()
    assert all(len((out / "made" / f"{letter}.txt").read_text().splitlines()) == 1 for letter in "abc")


def test_parts_provenance_names_the_revisions_the_parts_ran_and_what_differs(tmp_path):
    """A results file collected from parts says at which revisions they were computed and which files under lib/
    and experiments/ differ between those revisions (none, when only other files changed)."""
    import subprocess

    common = runner.load("vcd").common
    repo = tmp_path / "repo"
    for folder in ("lib", "experiments", "docs"):
        (repo / folder).mkdir(parents=True)

    def commit(path, text):
        (repo / path).write_text(text)
        for args in (["add", path], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", path],
                     ["rev-parse", "--short", "HEAD"]):
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout
        return out.strip()

    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    first = commit("lib/model.py", "a = 1\n")
    docs_only = commit("docs/notes.md", "words\n")
    code = commit("experiments/exp.py", "b = 2\n")
    assert common.code_state(repo) == {"revision": code, "uncommitted": []}
    (repo / "lib" / "model.py").write_text("a = 3\n")
    assert common.code_state(repo)["uncommitted"] == ["lib/model.py"]

    parts = tmp_path / "out" / "runs" / "exp" / "cpu" / "parts"
    parts.mkdir(parents=True)
    assert common.parts_provenance("exp", "cpu", tmp_path / "out", repository=repo) == ""  # no part has run

    def mark(label, **record):
        (parts / f"{label}.done").write_text(json.dumps({"part": {"label": label}, "minutes": 1.0, **record}))
        time.sleep(0.01)  # the markers' order is the order they were written

    mark("old")  # written before markers recorded revisions
    mark("a", revision=first, uncommitted=[])
    mark("b", revision=docs_only, uncommitted=[])
    text = common.parts_provenance("exp", "cpu", tmp_path / "out", repository=repo)
    assert text == (f"; parts computed at revision not recorded (1), {first} (1), {docs_only} (1); lib/ and "
                    "experiments/ are the same at those revisions")
    mark("c", revision=code, uncommitted=["lib/model.py"])
    text = common.parts_provenance("exp", "cpu", tmp_path / "out", repository=repo)
    assert text == (f"; parts computed at revision not recorded (1), {first} (1), {docs_only} (1), {code} (1); "
                    "lib/ and experiments/ differ between those revisions in experiments/exp.py; some parts ran "
                    "with uncommitted changes to lib/model.py")


ROWS_EXPERIMENT = """
import json
import pathlib

DESCRIPTION = "two parts that return result rows, collected from their records"
NAME = "two-row-parts"
BUDGETS = {"small": {"scale": 2.0, "seeds": (0, 1)}}


def parts(*, quick=False, budget=None):
    return "small", [{"seed": seed} for seed in BUDGETS["small"]["seeds"]]


def run_part(seed, *, quick=False, out_dir=None, budget=None):
    with open(pathlib.Path(out_dir) / "ran.txt", "a") as handle:  # one line per time a part ran
        handle.write(str(seed) + "\\n")
    return [{"seed": seed, "value": BUDGETS[budget]["scale"] * (seed + 0.25)}]


def run(*, quick=False, out_dir=None, budget=None):
    import common  # the experiments' helpers (run.py puts their folder on the path)

    rows = []
    for part in parts(budget=budget)[1]:
        kept = common.part_rows(NAME, "small", part, BUDGETS["small"], out_dir)
        rows += kept if kept is not None else run_part(**part, out_dir=out_dir, budget="small")
    path = pathlib.Path(out_dir) / "two-row-parts.json"
    path.write_text(json.dumps(rows))
    return [path]
"""


def test_parts_that_return_rows_are_collected_from_their_records_alone(tmp_path):
    """A part's rows are kept in a record under parts/NAME/BUDGET/ beside the results, with its provenance: on a
    machine that has the records and no runs (a fresh clone where they were committed) the parts are not run
    again and the experiment collects the same rows; a record computed under other settings is refused."""
    import shutil

    folder = tmp_path / "experiments"
    folder.mkdir()
    stem = f"two_row_parts_{tmp_path.name.replace('-', '_')}"
    (folder / f"{stem}.py").write_text(ROWS_EXPERIMENT)
    name, out = stem.replace("_", "-"), tmp_path / "out"
    cores = sorted(os.sched_getaffinity(0))[:1] * 2
    paths = runner.run_parts(name, workers=2, out_dir=out, budget="small", directory=folder, poll_seconds=0.1,
                             cores=cores)
    rows = json.loads(paths[0].read_text())
    assert rows == [{"seed": 0, "value": 0.5}, {"seed": 1, "value": 2.5}]
    assert sorted((out / "ran.txt").read_text().split()) == ["0", "1"]  # each part ran once
    record = json.loads((out / "parts" / "two-row-parts" / "small" / "seed-1.json").read_text())
    assert record["rows"] == [{"seed": 1, "value": 2.5}] and record["settings"] == {"scale": 2.0}
    assert record["part"] == {"seed": 1} and record["budget"] == "small"
    assert record["revision"] == mv.results.git_revision() and "JAX" in record["machine"]
    assert record["starts"] == 1

    # a part marked done before records existed, run again (restoring its runs), keeps the marker's provenance
    marker = out / "runs" / "two-row-parts" / "small" / "parts" / "seed-1.done"
    marker.write_text(json.dumps({"part": {"seed": 1}, "minutes": 99.0, "revision": "abc1234", "uncommitted": []}))
    os.utime(marker, (1_700_000_000, 1_700_000_000))  # it finished then
    (out / "parts" / "two-row-parts" / "small" / "seed-1.json").unlink()
    runner.run_one_part(name, 1, budget="small", out_dir=out, directory=folder)
    record = json.loads((out / "parts" / "two-row-parts" / "small" / "seed-1.json").read_text())
    assert (record["minutes"], record["revision"], record["rows"]) == (99.0, "abc1234", [{"seed": 1, "value": 2.5}])
    assert record["finished"] == "2023-11-14T22:13:20Z"
    assert json.loads(marker.read_text())["minutes"] == 99.0 and marker.stat().st_mtime == 1_700_000_000
    assert sorted((out / "ran.txt").read_text().split()) == ["0", "1", "1"]

    shutil.rmtree(out / "runs")  # a fresh machine: the records alone
    (out / "two-row-parts.json").unlink()
    paths = runner.run_parts(name, workers=2, out_dir=out, budget="small", directory=folder, poll_seconds=0.1,
                             cores=cores)
    assert json.loads(paths[0].read_text()) == rows
    assert sorted((out / "ran.txt").read_text().split()) == ["0", "1", "1"]  # nothing ran again
    common = runner.load("vcd").common
    assert common.parts_provenance("two-row-parts", "small", out).startswith(  # from the records, as they finished
        f"; parts computed at revision abc1234 (1), {mv.results.git_revision()} (1)")

    path = out / "parts" / "two-row-parts" / "small" / "seed-0.json"
    changed = json.loads(path.read_text())
    changed["settings"]["scale"] = 3.0
    path.write_text(json.dumps(changed))
    refused = (r"seed-0.json was computed for part \{'seed': 0\} with other settings of budget 'small' \(they "
               r"differ in scale\) than this run's: delete it")
    with pytest.raises(ValueError, match=refused):
        runner.run(name, out_dir=out, budget="small", directory=folder)
    (out / "parts" / "two-row-parts" / "small" / "seed-1.json").unlink()  # a part to run: refused before it runs
    with pytest.raises(ValueError, match=refused):
        runner.run_parts(name, workers=1, out_dir=out, budget="small", directory=folder, poll_seconds=0.1)
    assert sorted((out / "ran.txt").read_text().split()) == ["0", "1", "1"]


def test_a_failed_part_stops_the_collection_and_names_its_log(parts_experiment, tmp_path, monkeypatch):
    """A part that raises is reported with its log, which holds the traceback; nothing is collected, the parts
    that finished are kept, and the same command run again does only what is left."""
    folder, name = parts_experiment
    out = tmp_path / "out"
    monkeypatch.setenv("THREE_PARTS_FAIL", "b")
    with pytest.raises(RuntimeError, match=r"1 part\(s\) of .* failed, so nothing was collected: letter-b "
                                           r"\(exit status 1; log: .*letter-b.log\)"):
        runner.run_parts(name, workers=1, out_dir=out, budget="small", directory=folder, poll_seconds=0.1)
    log = out / "runs" / "three-parts" / "small" / "parts" / "letter-b.log"
    assert "RuntimeError: part b broke" in log.read_text()
    assert not (out / "three-parts.json").exists()
    assert sorted(p.name for p in (out / "made").glob("*.txt")) == ["a.txt"]  # one worker: c never started
    monkeypatch.delenv("THREE_PARTS_FAIL")
    runner.run_parts(name, workers=1, out_dir=out, budget="small", directory=folder, poll_seconds=0.1)
    assert json.loads((out / "three-parts.json").read_text())["made"] == ["a.txt", "b.txt", "c.txt"]
    assert len((out / "made" / "a.txt").read_text().splitlines()) == 1
    markers = out / "runs" / "three-parts" / "small" / "parts"  # b was started twice: its minutes are the last's
    assert [json.loads((markers / f"letter-{x}.done").read_text())["starts"] for x in "abc"] == [1, 2, 1]


def test_workers_are_refused_where_they_mean_nothing(capsys):
    """--workers needs an experiment with parts and at least one worker; list takes no options."""
    assert runner.main(["benchmark", "--workers", "2"]) == 2
    assert "experiment 'benchmark' does not split into parts; run it without --workers" in capsys.readouterr().err
    assert runner.main(["table1-loglik", "--budget", "cpu", "--workers", "0"]) == 2
    assert "--workers must be at least 1, not 0" in capsys.readouterr().err
    assert runner.main(["list", "--workers", "2"]) == 2
    assert "list takes no options" in capsys.readouterr().err


@pytest.mark.parametrize("name, budget, expected", [
    ("table1-loglik", "cpu", [{"dataset": "mnist"}, {"dataset": "fashion_mnist"}]),
    ("table2-kid", "cpu", [{"dataset": d, "seed": s} for s in range(5) for d in ("mnist", "fashion_mnist")]),
    ("vae-baseline", "full", [{"binarization": b, "seed": s} for s in range(5)
                              for b in ("threshold", "fixed_stochastic")]),
    ("vcd", "cpu", [{"dataset": d, "binarization": b, "seed": s} for s in range(5)
                    for d, b in (("mnist", "threshold"), ("mnist", "fixed_stochastic"),
                                 ("fashion_mnist", "threshold"))]),
    ("nonlinear-hvae", "cpu", [{"dataset": d, "num_layers": n, "seed": s} for s in range(5)
                               for d, n in (("mnist", 2), ("fashion_mnist", 2), ("mnist", 3), ("mnist", 4))]),
])
def test_decided_budgets_split_into_every_seed_and_case(name, budget, expected):
    """The decided budgets' parts cover every seed and case once, seed by seed, and each is a valid call of the
    experiment's run_part."""
    module = runner.load(name)
    budget_name, parts = module.parts(budget=budget)
    assert budget_name == budget and parts == expected
    signature = inspect.signature(module.run_part)
    for part in parts:
        signature.bind(**part, budget=budget_name, out_dir=None)


def test_seed_verdicts_describe_says_which_test_images_each_file_rests_on():
    describe = runner.load("seed-verdicts").describe
    recorded = [{"metric": "kid", "value": 0.1, "num_seeds": 5, "num_images": 1000, "test_sample_seed": 20240}]
    assert describe(recorded) == "5 seeds; KID on a random 1000 of the test images (fixed seed 20240)"
    older = [{"metric": "test_log_likelihood", "value": -80.0, "num_seeds": 3, "num_images": 1000}]
    assert describe(older).startswith("3 seeds; importance sampling on the first test images")
