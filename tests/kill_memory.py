"""A process that approves a correction and is killed (SIGKILL) before the memory indexes it.

``tests/test_memory_kill.py`` runs this. It builds the app as ``iris run`` does (settings from
the environment: ``IRIS_DATA_DIR``, ``IRIS_LLM_MODEL``, ``DATABASE_URL``) and approves correction
``CORRECTION_ID`` through ``FeedbackService.review``, the call the ✅ buttons of both chats make.
One method is wrapped here, never in production code: the embedder, which the review calls
to index the approved correction's wordings, writes ``READY_FILE`` and waits. The parent kills
the process then, as the OOM killer or a power cut would: no ``finally``, no handler, no log.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from pathlib import Path

REVIEWER = "telegram:900"


def _block_indexing(ready: Path) -> None:
    """Every embedding says so in ``ready`` and never returns: the process is killed in it."""
    from core.embedding import Embedder

    def embed(self: Embedder, texts: Sequence[str]) -> object:
        ready.write_text("\n".join(texts))
        while True:
            time.sleep(60)

    Embedder.embed = embed  # type: ignore[assignment, method-assign]


async def _approve(correction_id: int) -> None:
    from bots.app import build_app, load_settings

    app = build_app(load_settings())
    await app.service.feedback.review(correction_id, approve=True, reviewer=REVIEWER)
    raise SystemExit("the review returned: the indexing step was not blocked")


if __name__ == "__main__":
    _block_indexing(Path(os.environ["READY_FILE"]))
    asyncio.run(_approve(int(os.environ["CORRECTION_ID"])))
