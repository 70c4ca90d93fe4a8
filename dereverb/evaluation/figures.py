"""The figures of an evaluation (``plots/``): spectrograms of the examples and the improvement against T60.

Each example utterance gets one PNG: the spectrograms of the input, the model output, each
baseline and the target, and, for a DTCN, the learned offsets of its first, middle and last
deformable blocks over time. When the test set has a ``t60_s`` column, one more figure plots each
utterance's Δ SI-SDR, Δ PESQ-NB and Δ ESTOI (against the primary target) against its T60.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dereverb.evaluation.summary import safe_name

__all__ = ["Example", "write_plots"]


@dataclass
class Example:
    """The signals of one example utterance, as the figures and the report show them.

    Attributes:
        id: the utterance.
        model_input: the input at the model's rate (its offsets are drawn from it).
        signals: ``input``, ``output`` and each baseline, at the metric rate.
        target: the primary target at the metric rate.
        target_name: ``direct`` or ``early``.
    """

    id: str
    model_input: np.ndarray
    signals: dict[str, np.ndarray]
    target: np.ndarray
    target_name: str

    def shown(self) -> list[tuple[str, np.ndarray]]:
        """``(name, signal)`` in the order they are shown: input, output, baselines, then the target."""
        return [*self.signals.items(), (self.target_name, self.target)]


def _spectrogram(ax, x: np.ndarray, rate: int, title: str, vmax: float) -> None:
    from scipy.signal import stft

    n = rate * 32 // 1000
    f, t, z = stft(x, rate, nperseg=n, noverlap=n - n // 4)
    db = 20 * np.log10(np.abs(z) + 1e-9)
    ax.pcolormesh(t, f / 1000, db, shading="auto", cmap="magma", vmin=vmax - 80, vmax=vmax, rasterized=True)
    ax.set_ylabel("kHz")
    ax.set_title(title, fontsize=9, loc="left")


def _offsets(loaded, x: np.ndarray) -> list[np.ndarray]:
    """The learned offsets of a deformable model's blocks for ``x`` (``[]`` for another model)."""
    import torch

    if not hasattr(loaded.model, "forward_with_offsets") or not getattr(loaded.model, "deformable", False):
        return []
    with torch.inference_mode():
        param = next(loaded.model.parameters())
        _, offsets = loaded.model.forward_with_offsets(torch.from_numpy(x)[None].to(param.device))
    return [o[0].float().cpu().numpy() for o in offsets]


def _plot_offsets(axes, loaded, offsets: list[np.ndarray], picked: list[int]) -> None:
    """One panel per picked block: the offsets (frames) of each tap over time, averaged over offset groups."""
    config = loaded.model.get_config()
    X, stride = config.get("X", 1), config.get("L", 16) // 2
    for ax, b in zip(axes, picked, strict=True):
        off = offsets[b]  # [G * P, frames]
        taps = config.get("P", off.shape[0])
        per_tap = off.reshape(-1, taps, off.shape[-1]).mean(axis=0)
        t = np.arange(off.shape[-1]) * stride / loaded.sample_rate
        for k in range(taps):
            ax.plot(t, per_tap[k], lw=0.8, label=f"tap {k}")
        ax.set_ylabel("frames")
        ax.set_title(f"learned offsets, block {b} (dilation {2 ** (b % X)})", fontsize=9, loc="left")
        ax.legend(fontsize=7, loc="upper right", ncol=taps)


def _spectrogram_figure(plt, folder: Path, ex: Example, loaded, rate: int) -> str:
    """Write ``plots/spectrogram_<id>.png`` for one example; returns its path relative to ``folder``."""
    titles = {"input": "input (reverberant)", "output": "model output", ex.target_name: f"target ({ex.target_name})"}
    panels = [(titles.get(key, key.upper()), x) for key, x in ex.shown()]
    offsets = _offsets(loaded, ex.model_input)
    picked = sorted({0, len(offsets) // 2, len(offsets) - 1}) if offsets else []
    n_rows = len(panels) + len(picked)
    fig, axes = plt.subplots(n_rows, 1, figsize=(9, 1.7 * n_rows), sharex=True, squeeze=False)
    vmax = 20 * np.log10(np.abs(ex.target).max() * 8 + 1e-9)
    for ax, (title, x) in zip(axes[: len(panels), 0], panels, strict=True):
        _spectrogram(ax, x, rate, title, vmax)
    _plot_offsets(axes[len(panels) :, 0], loaded, offsets, picked)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(ex.id, fontsize=10)
    fig.tight_layout()
    name = f"plots/spectrogram_{safe_name(ex.id)}.png"
    fig.savefig(folder / name, dpi=90)
    plt.close(fig)
    return name


def _t60_figure(plt, folder: Path, rows: list[dict], t60: np.ndarray, names, baselines, target: str) -> str:
    """Write ``plots/improvement_vs_t60.png``: each utterance's Δ against its T60, model and baselines."""
    shown = [n for n in ("si_sdr", "pesq_nb", "estoi") if f"{target}_{n}" in names]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.2), squeeze=False)
    for ax, n in zip(axes[0], shown, strict=True):
        for prefix, label, marker in [("", "model", "o"), *[(f"{b}_", b.upper(), "x") for b in baselines]]:
            y = np.array([_num(r.get(f"{prefix}delta_{target}_{n}")) for r in rows])
            ok = np.isfinite(t60) & np.isfinite(y)
            ax.scatter(t60[ok], y[ok], s=12, marker=marker, label=label)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("T60 (s)")
        ax.set_ylabel(f"Δ {target}_{n} (output - input)")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "plots/improvement_vs_t60.png", dpi=90)
    plt.close(fig)
    return "plots/improvement_vs_t60.png"


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def write_plots(
    folder: Path, examples: list[Example], rows: list[dict], loaded, rate: int, names, baselines, target: str
) -> dict:
    """Write the figures into ``folder / "plots"`` (created here).

    Args:
        folder: the evaluation folder being written.
        examples: the example utterances' signals.
        rows: the per-utterance rows (for the T60 figure).
        loaded: the :class:`~dereverb.loading.LoadedModel` (its offsets are drawn for a DTCN).
        rate: the metric rate, of every signal but ``model_input``.
        names: the metric columns, ``<target>_<metric>``.
        baselines: the baselines scored.
        target: the primary target (the T60 figure's Δ are against it).

    Returns:
        ``{"spectrograms": [(id, relative path), ...], "t60": relative path or None, "notes": [...]}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (folder / "plots").mkdir()
    figures: dict = {"spectrograms": [], "t60": None, "notes": []}
    for ex in examples:
        figures["spectrograms"].append((ex.id, _spectrogram_figure(plt, folder, ex, loaded, rate)))
    t60 = np.array([_num(r.get("t60_s")) for r in rows])
    if np.isfinite(t60).any():
        figures["t60"] = _t60_figure(plt, folder, rows, t60, names, baselines, target)
    else:
        figures["notes"].append("no improvement-vs-T60 plot: the test set has no t60_s column (a manifest has one)")
    return figures
