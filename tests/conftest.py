"""Fixtures shared by the test files: a tiny RIR bank, simulated once per test run."""

from __future__ import annotations

import pytest

from dereverb.data.rooms import RirBank, RoomConfig

#: the settings of the ``rir_bank`` fixture: 6 short RIRs at 8 kHz (well under a second to build)
TINY_BANK = {
    "n": 6,
    "config": RoomConfig(t60_range=(0.2, 0.4), distance_range=(0.5, 3.0)),
    "sample_rate": 8000,
    "seed": 0,
}


@pytest.fixture(scope="session")
def rir_bank(tmp_path_factory) -> RirBank:
    """A tiny RIR bank (``TINY_BANK`` settings) in a session temporary folder; treat it as read-only."""
    return RirBank.build(tmp_path_factory.mktemp("rir_bank") / "bank", progress=False, **TINY_BANK)
