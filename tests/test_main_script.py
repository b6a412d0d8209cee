"""The README's main job (scripts/main.py) end to end, at a tiny size: it runs on the public API and reports
both methods on the same images."""

import json
import math
import pathlib
import runpy

import pytest

MAIN = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "main.py"


@pytest.mark.slow
def test_main_job_compares_vae_and_gradmala_on_the_same_images(tmp_path, mnist_available, capsys):
    out = tmp_path / "main"
    main = runpy.run_path(str(MAIN))["main"]
    main(["--out", str(out), "--train-size", "200", "--vae-epochs", "1", "--mcmc-epochs", "1",
          "--num-mcmc-steps", "2", "--num-images", "20", "--num-samples", "10"])
    results = json.loads((out / "results.json").read_text())
    vae, gradmala = results["methods"]["vae"], results["methods"]["gradmala"]
    for summary in (vae, gradmala):
        assert summary["num_images"] == 20 and summary["num_samples"] == 10
        assert summary["estimator"] == "importance" and summary["variance_factor"] == 1.5
        assert math.isfinite(summary["test_log_likelihood"])
    # the paired difference is taken over the same images: its mean is the difference of the two means
    difference = results["gradmala_minus_vae"]["mean"]
    assert difference == pytest.approx(gradmala["test_log_likelihood"] - vae["test_log_likelihood"], abs=1e-6)
    for name in ("results.md", "comparison.png", "pretrain/config.json", "vae/metrics.jsonl",
                 "gradmala/metrics.jsonl"):
        assert (out / name).exists(), name
    printed = capsys.readouterr().out
    assert "| vae |" in printed and "| gradmala |" in printed
