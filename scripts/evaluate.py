"""Evaluate a model on a reverberant test set: ``python scripts/evaluate.py --model M --data D --out O``.

A shim over :func:`dereverb.cli.evaluate.main` (the same as the ``dereverb-evaluate`` command); see
``docs/evaluation.md``.
"""

import sys

from dereverb.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
