"""The hierarchical experiments end to end in their quick form."""

import importlib.util
import json
import pathlib

import pytest

RUNNER = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "run.py"


def _load_runner():
    """The research scripts' runner, loaded by path (the experiments live outside the library)."""
    spec = importlib.util.spec_from_file_location("experiments_run", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
linear_hvae = runner.load("linear-hvae")

KEYS = {"experiment", "dataset", "method", "metric", "value", "std", "num_seeds"}


@pytest.mark.slow
def test_linear_hvae_quick_shrinks_the_condition_number(tmp_path):
    """linear-hvae --quick on the 10-20 model (the 50-100 half runs in tests/test_experiments.py): the learnt
    lower-triangular C brings cond(C^T Sigma_{z|x}^{-1} C) below a fifth of cond(Sigma_{z|x}^{-1}) and no higher
    than the diagonal C's."""
    linear_hvae.run(quick=True, out_dir=tmp_path, dims=("10-20",))
    rows = json.loads((tmp_path / "linear-hvae.json").read_text())
    assert rows and all(KEYS <= set(r) for r in rows)
    assert {r["dataset"] for r in rows} == {"10-20"}
    assert {r["method"] for r in rows} >= {"vae", "gradmala-diag", "gradmala-lt", "window-mala"}
    check = linear_hvae.check_preconditioning(rows, "10-20")
    assert check["passed"], check
    gradients = {r["method"]: r["value"] for r in rows if r["metric"] == "gradient_evaluations"}
    assert gradients["window-mala"] == 1 + linear_hvae.QUICK["window_steps"]
    assert (tmp_path / "linear-hvae.md").read_text().startswith("# linear-hvae")


def test_linear_hvae_budgets_cut_only_what_they_say(tmp_path):
    """``--budget cpu`` keeps the paper's schedule except the 50-100 MCMC phase; an unknown budget is refused by
    name before anything trains."""
    paper, cpu = linear_hvae.BUDGETS["paper"], linear_hvae.BUDGETS["cpu"]
    assert cpu["schedules"]["10-20"] == paper["schedules"]["10-20"]
    assert cpu["schedules"]["50-100"]["vae_epochs"] == paper["schedules"]["50-100"]["vae_epochs"]
    assert cpu["schedules"]["50-100"]["mcmc_epochs"] < paper["schedules"]["50-100"]["mcmc_epochs"]
    assert cpu["methods"] == paper["methods"] and cpu["window"] == paper["window"]
    with pytest.raises(ValueError, match="unknown budget 'gpu'.*paper, cpu, quick"):
        linear_hvae.run(budget="gpu", out_dir=tmp_path)


def test_nonlinear_hvae_budgets_cut_only_what_they_say(tmp_path):
    """``--budget cpu`` keeps the paper's model, methods, K, hVAE phase, cases (the deeper MNIST ones included) and
    KID protocol and cuts MCMC epochs and test images; an unknown budget is refused by name before anything loads or
    trains."""
    nonlinear_hvae = runner.load("nonlinear-hvae")

    paper, cpu = nonlinear_hvae.BUDGETS["paper"], nonlinear_hvae.BUDGETS["cpu"]
    assert cpu["methods"] == paper["methods"] and cpu["num_mcmc_steps"] == paper["num_mcmc_steps"]
    assert cpu["kid_resize_to"] == paper["kid_resize_to"] and cpu["kid_num_subsets"] == paper["kid_num_subsets"]
    assert cpu["vae_epochs"] == paper["vae_epochs"] and 0 < cpu["mcmc_epochs"] < paper["mcmc_epochs"]
    assert cpu["cases"] == paper["cases"] and {("mnist", 3), ("mnist", 4)} <= set(cpu["cases"])
    with pytest.raises(ValueError, match="unknown budget 'gpu'.*paper, cpu, quick"):
        nonlinear_hvae.run(budget="gpu", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown budget 'gpu'"):
        nonlinear_hvae.run_part("mnist", 2, budget="gpu", out_dir=tmp_path)


def test_nonlinear_hvae_results_say_which_cases_are_still_to_run():
    """The results file written after an unfinished case list names the missing cases as partial; AIS, the
    verdicts' estimator, stands beside importance sampling on the same images."""
    nonlinear_hvae = runner.load("nonlinear-hvae")

    rows = [{"dataset": "mnist", "num_layers": 2, "method": "vae", "metric": m, "value": v, "std": 0.5,
             "num_seeds": 2, "latent_sizes": [5, 10], "num_generated": 10, "num_reference": 10, "resize_to": 75,
             "num_subsets": 5, "subset_size": 10, "num_images": 20, "importance_on_same_images": [-81.5, -81.5]}
            for m, v in (("test_log_likelihood", -80.0), ("test_log_likelihood_ais", -79.25), ("kid", 0.1))]
    partial = nonlinear_hvae._markdown(rows, [], "cpu", 1.0, pending=[("fashion_mnist", 2)])
    assert "**Partial" in partial and "fashion_mnist with 2 layers" in partial and "-80.00" in partial
    assert "| -79.25 +- 0.50 | -81.50 | -80.00 +- 0.50 |" in partial and "AIS on 20 (verdict)" in partial
    assert "Partial" not in nonlinear_hvae._markdown(rows, [], "cpu", 1.0)
