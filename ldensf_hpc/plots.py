"""PNG figures for reports: field panels (paper Fig. 3), error curves (Fig. 5-6),
parameter estimates with spread, and scaling plots. Matplotlib's Agg backend only."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def field_panels(rows: dict[str, np.ndarray], times, path, title: str = "", coordinates=None, label: str = "",
                 sensors=None) -> Path:
    """A grid of 2-D fields: one row per label (truth, forecast, analysis, error), one column per time.

    ``rows[label]`` has shape ``(n_times, ny, nx)``; rows whose label contains "error"
    get a diverging colour map centred at zero, the others share one colour range. With
    ``coordinates = (x (nx,), y (ny,))`` the maps are drawn on them (y upwards, whichever way the rows
    run, e.g. latitudes from north to south) and ``sensors (m, 2)`` = (x, y) are marked on the first row;
    ``label`` names the colour bars.
    """
    extent, flip = None, False
    if coordinates is not None:
        x, y = (np.asarray(c, dtype=float) for c in coordinates)
        extent, flip = (x.min(), x.max(), y.min(), y.max()), bool(y[0] > y[-1])
    names = list(rows)
    n_t = len(times)
    fig, axes = plt.subplots(len(names), n_t, figsize=(2.2 * n_t, 2.1 * len(names)), squeeze=False)
    plain = [rows[k] for k in names if "error" not in k]
    lo = min(float(np.min(v)) for v in plain) if plain else -1.0
    hi = max(float(np.max(v)) for v in plain) if plain else 1.0
    for i, name in enumerate(names):
        err = "error" in name
        lim = float(np.max(np.abs(rows[name]))) or 1.0
        for j in range(n_t):
            ax = axes[i, j]
            img = ax.imshow(rows[name][j][::-1] if flip else rows[name][j], origin="lower",
                            cmap="RdBu_r" if err else "viridis", vmin=-lim if err else lo, vmax=lim if err else hi,
                            extent=extent)
            if sensors is not None and i == 0:
                ax.plot(*np.asarray(sensors).T, "k.", markersize=2)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t = {times[j]:.4g}", fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
        fig.colorbar(img, ax=axes[i, :].tolist(), shrink=0.8, label=label)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def error_curves(times, curves: dict[str, np.ndarray], path, ylabel: str = "relative RMSE", log: bool = True) -> Path:
    """Error vs time, one line per method (paper Fig. 6)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, values in curves.items():
        ax.plot(times, values, marker=".", label=label)
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def error_panels(times, panels: dict[str, dict[str, np.ndarray]], path, ylabel: str = "relative RMSE") -> Path:
    """One error-vs-time panel per setting (e.g. noise level), one line per method, shared axes."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), sharey=True, squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels.items()):
        for label, values in curves.items():
            ax.plot(times, values, marker=".", label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("time")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=7)
    return _save(fig, path)


def parameter_estimates(times, estimates: dict[str, tuple[np.ndarray, np.ndarray]], truth: np.ndarray, names,
                        path) -> Path:
    """Ensemble-mean parameter estimates with ±1 spread bands against the truth, one panel per parameter.

    ``estimates[label] = (mean (T, p), spread (T, p))``, one line and band per method.
    """
    p = len(names)
    fig, axes = plt.subplots(1, p, figsize=(4.2 * p, 3.2), squeeze=False)
    for label, (mean, spread) in estimates.items():
        mean, spread = np.asarray(mean).reshape(len(times), p), np.asarray(spread).reshape(len(times), p)
        for i in range(p):
            line, = axes[0, i].plot(times, mean[:, i], label=label)
            axes[0, i].fill_between(times, mean[:, i] - spread[:, i], mean[:, i] + spread[:, i], alpha=0.2,
                                    color=line.get_color())
    for i in range(p):
        ax = axes[0, i]
        ax.axhline(truth[i], color="k", ls="--", label="truth")
        ax.set_title(names[i])
        ax.set_xlabel("time")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def scaling(workers, measured: dict[str, np.ndarray], path, ideal: bool = True, ylabel: str = "speed-up") -> Path:
    """Speed-up (or efficiency) vs workers/ranks, with the ideal line."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for label, values in measured.items():
        ax.plot(workers, values, marker="o", label=label)
    if ideal:
        ax.plot(workers, np.asarray(workers, float) / workers[0], "k--", label="ideal")
    ax.set_xlabel("workers / ranks")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
