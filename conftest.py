"""Shared pytest options and fixtures.

``pytest --device cuda`` runs the same suite on a GPU (default: ``cpu``).
"""

import pytest
import torch


def pytest_ignore_collect(collection_path, config):
    """conftest.py files hold no doctests: --doctest-modules would import the test folders' conftests
    all as one module named ``conftest`` (a collection error when two folders are named at once)."""
    if collection_path.name == "conftest.py":
        return True
    return None


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device the tests run on: cpu (default) or cuda[:N]")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    dev = torch.device(request.config.getoption("--device"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.exit(f"--device {dev} was asked for but CUDA is not available on this machine", returncode=4)
    return dev


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
