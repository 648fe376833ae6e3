"""The feedback picture behind ``iris stats --plot FILE.png``.

Four panels: how each model version is rated (👍/👎 counts and share), its 👍
share day by day, messages per day with the share sent as voice, and the
corrections by review status; with an A/B test, a fifth row shows its arms side
by side with their Wilson intervals, and the difference with its intervals
against the margin. Drawn with matplotlib's object API (no pyplot
state, no display needed).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from core.domain import Stats
from core.experiments import ABReport
from storage.queries import Activity

UP, DOWN, VOICE, NEUTRAL = "#2e9d5b", "#d1495b", "#3f7cac", "#8d8d8d"


def plot_stats(stats: Stats, activity: Activity, path: Path, ab: ABReport | None = None) -> Any:
    """Draw the picture to ``path`` (PNG, or any format matplotlib knows by the suffix); return the Figure."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 12.5 if ab else 8.5), dpi=110, layout="constrained")
    rows = figure.subplots(3 if ab else 2, 2)
    (ratings, share), (turns, corrections) = rows[0], rows[1]
    if ab is not None:
        _ab_arms(rows[2][0], ab)
        _ab_difference(rows[2][1], ab)
    _ratings_per_model(ratings, stats)
    _share_over_time(share, activity, stats.active_model)
    _turns_over_time(turns, activity, stats)
    _corrections(corrections, stats)
    figure.suptitle(
        f"Iris feedback · {stats.people} people · {stats.replies} replies · "
        f"active model: {stats.active_model or '-'}",
        fontsize=13,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return figure


def _ratings_per_model(axes: Any, stats: Stats) -> None:
    axes.set_title("Ratings per model version")
    models = [m for m in stats.by_model if m.up + m.down] or stats.by_model
    if not models:
        _empty(axes, "no replies yet")
        return
    names = [_label(m.model, stats.active_model) for m in models]
    positions = range(len(models))
    axes.barh(positions, [m.up for m in models], color=UP, label="thumbs up")
    axes.barh(positions, [m.down for m in models], left=[m.up for m in models], color=DOWN, label="thumbs down")
    for y, m in zip(positions, models, strict=True):
        rated = m.up + m.down
        text = (
            f"{m.up / rated:.0%} up of {rated} rated, {m.replies} replies" if rated else f"{m.replies} replies"
        )
        axes.text(rated, y, "  " + text, va="center", fontsize=9)
    axes.set_yticks(list(positions), names)
    axes.invert_yaxis()
    axes.set_xlabel("ratings")
    axes.set_xlim(0, max(m.up + m.down for m in models) * 1.9 or 1)
    axes.legend(loc="lower right", fontsize=8)


def _share_over_time(axes: Any, activity: Activity, active: str | None) -> None:
    axes.set_title("Thumbs-up share per model version, by day of reply")
    series: dict[str, list[tuple[Any, float, int]]] = defaultdict(list)
    for day in activity.models:
        rated = day.up + day.down
        if rated:
            series[day.model].append((day.day, day.up / rated, rated))
    if not series:
        _empty(axes, "no ratings yet")
        return
    for model, points in sorted(series.items()):
        days, shares, counts = zip(*points, strict=True)
        axes.plot(days, shares, marker="o", label=_label(model, active))
        axes.scatter(days, shares, s=[20 + 8 * c for c in counts], alpha=0.3)
    axes.set_ylim(-0.05, 1.05)
    axes.yaxis.set_major_formatter(_percent())
    axes.set_ylabel("thumbs up / rated (dot size: ratings)")
    axes.legend(fontsize=8)
    _dates(axes, [day.day for day in activity.models])


def _turns_over_time(axes: Any, activity: Activity, stats: Stats) -> None:
    axes.set_title(f"Messages per day · {stats.voice_share:.0%} voice overall")
    if not activity.turns:
        _empty(axes, "no messages yet")
        return
    days = [d.day for d in activity.turns]
    voice = [d.voice for d in activity.turns]
    text = [d.text for d in activity.turns]
    axes.bar(days, text, color=NEUTRAL, label="text")
    axes.bar(days, voice, bottom=text, color=VOICE, label="voice")
    axes.set_ylabel("messages")
    axes.legend(loc="upper left", fontsize=8)
    _dates(axes, days)


def _corrections(axes: Any, stats: Stats) -> None:
    axes.set_title("Corrections by review status")
    labels = ["pending", "approved", "rejected"]
    counts = [stats.corrections_pending, stats.corrections_approved, stats.corrections_rejected]
    bars = axes.bar(labels, counts, color=[NEUTRAL, UP, DOWN])
    axes.bar_label(bars, [str(c) for c in counts])
    axes.set_ylabel("corrections")
    axes.set_ylim(0, max(counts) * 1.2 + 1)


def _ab_arms(axes: Any, ab: ABReport) -> None:
    experiment = ab.experiment
    state = "running" if experiment.running else f"ended: {experiment.decision}"
    axes.set_title(f"A/B test {experiment.id} ({state}): thumbs-up share per arm, 95% Wilson")
    arms = [ab.control, ab.candidate]
    if not any(arm.ratings for arm in arms):
        _empty(axes, "no ratings in the A/B test yet")
        return
    for position, arm in enumerate(arms):
        if arm.up_share is None or arm.interval is None:
            continue
        low, high = arm.up_share - arm.interval.low, arm.interval.high - arm.up_share
        color = NEUTRAL if arm is ab.control else VOICE
        axes.errorbar([position], [arm.up_share], yerr=[[low], [high]], fmt="o", capsize=8, color=color)
        label = f"{arm.up_share:.0%} of {arm.ratings}\nfrom {arm.raters} people"
        axes.text(position + 0.08, arm.up_share, label, va="center", fontsize=9)
    names = [f"control\n{', '.join(ab.control.counts.versions) or '-'}", f"candidate\n{experiment.candidate}"]
    axes.set_xticks([0, 1], names)
    axes.set_xlim(-0.5, 1.5)
    axes.set_ylim(-0.05, 1.05)
    axes.yaxis.set_major_formatter(_percent())
    axes.set_ylabel(
        f"thumbs up / rated (decides at {experiment.min_ratings} an arm, {experiment.min_raters}+ people)"
    )


def _ab_difference(axes: Any, ab: ABReport) -> None:
    margin = ab.experiment.margin
    axes.set_title(f"Candidate − control, 95% · rule now: {ab.decision.value}")
    comparison = ab.comparison
    if comparison is None:
        _empty(axes, "each arm needs a rating")
        return
    intervals = [("Newcombe", comparison.newcombe), ("bootstrap over\nconversations", comparison.bootstrap)]
    shown = [(name, interval) for name, interval in intervals if interval is not None]
    for position, (_, interval) in enumerate(shown):
        low, high = comparison.difference - interval.low, interval.high - comparison.difference
        axes.errorbar(
            [comparison.difference], [position], xerr=[[low], [high]], fmt="o", capsize=8, color=VOICE
        )
    axes.axvline(0, color=NEUTRAL, linewidth=1)
    axes.axvline(-margin, color=DOWN, linestyle="--", linewidth=1, label=f"−margin ({margin:.0%})")
    axes.set_yticks(list(range(len(shown))), [name for name, _ in shown])
    axes.set_ylim(-0.7, len(shown) - 0.3)
    axes.xaxis.set_major_formatter(_percent())
    axes.set_xlabel("difference in thumbs-up share")
    axes.legend(loc="lower right", fontsize=8)


def _label(model: str, active: str | None) -> str:
    return f"{model} (active)" if model == active else model


def _empty(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color=NEUTRAL)
    axes.set_xticks([])
    axes.set_yticks([])


def _percent() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0)


def _dates(axes: Any, days: list[Any]) -> None:
    """Whole days on the x axis, with a day of room either side (one day alone is a dot, not a year)."""
    from datetime import timedelta

    shown = sorted(set(days))
    shown = shown[:: max(1, len(shown) // 8)]  # at most about eight labels
    axes.set_xlim(min(days) - timedelta(days=1), max(days) + timedelta(days=1))
    axes.set_xticks(shown, [day.strftime("%b %d") for day in shown], rotation=30)
