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
