"""Dataset kinds (``data.kind``): the registry, and the base class every kind derives from.

A kind is a :class:`DatasetKind` subclass decorated with :func:`register_kind` in a module of this
package, ``dereverb/data/kinds/<kind>.py``, with its settings in ``conf/data/<kind>.yaml``. The
package's modules are found with :mod:`pkgutil` and imported the first time a kind is looked up
(:func:`kind_class`), so adding a kind edits no list anywhere; a kind defined elsewhere (a test, a
plug-in) is registered when its module calls :func:`register_kind`. ``docs/data.md`` ("Adding a
dataset kind") has a worked example.

The machinery shared by every kind lives beside it: :func:`dereverb.data.settings.data_settings`
(defaults and checks), :func:`dereverb.data.preparation.prepare` (the prepared folder keyed by a
settings hash) and :func:`dereverb.data.datasets.build_datasets` (the SpeechBrain datasets).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from dereverb.data.items import PairedItem
from dereverb.errors import DataError

__all__ = [
    "BUILD_ONLY",
    "COMMON",
    "KINDS",
    "MISSING",
    "DatasetKind",
    "check_choice",
    "check_positive_int",
    "check_target",
    "kind_class",
    "kind_names",
    "register_kind",
]

MISSING = "???"
"""A required setting (as Hydra marks it)."""

COMMON = {"kind": MISSING, "save_folder": MISSING, "segment_s": 4.0, "on_bad_file": "error"}
"""The settings of every kind, with their defaults."""

BUILD_ONLY = ("save_folder", "segment_s")
"""Settings that change where a preparation goes or how items are cut, not what is prepared."""

KINDS: dict[str, type[DatasetKind]] = {}
"""The registered kinds by name; :func:`kind_names` and :func:`kind_class` fill it with the package's own first."""

_discovered = False


class DatasetKind:
    """One kind of dataset: its settings, how it is prepared into manifests, and the items it provides.

    A subclass sets :attr:`name`, :attr:`defaults` and :attr:`folders`, may extend :meth:`check`, and
    implements :meth:`fingerprint`, :meth:`roots` and :meth:`prepare`; :meth:`item` has a default for
    manifests with ``reverberant`` and target columns. An instance holds validated settings (every key
    of :attr:`defaults` and :data:`COMMON`, folders absolute) and the sample rate.

    Attributes:
        name: the value of ``data.kind``.
        defaults: the kind's own settings with their defaults, :data:`MISSING` for required ones
            (:data:`COMMON` is added to them); ``conf/data/<name>.yaml`` holds the same.
        folders: the settings naming folders: made absolute, left out of the content hash (a moved
            folder is the same data), and replaced from the current settings when items are read.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    folders: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: dict, sample_rate: int) -> None:
        self.settings = settings
        self.sample_rate = sample_rate

    @classmethod
    def all_defaults(cls) -> dict:
        """Every setting of the kind with its default: :data:`COMMON` and :attr:`defaults`."""
        return {**COMMON, **cls.defaults}

    @classmethod
    def check(cls, settings: dict) -> None:
        """Check the kind's own settings (already merged with the defaults), normalising them in place.

        Raises:
            DataError: one line naming the key (``data.<key>=<value>: ...``).
        """

    def content(self) -> dict:
        """The settings that change what is prepared (hashed into the folder name, recorded in ``prepared.json``)."""
        skip = (*BUILD_ONLY, *self.folders)
        return {**{k: v for k, v in self.settings.items() if k not in skip}, "sample_rate": self.sample_rate}

    def fingerprint(self) -> list:
        """What the sources hold (e.g. relative names and sizes), hashed with :meth:`content`; cheap to compute.

        Raises:
            DataError: a missing source folder, or sources that cannot be prepared.
        """
        raise NotImplementedError

    def roots(self) -> dict[str, str]:
        """The manifests' placeholders (``data_root``, ...) and the folders they stand for, from these settings."""
        raise NotImplementedError

    def prepare(self, folder: Path, progress: bool) -> dict:
        """Write ``train.csv``, ``valid.csv`` and ``test.csv`` (and any audio they need) into ``folder``.

        ``folder`` is a new empty folder, published under its final name only when this returns.

        Args:
            folder: where to write.
            progress: show tqdm bars.

        Returns:
            dict: ``{"counts", "hours", "skipped"}`` (:func:`~dereverb.data.manifests.split_stats`),
            recorded in ``prepared.json``.

        Raises:
            DataError: bad input (see ``data.on_bad_file``).
        """
        raise NotImplementedError

    def item(self, split: str, folder: Path) -> tuple[Callable, list[str]]:
        """What the kind provides for ``split``: a dynamic item giving ``reverberant`` and ``target``, and the
        manifest columns it takes (as paths).

        The default reads the ``reverberant`` column and the target's column (``data.target``, else
        ``direct``) as a pair, cropped at random to ``data.segment_s`` for training.
        """
        segment = round(self.settings["segment_s"] * self.sample_rate) if split == "train" else None
        return PairedItem(self.sample_rate, segment), ["reverberant", self.settings.get("target", "direct")]


def register_kind(cls: type[DatasetKind]) -> type[DatasetKind]:
    """Class decorator: make ``cls`` the kind named ``cls.name``.

    Raises:
        TypeError: ``cls`` is not a :class:`DatasetKind` with a name.
        ValueError: another class has that name already.
    """
    if not (isinstance(cls, type) and issubclass(cls, DatasetKind) and isinstance(cls.name, str) and cls.name):
        raise TypeError(f"{cls!r}: a dataset kind is a DatasetKind subclass with a name")
    other = KINDS.get(cls.name)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"data.kind={cls.name}: registered already by {other.__module__}.{other.__qualname__}")
    KINDS[cls.name] = cls
    return cls


def _discover() -> None:
    """Import every module of this package once, so that their kinds register themselves."""
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True


def kind_names() -> list[str]:
    """The names of the registered kinds, sorted.

    Example:
        >>> kind_names()
        ['demo', 'folder', 'simulate', 'whamr']
    """
    _discover()
    return sorted(KINDS)


def kind_class(name: str) -> type[DatasetKind]:
    """The kind registered as ``name``.

    Raises:
        DataError: no such kind (``data.kind=<name>: unknown; expected one of ...``).
    """
    if name not in kind_names():
        raise DataError(f"data.kind={name!r}: unknown; expected one of {', '.join(kind_names())}")
    return KINDS[name]


def check_choice(settings: dict, key: str, choices: tuple) -> None:
    """A setting that must be one of ``choices``.

    Example:
        >>> check_choice({"version": "mid"}, "version", ("min", "max"))
        Traceback (most recent call last):
        ...
        dereverb.errors.DataError: data.version='mid': expected one of min, max
    """
    if settings[key] not in choices:
        raise DataError(f"data.{key}={settings[key]!r}: expected one of {', '.join(map(str, choices))}")


def check_target(settings: dict, choices: tuple = ("direct", "early")) -> None:
    """``data.target``: ``direct`` or ``early``; the former name ``clean`` is refused with the new one.

    Example:
        >>> check_target({"target": "clean"})
        Traceback (most recent call last):
        ...
        dereverb.errors.DataError: data.target=clean: this target is now called direct (set data.target=direct)
    """
    if settings["target"] == "clean" and "direct" in choices:
        raise DataError("data.target=clean: this target is now called direct (set data.target=direct)")
    check_choice(settings, "target", choices)


def check_positive_int(settings: dict, key: str) -> None:
    """A setting that must be an integer >= 1."""
    value = settings[key]
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise DataError(f"data.{key}={value!r}: expected a positive integer")
