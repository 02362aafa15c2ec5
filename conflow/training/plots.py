"""Figures of law drift (matplotlib, the optional extra ``pip install 'conflow[plot]'``).

matplotlib is imported only when a figure is made, and only through its object-oriented API
(`matplotlib.figure.Figure`), so no GUI backend is ever needed.

- `plot_drift`: relative drift |h(t) − h(0)| / scale against time, one curve per law (and per run
  when several reports are overlaid, e.g. several momenta), log scale, with the loss in a second
  panel.
- `plot_drift_vs_step`: drift against step size on log–log axes with the fitted slope
  (MATH.md §5: 2 per step, 1 at a fixed horizon).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from conflow.errors import InputError
from conflow.training.drift import DriftReport, loglog_slope

TINY = 1e-18  # drift exactly 0 is drawn at this level on log axes


def _figure(figsize):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - depends on the environment
        raise InputError("plots need matplotlib: pip install 'conflow[plot]'") from None
    return Figure(figsize=figsize, layout="constrained")


def save(fig: Any, path: str, dpi: int = 120) -> str:
    """Write ``fig`` to ``path`` (format from the extension) and return the path."""
    try:
        fig.savefig(path, dpi=dpi)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot write the figure to {path!r}: {exc}") from None
    return path


def plot_drift(reports: DriftReport | Sequence[DriftReport] | dict[str, DriftReport],
               laws: Sequence[str] | None = None, *, path: str | None = None,
               title: str | None = None, show_loss: bool = True, figsize=(7.0, 5.0)):
    """Relative drift of the monitored laws against time (log scale) and the loss below.

    ``reports``: one `DriftReport`, a list, or a dict label → report (labels default to each
    report's flow). ``laws``: which laws (default: all of each report). Dashed grey lines mark the
    integrator's error estimate where the run has one. Returns the matplotlib Figure (also saved to
    ``path`` if given).
    """
    if isinstance(reports, DriftReport):
        items = [(None, reports)]
    elif isinstance(reports, dict):
        items = list(reports.items())
    else:
        items = [(None, r) for r in reports]
    if not items:
        raise InputError("plot_drift needs at least one report")
    fig = _figure(figsize)
    if show_loss:
        ax, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    else:
        ax, ax_loss = fig.subplots(1, 1), None
    several = len(items) > 1
    for label, rep in items:
        label = label if label is not None else rep.flow
        names = list(rep.laws) if laws is None else list(laws)
        for name in names:
            if name not in rep.laws:
                raise InputError(f"no law {name!r} in the report for {label}")
            d = rep.laws[name]
            curve = f"{label}: {name}" if several else f"{name} ({d.verdict})"
            # t = t0 has drift 0 by definition: start at the second record
            line, = ax.semilogy(d.times[1:], np.maximum(d.relative[1:], TINY), label=curve)
            if d.error is not None and not several:
                ax.semilogy(d.times[1:], np.maximum(d.error[1:] / d.scale, TINY), "--",
                            color=line.get_color(), alpha=0.5, lw=1,
                            label=f"{name}: error estimate")
        if ax_loss is not None:
            ax_loss.plot(rep.times, rep.loss, label=label if several else None)
    ax.set_ylabel("relative drift |h(t) − h(0)| / scale")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title or (items[0][1].flow if not several else "law drift"))
    if ax_loss is not None:
        losses = np.concatenate([np.asarray(rep.loss, dtype=float) for _, rep in items])
        if np.all(losses > 0) and losses.max() > 100 * losses.min():
            ax_loss.set_yscale("log")
        ax_loss.set_ylabel("loss")
        ax_loss.set_xlabel("t")
        ax_loss.grid(True, alpha=0.3)
        if several:
            ax_loss.legend(fontsize=8)
    else:
        ax.set_xlabel("t")
    if path:
        save(fig, path)
    return fig


def plot_drift_vs_step(step_sizes: Sequence[float], drifts: Sequence[float] | dict[str, Sequence],
                       *, path: str | None = None, title: str | None = None,
                       xlabel: str = "step size", ylabel: str = "drift", figsize=(5.5, 4.2)):
    """Drift against step size on log–log axes with the least-squares slope in the legend.

    ``drifts``: one sequence (same length as ``step_sizes``) or a dict label → sequence.
    Returns the Figure (saved to ``path`` if given).
    """
    series = drifts if isinstance(drifts, dict) else {"drift": drifts}
    x = np.asarray(step_sizes, dtype=float)
    fig = _figure(figsize)
    ax = fig.subplots(1, 1)
    for label, ys in series.items():
        y = np.asarray(ys, dtype=float)
        if y.shape != x.shape:
            raise InputError(f"{label}: {len(y)} drifts for {len(x)} step sizes")
        p = loglog_slope(x, y)
        line, = ax.loglog(x, np.maximum(y, TINY), "o", label=f"{label}: slope {p:.2f}")
        keep = (x > 0) & (y > 0)
        c = np.mean(np.log(y[keep]) - p * np.log(x[keep]))
        xs = np.geomspace(x[keep].min(), x[keep].max(), 50)
        ax.loglog(xs, np.exp(c) * xs**p, "-", color=line.get_color(), alpha=0.6)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    if path:
        save(fig, path)
    return fig
