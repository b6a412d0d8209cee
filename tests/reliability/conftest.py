"""Every test in this directory is a fault-injection probe: marked ``faults`` (``pytest -m faults``)."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "reliability" in str(item.fspath):
            item.add_marker(pytest.mark.faults)
