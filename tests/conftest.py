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


@pytest.fixture
def deny_creation(monkeypatch):
    """``deny_creation(folder)``: creating a file under ``folder`` fails with EACCES, as in a read-only
    folder (the tests run as root, whom file modes do not stop)."""
    import os

    real_open = os.open

    def deny(folder):
        def denied(path, flags, *args, **kwargs):
            if str(path).startswith(str(folder)) and flags & os.O_CREAT:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", denied)

    return deny
