"""glibc malloc tuning: applied on glibc, left alone when asked or when another allocator is preloaded."""

from __future__ import annotations

import platform

import pytest

from dereverb.allocator import tune_glibc_malloc

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_applied_on_glibc(monkeypatch):
    monkeypatch.delenv("DEREVERB_MALLOC", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "")
    assert tune_glibc_malloc() is True  # both mallopt calls accepted by this C library


@pytest.mark.parametrize(
    ("env", "value"),
    [("DEREVERB_MALLOC", "default"), ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")],
)
def test_left_alone(monkeypatch, env, value):
    monkeypatch.setenv(env, value)
    assert tune_glibc_malloc() is False


@pytest.mark.parametrize(
    ("preload", "expected"),
    [("", None), ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "jemalloc"), ("libmimalloc.so", "mimalloc")],
)
def test_the_preloaded_allocator_is_named(monkeypatch, preload, expected):
    from dereverb.allocator import preloaded_allocator

    monkeypatch.setenv("LD_PRELOAD", preload)
    assert preloaded_allocator() == expected
