"""All matplotlib code: the demo week as one picture, a row per model (drift share, the champion's metric realized and
estimated before its labels, the gate's promotions and refusals).

matplotlib is imported inside `week_figure` (close to a second) and draws on a bare `Figure`: the Agg canvas, no pyplot
state and no display, so the picture has the same size on any machine and can be drawn from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


SIZE_INCHES = (12.0, 7.0)
DPI = 120
PROMOTED, REFUSED = "promoted", "refused"


@dataclass(frozen=True)
class NightPoint:
    """One model's night as the picture shows it."""

    night: date
    action: str | None = None  # the night's action ('promoted', 'no-data', ...); None: the night's run failed
    drift_share: float | None = None
    challenger: float | None = None  # the gate's challenger metric on its holdout (gated nights)
    champion: float | None = None  # the gate's champion metric on the same holdout
    version: str | None = None  # the challenger's version


@dataclass(frozen=True)
class Band:
    """A metric estimated before the labels, with its 95% band."""

    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class ModelWeek:
    """One row of the picture: a model's nights and the champion's metric per day."""

    name: str
    metric: str
    nights: list[NightPoint]
    realized: dict[date, float] = field(default_factory=dict)  # the champion's metric on each day's labels
    realized_label: str = "realized"  # how the realized values were measured, for the legend
    estimated: dict[date, Band] = field(default_factory=dict)  # before the labels (CBPE)


def week_chart(weeks: list[ModelWeek], path: Path, title: str = "") -> Path:
    """Draw the week as one PNG (12 x 7 in at 120 dpi) at `path`; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    week_figure(weeks, title).savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    return path


def week_figure(weeks: list[ModelWeek], title: str = "") -> Figure:
    """The week as a matplotlib Figure: per model the champion's metric and the gate's markers above, drift share
    below. A model without a realized series shows the gate's champion metric on its gated nights (so labelled)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
    if weeks:
        grid = fig.add_gridspec(3 * len(weeks) - 1, 1, height_ratios=([3.0, 1.0, 0.8] * len(weeks))[:-1], hspace=0.1)
        for i, week in enumerate(weeks):
            metric_ax = fig.add_subplot(grid[3 * i])
            _draw(metric_ax, fig.add_subplot(grid[3 * i + 1], sharex=metric_ax), week)
    else:
        fig.text(0.5, 0.5, "no models", ha="center", va="center")
    if title:
        fig.suptitle(title, fontsize=12, x=0.02, ha="left")
    fig.subplots_adjust(left=0.06, right=0.72, top=0.91 if title else 0.95, bottom=0.08)
    return fig


def _series(days: list[date], values: dict[date, float]) -> list[float]:
    """Values on the nights' positions, NaN where a day has none (the line breaks there)."""
    return [values.get(d, float("nan")) for d in days]


def _draw(ax: Axes, drift_ax: Axes, week: ModelWeek) -> None:
    """One model: the champion's metric and the gate's markers above, tonight's drift share below, gaps on both."""
    days = [n.night for n in week.nights]
    x = list(range(len(days)))
    handles: list[Any] = []
    plotted = _draw_champion(ax, x, days, week, handles) + _draw_estimate(ax, x, days, week, handles)
    plotted += _draw_challengers(ax, week, handles)
    _metric_limits(ax, plotted, week.metric)
    _draw_drift(drift_ax, x, week, handles)
    _draw_gaps(ax, drift_ax, week, handles)
    ax.set_xlim(-0.5, len(days) - 0.5)
    ax.tick_params(axis="x", labelbottom=False)
    drift_ax.set_xticks(x, [f"{d:%a %m-%d}\n{n.action or 'failed'}" for d, n in zip(days, week.nights)])
    for a in (ax, drift_ax):
        a.tick_params(labelsize=8)
        a.grid(axis="y", alpha=0.3)
    ax.set_ylabel(week.metric, fontsize=9)
    ax.set_title(week.name, loc="left", fontsize=10, fontweight="bold")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)


def _draw_champion(ax: Axes, x: list[int], days: list[date], week: ModelWeek, handles: list[Any]) -> list[float]:
    """The champion's realized metric (or, without one, its value at the gate); the values plotted."""
    from matplotlib.lines import Line2D

    realized = {d: v for d, v in week.realized.items() if d in days}
    if realized:
        ax.plot(x, _series(days, realized), color="#08306b", marker="o", markersize=5, linewidth=1.8, zorder=3)
        handles.append(Line2D([], [], color="#08306b", marker="o", label=f"champion, {week.realized_label}"))
        return list(realized.values())
    gate = {n.night: n.champion for n in week.nights if n.champion is not None}  # as the gate measured it
    if gate:
        ax.plot(x, _series(days, gate), color="#08306b", marker="s", markersize=5, linestyle="none", zorder=3)
        handles.append(Line2D([], [], color="#08306b", marker="s", linestyle="none",
                              label="champion on the gate's holdout\n(no realized series)"))
    return list(gate.values())


def _draw_estimate(ax: Axes, x: list[int], days: list[date], week: ModelWeek, handles: list[Any]) -> list[float]:
    """The metric estimated before the labels with its band; the band's ends."""
    from matplotlib.lines import Line2D

    estimated = {d: b for d, b in week.estimated.items() if d in days}
    if not estimated:
        return []
    mid = _series(days, {d: b.value for d, b in estimated.items()})
    low = _series(days, {d: b.lower for d, b in estimated.items()})
    high = _series(days, {d: b.upper for d, b in estimated.items()})
    ax.fill_between(x, low, high, color="#fd8d3c", alpha=0.25, linewidth=0, zorder=2)
    ax.errorbar(x, mid, yerr=[[m - lo for m, lo in zip(mid, low)], [h - m for m, h in zip(mid, high)]],
                color="#e6550d", marker="D", markersize=4, linestyle="--", linewidth=1.4, capsize=3, zorder=3)
    handles.append(Line2D([], [], color="#e6550d", marker="D", linestyle="--",
                          label="champion, estimated before\nits labels (CBPE, 95% band)"))
    return [b.lower for b in estimated.values()] + [b.upper for b in estimated.values()]


def _draw_challengers(ax: Axes, week: ModelWeek, handles: list[Any]) -> list[float]:
    """Each challenger at its gate value, promoted or refused, with its version; the values plotted."""
    from matplotlib.lines import Line2D

    plotted: list[float] = []
    for action, style in ((PROMOTED, dict(marker="^", color="#31a354", s=90)),
                          (REFUSED, dict(marker="x", color="#de2d26", s=80, linewidths=2.2))):
        points = [(i, n.challenger, n.version) for i, n in enumerate(week.nights)
                  if n.action == action and n.challenger is not None]
        if not points:
            continue
        ax.scatter([i for i, _, _ in points], [y for _, y, _ in points], zorder=4, **style)  # type: ignore[arg-type]
        for i, y, version in points:
            if version:
                ax.annotate(f"v{version}", (i, y), textcoords="offset points", xytext=(7, -3), fontsize=7,
                            color=str(style["color"]))
        handles.append(Line2D([], [], linestyle="none", marker=style["marker"], color=style["color"],
                              markersize=8, label=f"challenger {action}\n(its {week.metric} at the gate)"))
        plotted += [y for _, y, _ in points]  # type: ignore[misc]
    return plotted


def _metric_limits(ax: Axes, plotted: list[float], metric: str) -> None:
    """The metric axis around what was plotted, or 0..1 with a note when nothing was."""
    if plotted:
        low_y, high_y = min(plotted), max(plotted)
        pad = max(0.02, (high_y - low_y) * 0.12)
        ax.set_ylim(low_y - pad, high_y + pad)
    else:
        ax.set_ylim(0, 1)
        ax.text(0.01, 0.95, f"no {metric} yet", transform=ax.transAxes, ha="left", va="top", fontsize=9,
                color="#737373")


def _draw_drift(drift_ax: Axes, x: list[int], week: ModelWeek, handles: list[Any]) -> None:
    """Tonight's drift share per night as bars, labelled."""
    from matplotlib.patches import Patch

    drift_ax.bar(x, [n.drift_share or 0.0 for n in week.nights], width=0.6, color="#6baed6", zorder=2)
    for i, n in enumerate(week.nights):
        if n.drift_share is not None:
            inside = n.drift_share > 0.7
            drift_ax.text(i, n.drift_share - 0.05 if inside else n.drift_share + 0.05, f"{n.drift_share:.2f}",
                          ha="center", va="top" if inside else "bottom", fontsize=7,
                          color="white" if inside else "#2171b5")
    drift_ax.set_ylim(0, 1)
    drift_ax.set_yticks([0, 0.5, 1])
    drift_ax.set_ylabel("drift\nshare", fontsize=8, color="#2171b5")
    handles.append(Patch(color="#6baed6", label="drift share of tonight's\nrows (lower panel)"))


def _draw_gaps(ax: Axes, drift_ax: Axes, week: ModelWeek, handles: list[Any]) -> None:
    """No-data and failed nights hatched on both panels."""
    from matplotlib.patches import Patch

    gaps = {"no-data": ("#d9d9d9", "no data"), None: ("#fcc5b0", "run failed")}
    for i, n in enumerate(week.nights):
        if n.action in gaps:
            colour, text = gaps[n.action]
            for a in (ax, drift_ax):
                a.axvspan(i - 0.45, i + 0.45, facecolor=colour, edgecolor="white", hatch="//", zorder=0, linewidth=0)
            ax.text(i, 0.5, text, transform=ax.get_xaxis_transform(), ha="center", va="center", rotation=90,
                    fontsize=8, color="#525252", bbox=dict(facecolor="white", edgecolor="none", pad=1.5))
    for action, (colour, text) in gaps.items():
        if any(n.action == action for n in week.nights):
            handles.append(Patch(facecolor=colour, edgecolor="white", hatch="//", label=text))
