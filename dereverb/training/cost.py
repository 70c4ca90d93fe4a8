"""What a training run will cost on this machine, measured on its first steps and logged once.

:class:`StepClock` times the first training steps of a call of ``fit`` (wall time from the end of
one step to the end of the next: loading the batch included), leaving out the first step, which
warms up (data loader workers, allocator, kernels). :class:`RunCost` turns the median of the
measured steps into one line: steps per epoch, seconds per step, minutes per epoch, the time of
the configured epochs and where ``run.max_minutes`` or ``run.max_steps`` will cut it. Validation,
test and export come on top.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

__all__ = ["RunCost", "StepClock", "duration"]


def _figure(x: float) -> str:
    """Three significant digits, never in scientific notation for the sizes a run has."""
    return f"{x:.0f}" if x >= 1000 else f"{x:.3g}"


def duration(seconds: float) -> str:
    """A duration in the unit that reads best: seconds, minutes, hours or days.

    Example:
        >>> duration(6.1), duration(810), duration(81_000), duration(3 * 86400)
        ('6.1 s', '13.5 min', '22.5 h', '3 d')
    """
    for unit, size, limit in (("s", 1, 90), ("min", 60, 90 * 60), ("h", 3600, 72 * 3600)):
        if seconds < limit:
            return f"{_figure(seconds / size)} {unit}"
    return f"{_figure(seconds / 86400)} d"


class StepClock:
    """Times the steps ``first`` to ``last`` of an epoch (the first step warms up and is left out).

    Args:
        steps: the steps this epoch will run; with fewer than ``last`` the window shrinks to
            them, and an epoch of one step is measured on that step.
        first, last: the window of steps, counted from 1.
        start: when the epoch started (default: now, ``time.perf_counter()``).

    Example:
        >>> clock = StepClock(steps=100, start=0.0)
        >>> [clock.tick(now) for now in (10.0, 12.0, 13.0, 15.0)]  # the ends of steps 1-4
        [None, None, None, 2.0]
        >>> clock.measured
        'median of steps 2-4'
    """

    def __init__(self, steps: int | None = None, first: int = 2, last: int = 4, start: float | None = None):
        last = last if steps is None else max(1, min(last, steps))
        self.first, self.last = min(first, last), last
        self.measured = f"median of steps {self.first}-{self.last}" if self.first < self.last else f"step {self.last}"
        self._started = time.perf_counter() if start is None else start
        self._count, self._seconds = 0, []

    def tick(self, now: float | None = None) -> float | None:
        """Mark the end of a step; returns the median seconds per step once the window is measured."""
        now = time.perf_counter() if now is None else now
        self._count += 1
        if self._count >= self.first:
            self._seconds.append(now - self._started)
        self._started = now
        return statistics.median(self._seconds) if self._count == self.last else None


@dataclass
class RunCost:
    """The cost of a training run, from its measured seconds per step.

    Args:
        steps_per_epoch: training batches (optimizer steps) per epoch.
        seconds_per_step: measured, e.g. by :class:`StepClock`.
        epochs: the configured epochs (``run.epochs``).
        measured: how ``seconds_per_step`` was measured, e.g. ``median of steps 2-4``.
        epochs_left: the epochs this call still has to train (a resumed run), when fewer than ``epochs``.
        max_minutes: ``run.max_minutes``: the training-time budget of this call.
        max_steps: ``run.max_steps``: the optimizer steps of the whole run, resumes included.
        steps_done: the optimizer steps taken before this call (a resumed run).

    Example:
        >>> cost = RunCost(133, 6.1, 100, "median of steps 2-4", max_minutes=145)
        >>> cost.line()  # doctest: +NORMALIZE_WHITESPACE
        'cost estimate: 133 steps/epoch, 6.1 s/step (median of steps 2-4) -> 13.5 min/epoch,
        22.5 h for 100 epochs (run.max_minutes=145 stops it after ~10.7 epochs)'
    """

    steps_per_epoch: int
    seconds_per_step: float
    epochs: int
    measured: str
    epochs_left: float | None = None
    max_minutes: float | None = None
    max_steps: int | None = None
    steps_done: int = 0

    @property
    def epoch_seconds(self) -> float:
        """Seconds of training steps per epoch (validation not included)."""
        return self.steps_per_epoch * self.seconds_per_step

    def line(self) -> str:
        """The log line: ``cost estimate: S steps/epoch, T s/step (...) -> E/epoch, TOTAL for N epochs (...)``."""
        epoch = self.epoch_seconds
        text = (
            f"cost estimate: {self.steps_per_epoch} steps/epoch, {_figure(self.seconds_per_step)} s/step "
            f"({self.measured}) -> {duration(epoch)}/epoch, {duration(epoch * self.epochs)} for {self.epochs} epochs"
        )
        left = self.epochs if self.epochs_left is None else self.epochs_left
        if self.epochs_left is not None:
            text += f", {duration(epoch * left)} for the {_figure(left)} left"
        cuts = []
        if self.max_minutes is not None:
            cuts.append((60.0 * self.max_minutes / max(epoch, 1e-9), f"run.max_minutes={self.max_minutes:g}"))
        if self.max_steps is not None:
            steps = max(self.max_steps - self.steps_done, 0)
            cuts.append((steps / self.steps_per_epoch, f"run.max_steps={self.max_steps}"))
        notes = [
            f"{what} stops it after ~{_figure(after)} epochs" if after < left else f"within {what}"
            for after, what in cuts
        ]
        return text + (f" ({'; '.join(notes)})" if notes else "")
