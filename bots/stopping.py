"""Stopping a long-running command (``iris run``, ``iris web``) when it is asked to.

Ctrl+C (SIGINT) cancels ``asyncio.run``'s task and every ``finally`` runs: the bots stop
polling, the console closes its connections, the database and the models are closed. systemd's
and docker's stop send SIGTERM, whose default action ends the process at once, in the middle of
whatever it was doing. Here SIGTERM stops it as Ctrl+C does, and the process exits 0: it was asked
to stop, it did not fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


def run_until_terminated(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, where SIGTERM stops it as Ctrl+C does (both cancel the task), exit 0."""

    async def guarded() -> None:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        terminated: list[bool] = []

        def stop() -> None:
            terminated.append(True)
            if task is not None:
                task.cancel()

        with contextlib.suppress(NotImplementedError):  # no signal handlers in this event loop
            loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            await main
        except asyncio.CancelledError:
            if not terminated:
                raise
            log.info("stopped by SIGTERM")
        finally:
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(guarded())
