"""A detection timeline as PNG: spectrogram, per-class score curves, event boxes.

The spectrogram is each window's mean log-mel (kept while scoring, so the
file is not decoded twice and a 10-hour recording plots in bounded memory);
curves are window scores at window centres with each class's threshold
dashed; events are boxes on one row per class.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tympan.fileio import atomic_write_bytes
from tympan.inference.detect import WindowScores
from tympan.inference.events import Event


def save_timeline(path: Path, scores: WindowScores, events: list[Event],
                  thresholds: Mapping[str, float], *, channel_index: int = 0,
                  dpi: int = 100) -> Path:
    """Write the timeline of ``scores`` (channel ``channel_index``) and ``events`` as a PNG
    (atomically). Needs ``scores.spectrum`` (``Detector.score_file(keep_spectrum=True)``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if scores.spectrum is None:
        raise ValueError("the timeline needs window spectra: score with keep_spectrum=True")
    classes = scores.classes
    edges = scores.segment_edges_seconds()
    centres = (scores.starts + scores.ends()) / (2.0 * scores.sample_rate)
    channel = scores.channels[channel_index]
    fig, (ax_spec, ax_score, ax_events) = plt.subplots(
        3, 1, figsize=(12, 6.5), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1]})
    spectrum = scores.spectrum[:, channel_index, :].T  # (n_mels, n_windows)
    ax_spec.pcolormesh(edges, np.arange(spectrum.shape[0] + 1), spectrum, shading="flat",
                       cmap="magma")
    ax_spec.set_ylabel("mel band")
    title = scores.path.name + ("" if channel == 0 else f" (channel {channel})")
    if scores.failure is not None:
        title += f" — {scores.failure}"
    ax_spec.set_title(title, fontsize=10)
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for k, label in enumerate(classes):
        colour = colours(k % colours.N)
        ax_score.plot(centres, scores.scores[:, channel_index, k], color=colour, lw=1,
                      label=label)
        if label in thresholds:
            ax_score.axhline(thresholds[label], color=colour, lw=0.6, ls="--")
    ax_score.set_ylim(0, 1)
    ax_score.set_ylabel("score")
    if len(classes) <= 12:
        ax_score.legend(loc="upper right", fontsize=7, ncol=min(len(classes), 6))
    rows = {label: k for k, label in enumerate(classes)}
    for event in events:
        if event.channel != channel:
            continue
        k = rows[event.label]
        ax_events.broken_barh([(event.start_seconds, event.duration_seconds)], (k - 0.4, 0.8),
                              color=colours(k % colours.N))
    ax_events.set_yticks(range(len(classes)))
    ax_events.set_yticklabels(classes, fontsize=7)
    ax_events.set_ylim(-0.6, len(classes) - 0.4)
    ax_events.set_xlim(0, max(scores.duration_seconds, 1e-3))
    ax_events.set_xlabel("time (s)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


__all__ = ["save_timeline"]
