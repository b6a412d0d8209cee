"""pytest settings for the whole repository (the test suite's own live in tests/conftest.py, lib/conftest.py).

pyproject.toml turns on ``--doctest-modules`` so that the docstring examples in ``lib/mcmcvae`` run. That option
would also collect each ``conftest.py`` as a module of examples, and the test suite's several ``conftest.py``
files (one basename, no packages) would then clash on import. They hold no examples, so they are not collected
as modules; pytest still loads them as conftests.
"""

collect_ignore_glob = ["conftest.py", "*/conftest.py"]
