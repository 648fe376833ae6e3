"""``iris run telegram`` with one fault: a message reading ``POISON`` kills the process handling it.

``tests/telegram/test_poison.py`` runs this in place of ``iris``. Everything else is the
real command (``bots.cli.main``, which builds the app as ``iris run`` does); only
``Replies.handle`` dies on that one text, with SIGKILL, as a process dies when a
decoder segfaults or the kernel's OOM killer picks it: no ``finally``, no handler, no log.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncGenerator

from core.domain import IncomingMessage, ServiceEvent
from core.replies import Replies

POISON = "This message takes down whoever handles it."

_handle = Replies.handle


def _deadly_handle(self: Replies, message: IncomingMessage) -> AsyncGenerator[ServiceEvent, None]:
    if message.text == POISON:
        os.kill(os.getpid(), signal.SIGKILL)
    return _handle(self, message)


if __name__ == "__main__":
    Replies.handle = _deadly_handle  # type: ignore[method-assign]
    from bots.cli import main

    sys.argv = ["iris", "run", "telegram"]
    main()
