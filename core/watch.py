"""What the console's Watch page shows: ratings per model version by day, voice against text,
languages and busiest hours, with the A/B test's figures as ``iris models ab status --json`` gives them.

The store counts (``WatchStore``); this module only shapes the counts into the series a chart
draws, so that the page and its JSON endpoint say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from core.experiments import ABReport

MAX_DAYS = 366  # the longest window the page asks for: the rows read stay bounded


@dataclass(frozen=True)
class ModelDay:
    """Replies one model version wrote on one UTC day, and the 👍/👎 they have now."""

    day: date
    model: str
    replies: int
    up: int
    down: int


@dataclass(frozen=True)
class TurnDay:
    """People's messages on one UTC day: typed, and voice notes."""

    day: date
    text: int
    voice: int


@dataclass(frozen=True)
class WatchFigures:
    since: date  # the first UTC day counted (the days before are left out, not zero)
    models: list[ModelDay] = field(default_factory=list)
    turns: list[TurnDay] = field(default_factory=list)
    # People's messages by language over all time (None: not detected), most first, as `iris stats`.
    languages: list[tuple[str | None, int]] = field(default_factory=list)
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # people's messages by UTC hour of day


class WatchStore(Protocol):
    def watch_figures(self, days: int) -> WatchFigures:
        """The figures of the last ``days`` UTC days, today included."""
        ...


def watch_json(figures: WatchFigures, ab: ABReport | None) -> dict[str, object]:
    """The page's charts as JSON series, and ``ab``'s figures exactly as ``ab status --json`` prints them."""
    days = sorted({d.day for d in figures.models} | {t.day for t in figures.turns})
    labels = [d.isoformat() for d in days]
    turns = {t.day: t for t in figures.turns}
    return {
        "since": figures.since.isoformat(),
        "ratings": {"labels": labels, "series": _model_series(figures.models, days)},
        "turns": {
            "labels": labels,
            "text": [turns[d].text if d in turns else 0 for d in days],
            "voice": [turns[d].voice if d in turns else 0 for d in days],
        },
        "languages": [{"language": code or "unknown", "turns": count} for code, count in figures.languages],
        "hours": list(figures.hours),
        "ab": ab.to_json() if ab is not None else None,
    }


def _model_series(models: list[ModelDay], days: list[date]) -> list[dict[str, object]]:
    """Per model version: the 👍 share of each day's rated replies (None where none was rated)."""
    series: list[dict[str, object]] = []
    for name in sorted({m.model for m in models}):
        by_day = {m.day: m for m in models if m.model == name}
        shares: list[float | None] = []
        rated: list[int] = []
        for day in days:
            figures = by_day.get(day)
            votes = figures.up + figures.down if figures else 0
            shares.append(round(figures.up / votes, 4) if figures and votes else None)
            rated.append(votes)
        series.append({"model": name, "up_share": shares, "rated": rated})
    return series
