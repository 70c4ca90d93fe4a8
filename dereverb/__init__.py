"""dereverb: neural dereverberation of single-channel speech (DTCN and TCN).

The user API is importable from the package itself: :class:`~dereverb.inference.Dereverberator`,
the model folder functions :func:`~dereverb.pretrained.from_pretrained`,
:func:`~dereverb.pretrained.save_pretrained` and :func:`~dereverb.pretrained.list_pretrained`, and
the models :class:`~dereverb.models.DTCN` and :class:`~dereverb.models.TCN`. Each is imported on
first use, so ``import dereverb`` stays light (it does not import torch).

Example:
    >>> import dereverb
    >>> dereverb.Dereverberator.__name__, dereverb.DTCN.__name__
    ('Dereverberator', 'DTCN')
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

#: the lazily imported user API: name -> the module that defines it
_EXPORTS = {
    "Dereverberator": "dereverb.inference",
    "from_pretrained": "dereverb.pretrained",
    "save_pretrained": "dereverb.pretrained",
    "list_pretrained": "dereverb.pretrained",
    "DTCN": "dereverb.models",
    "TCN": "dereverb.models",
}

__all__ = ["DTCN", "TCN", "Dereverberator", "__version__", "from_pretrained", "list_pretrained", "save_pretrained"]

if TYPE_CHECKING:
    from dereverb.inference import Dereverberator
    from dereverb.models import DTCN, TCN
    from dereverb.pretrained import from_pretrained, list_pretrained, save_pretrained


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dereverb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access does not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
