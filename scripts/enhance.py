"""Dereverberate wav files: ``python scripts/enhance.py IN.wav -o OUT.wav [--model dtcn-8k]``.

A shim over :func:`dereverb.cli.enhance.main` (the same as the ``dereverb-enhance`` command).
"""

import sys

from dereverb.cli.enhance import main

if __name__ == "__main__":
    sys.exit(main())
