"""Room impulse responses simulated with pyroomacoustics, their T60 calibration, and the training targets.

A room is a random shoebox whose size suits the requested T60; one source and one microphone give one
RIR, whose wall absorption is calibrated so that its measured T30 equals the requested T60. RIRs are
precomputed into banks at preparation time and applied by FFT convolution while training. The targets
and levels are defined in ``docs/data.md`` ("Room simulation and targets").

Modules:
    config: :class:`RoomConfig` (the settings of the random rooms) and :func:`sample_room`.
    calibration: :func:`measure_t60` (Schroeder) and the calibration of the wall absorption.
    simulation: :class:`Rir` and :func:`simulate_rir`.
    targets: :func:`reverberate`: the reverberant input and the ``direct`` or ``early`` target.
    bank: :class:`RirBank` (precomputed RIRs in a folder) and :func:`load_rir_folder` (the user's RIRs).
"""

from dereverb.data.rooms.bank import RirBank, load_rir_folder, load_rirs
from dereverb.data.rooms.calibration import measure_t60
from dereverb.data.rooms.config import RoomConfig, sample_room
from dereverb.data.rooms.simulation import Rir, simulate_rir
from dereverb.data.rooms.targets import EARLY_MS, TARGETS, reverberate

__all__ = [
    "EARLY_MS",
    "TARGETS",
    "Rir",
    "RirBank",
    "RoomConfig",
    "load_rir_folder",
    "load_rirs",
    "measure_t60",
    "reverberate",
    "sample_room",
    "simulate_rir",
]
