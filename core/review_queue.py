"""The review queue as a reviewer pages through it: each correction with what it corrects.

A page is a slice of the corrections in id order after a given id (keyset paging), so a
queue of 10,000 is never loaded whole; the counts per status come from one grouped count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from core.domain import Correction, CorrectionStatus


@dataclass(frozen=True)
class ReviewItem:
    """One correction, the reply it corrects (its model version and ratings)."""

    correction: Correction
    model_version: str | None  # the version that wrote the corrected reply
    up: int = 0  # 👍 and 👎 on that reply
    down: int = 0


@dataclass(frozen=True)
class ReviewPage:
    items: list[ReviewItem]
    next_after: int | None  # the id to page on from; None on the last page
    counts: dict[CorrectionStatus, int] = field(default_factory=dict)  # per status, the model filter applied


class ReviewQueue(Protocol):
    def page(
        self, status: CorrectionStatus | None, model: str | None, after: int | None, limit: int
    ) -> ReviewPage: ...

    def model_versions(self) -> list[str]:
        """The model versions of the replies that have corrections, for the filter."""
        ...
