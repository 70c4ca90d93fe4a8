"""The package's own namespace: the user API is importable from ``dereverb``, lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dereverb

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize(("name", "module"), [
    ("Dereverberator", "dereverb.inference"),
    ("from_pretrained", "dereverb.pretrained"),
    ("save_pretrained", "dereverb.pretrained"),
    ("list_pretrained", "dereverb.pretrained"),
    ("DTCN", "dereverb.models"),
    ("TCN", "dereverb.models"),
])  # fmt: skip
def test_user_api_is_exported_from_the_package(name, module):
    import importlib

    assert getattr(dereverb, name) is getattr(importlib.import_module(module), name)
    assert name in dereverb.__all__
    assert name in dir(dereverb)


def test_unknown_names_raise_attribute_error_and_submodules_still_import():
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = dereverb.no_such_name
    from dereverb import errors

    assert errors.__name__ == "dereverb.errors"


def test_import_dereverb_is_light_and_exports_load_on_first_use():
    code = (
        "import sys, dereverb; assert 'torch' not in sys.modules, 'torch imported'; "
        "from dereverb import Dereverberator; assert 'torch' in sys.modules; print(Dereverberator.__name__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Dereverberator"
