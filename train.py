"""Train a dereverberation model: ``python train.py conf/dtcn.yaml [key=value ...]`` (see :mod:`dereverb.cli.train`)."""

import sys

from dereverb.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
