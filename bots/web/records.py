"""What the Watch, Audit and People pages read: ports of ``core``, built by ``bots.app`` on the store
(the console sees no ``storage`` module; an import-linter contract keeps it so)."""

from __future__ import annotations

from dataclasses import dataclass

from core.audit_search import AuditSearch
from core.people_directory import PeopleDirectory
from core.watch import WatchStore


@dataclass(frozen=True)
class Records:
    watch: WatchStore
    audit: AuditSearch
    people: PeopleDirectory
