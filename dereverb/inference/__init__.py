"""Dereverberate recordings with a trained model: :class:`Dereverberator` (the command line is
``dereverb-enhance``, :mod:`dereverb.cli.enhance`).

A shipped model (``dtcn-8k``, ``dtcn-16k``) or any model folder runs on tensors, arrays or
wav/flac files of any rate and channel count; loading needs neither Hydra nor the training stack
(:func:`dereverb.pretrained.from_pretrained` reads ``config.json`` and safetensors weights).

* :mod:`~dereverb.inference.dereverberator`: the class, the output level (:func:`calibrate_gain`)
  and the default model for an input rate (:func:`default_model`).
* :mod:`~dereverb.inference.segments`: long signals in overlapping segments, cross-faded, with
  the norms following the whole signal (a gLN model takes two passes, a causal cLN model carries
  its statistics across segments). How closely the segment-wise output agrees with the
  whole-signal output is measured by ``scripts/bench_inference.py``
  (docs/performance.md, section Inference).
* :mod:`~dereverb.inference.files`: reading and writing audio files (:func:`output_format`),
  atomically, never replacing a file unless asked.
"""

from dereverb.errors import EnhanceError
from dereverb.inference.dereverberator import DEFAULT_CHUNK_SECONDS, Dereverberator, calibrate_gain, default_model
from dereverb.inference.files import AUDIO_SUFFIXES, output_format

__all__ = [
    "AUDIO_SUFFIXES",
    "DEFAULT_CHUNK_SECONDS",
    "Dereverberator",
    "EnhanceError",
    "calibrate_gain",
    "default_model",
    "output_format",
]
