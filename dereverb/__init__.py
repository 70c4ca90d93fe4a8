"""dereverb: neural dereverberation of single-channel speech (DTCN and TCN)."""

__version__ = "0.1.0"
