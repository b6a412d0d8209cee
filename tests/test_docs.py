"""The docs' runnable examples run as written: every ```python block of the pages listed here is executed in a
fresh namespace, so an example that drifts from the API fails the suite instead of a user's first try."""

import pathlib
import re

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
# Pages whose python blocks are complete programs (other pages show fragments that name the user's own objects).
RUNNABLE = ["kernels.md#A Bayesian logistic regression on a real data set"]


def _blocks(page: str, after: str) -> list[str]:
    text = (DOCS / page).read_text()
    start = text.index(after)
    block = re.search(r"```python\n(.*?)```", text[start:], flags=re.S)
    assert block, f"no python block after {after!r} in docs/{page}"
    return [block.group(1)]


@pytest.mark.slow
@pytest.mark.parametrize("where", RUNNABLE)
def test_example_runs_and_mixes(where, capsys):
    page, after = where.split("#", 1)
    (code,) = _blocks(page, after)
    namespace = {}
    exec(compile(code, f"docs/{page}", "exec"), namespace)
    # the example's own claims: the tuned kernel draws (1000, 16, d), its chains agree, BlackJAX's loop runs it
    draws, diagnostics, more = namespace["draws"], namespace["diagnostics"], namespace["more"]
    assert draws.shape == (1000, 16, 31) and more.shape == (16, 1000, 31)
    assert namespace["results"].problems == ()
    assert float(diagnostics.potential_scale_reduction.max()) < 1.1
    assert float(diagnostics.effective_sample_size.min()) > 100
