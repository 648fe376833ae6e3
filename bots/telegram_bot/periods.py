"""Reading PTB's time periods (durations, flood waits) as seconds.

PTB 22 is moving these attributes from ``int`` to ``datetime.timedelta`` and
warns on every read unless ``PTB_TIMEDELTA`` is set; either form is accepted here.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

from telegram.warnings import PTBDeprecationWarning


def seconds(owner: object, attribute: str) -> float | None:
    """``owner.attribute`` in seconds, or None when Telegram did not send it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = getattr(owner, attribute, None)
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
