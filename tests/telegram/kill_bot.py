"""``iris run telegram``, killed with SIGKILL at one step of a reply (``KILL_AT`` names it).

``tests/telegram/test_kill_steps.py`` runs this in place of ``iris``. Everything else is the
real command (``bots.cli.main``, which builds the app as ``iris run`` does); one method is
wrapped here, never in production code, so that the process dies right after (or before) it,
with SIGKILL, as a process dies when the kernel's OOM killer picks it or the machine loses
power: no ``finally``, no handler, no log. Without ``KILL_AT`` it is plain ``iris run telegram``.

The steps, in the order a reply to a voice note takes them:

- ``stored``: the person's turn was stored (``SqlStore.record_user_turn``);
- ``transcribed``: its transcript was stored, before it was shown or the model began;
- ``streaming``: a few pieces of the reply were shown (the first edit of the growing reply);
- ``replied``: the reply was stored, before it was shown whole with its buttons;
- ``shown``: it was shown whole, before the inbox marked the update done.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

STEPS = ("stored", "transcribed", "streaming", "replied", "shown")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _then_die(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` (sync or async), and the process dies as soon as it has returned."""

    @functools.wraps(method)
    def after(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        _die()
        return result

    return after


def _inject(step: str) -> None:
    """Wrap the one method after (or before) which the process dies."""
    from bots.telegram_bot.inbox import DurableUpdates
    from bots.telegram_bot.streaming import TelegramChat
    from storage.repository import SqlStore

    if step == "stored":
        SqlStore.record_user_turn = _then_die(SqlStore.record_user_turn)  # type: ignore[method-assign]
    elif step == "transcribed":
        SqlStore.set_transcript = _then_die(SqlStore.set_transcript)  # type: ignore[method-assign]
    elif step == "replied":
        SqlStore.record_reply = _then_die(SqlStore.record_reply)  # type: ignore[method-assign]
    elif step == "streaming":
        edit = TelegramChat.edit

        async def edit_then_die(
            self: TelegramChat, message: int, style: Any, text: str, turn_id: int | None
        ) -> int:
            shown = await edit(self, message, style, text, turn_id)
            if style == "reply" and turn_id is None:  # the reply, growing: its first piece was sent, then this
                _die()
            return shown

        TelegramChat.edit = edit_then_die  # type: ignore[method-assign]
    elif step == "shown":
        finished = DurableUpdates.finished

        async def die_before_done(self: DurableUpdates, update: object) -> None:
            from telegram import Update

            if isinstance(update, Update):  # answered and shown whole; the inbox not yet told
                _die()
            await finished(self, update)

        DurableUpdates.finished = die_before_done  # type: ignore[method-assign]
    else:
        raise SystemExit(f"KILL_AT must be one of {', '.join(STEPS)}, not {step!r}")


if __name__ == "__main__":
    if step := os.environ.get("KILL_AT", ""):
        _inject(step)
    from bots.cli import main

    sys.argv = ["iris", "run", "telegram"]
    main()
