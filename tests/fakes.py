"""Fakes of core's own ports, for what the real part cannot show on demand."""

from __future__ import annotations

import threading

from core.ports import RetrainOutcome


class HeldRetrainer:
    """A ``core.ports.Retrainer`` whose run lasts until the test releases it, then promotes."""

    SUMMARY = "Promoted iris-ft-1: held-out loss 2.10 → 1.95."

    def __init__(self) -> None:
        self.release = threading.Event()
        self.profiles: list[str | None] = []

    @property
    def runs(self) -> int:
        return len(self.profiles)

    def retrain(self, profile: str | None = None) -> RetrainOutcome:
        self.profiles.append(profile)
        if not self.release.wait(timeout=30):
            raise TimeoutError("the test never released the retrain")
        return RetrainOutcome(True, True, "iris-ft-1", self.SUMMARY)
