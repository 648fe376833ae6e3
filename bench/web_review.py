"""How fast the web console's Review page answers with a full queue (issue #27: ≤ 150 ms p95).

    .venv/bin/python bench/web_review.py [--database-url URL] [--corrections 10000] [--rounds 20]

Inserts in bulk 10,000 pending corrections on 100,000 turns (one chat) into a fresh database
(SQLite in a temporary folder by default; a PostgreSQL URL must name an empty database), runs
``ANALYZE`` on PostgreSQL (as its autovacuum would), signs in through Starlette's TestClient
(in-process: no network) and times page loads (half of them on a later page) and decisions
(one POST each, as htmx sends them): signed in with IRIS_WEB_TOKEN, then with an admin's own
link (``iris web admin add``: each request also checks the admin's session key in the database).
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import Engine, insert, text
from starlette.testclient import TestClient

from bots.app import build_app
from bots.settings import Settings
from bots.web.config import WebConfig
from bots.web.server import create_app
from core.memory import MemoryConfig
from core.web_admins import add_admin
from storage.review_queue import SqlReviewQueue
from storage.tables import ConversationRow, CorrectionRow, PersonRow, TurnRow
from storage.web_admins import SqlWebAdmins

TOKEN = "bench-token"


def seed(engine: Engine, corrections: int) -> float:
    """Questions and replies (five of each per correction) and the corrections; seconds taken."""
    started = time.perf_counter()
    with engine.begin() as db:
        person = db.execute(
            insert(PersonRow)
            .values(platform="telegram", user_id="77", display_name="Ann")
            .returning(PersonRow.id)
        ).scalar_one()
        chat = db.execute(
            insert(ConversationRow)
            .values(platform="telegram", chat_id="77", owner_id=person)
            .returning(ConversationRow.id)
        ).scalar_one()
        where = {"conversation_id": chat, "platform": "telegram", "chat_id": "77"}
        asked = [
            {**where, "person_id": person, "role": "user", "text": f"question {i}"}
            for i in range(corrections * 5)
        ]
        questions = db.execute(insert(TurnRow).returning(TurnRow.id), asked).scalars().all()
        said = [
            {**where, "reply_to_id": q, "role": "assistant", "text": f"reply {q}", "model_version": "m1"}
            for q in questions
        ]
        replies = db.execute(insert(TurnRow).returning(TurnRow.id), said).scalars().all()
        db.execute(
            insert(CorrectionRow),
            [
                {"turn_id": r, "person_id": person, "text": f"better {r}", "status": "pending"}
                for r in replies[:corrections]
            ],
        )
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as db:
            db.execute(text("ANALYZE"))
    return time.perf_counter() - started


def quantiles(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p95 = ordered[max(0, round(len(ordered) * 0.95) - 1)]
    return f"p50 {statistics.median(ordered) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="an empty database (default: SQLite in a temporary folder)")
    parser.add_argument("--corrections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=Path(folder) / "data",
            database_url=args.database_url or f"sqlite:///{folder}/iris.db",
            web=WebConfig(token=SecretStr(TOKEN)),
            memory=MemoryConfig(enabled=False),
        )
        application = build_app(settings)
        try:
            engine = application.store.engine
            took = seed(engine, args.corrections)
            print(f"{engine.dialect.name}: seeded {args.corrections} corrections in {took:.1f} s")
            admins = SqlWebAdmins(engine)
            _, own_token = add_admin(admins, "bench", "bench", settings.web.admin_name)
            web = create_app(application.service, SqlReviewQueue(engine), settings.web, TOKEN, admins=admins)
            for who, token in (("IRIS_WEB_TOKEN", TOKEN), ("an admin's own link", own_token)):
                with TestClient(web, base_url="http://127.0.0.1", follow_redirects=False) as browser:
                    loads, decisions = review(browser, token, args.rounds)
                print(f"{who}: page load {quantiles(loads)}; decision {quantiles(decisions)} (x{args.rounds})")
        finally:
            application.close()


def review(browser: TestClient, token: str, rounds: int) -> tuple[list[float], list[float]]:
    """Sign in with ``token``, then load a page and decide its first card ``rounds`` times: the seconds."""
    browser.get(f"/?token={token}")
    found = re.search(r'name="csrf" value="([^"]+)"', browser.get("/review").text)
    assert found, "not signed in"
    loads: list[float] = []
    decisions: list[float] = []
    after: int | None = None
    for round_ in range(rounds):
        started = time.perf_counter()
        page = browser.get("/review" + (f"?after={after}" if after else ""))
        loads.append(time.perf_counter() - started)
        shown = [int(n) for n in re.findall(r'id="correction-(\d+)"', page.text)]
        after = shown[-1] if round_ % 2 == 0 else None
        started = time.perf_counter()
        answer = browser.post(
            f"/review/{shown[0]}",
            data={"action": "approve" if round_ % 2 else "reject", "csrf": found.group(1)},
            headers={"HX-Request": "true"},
        )
        decisions.append(time.perf_counter() - started)
        assert answer.status_code == 200, answer.text
    return loads, decisions


if __name__ == "__main__":
    main()
