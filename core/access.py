"""Who may talk to the bot, and who may run admin commands.

Adapters ask before they translate anything, so nothing is stored for a
person who is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.i18n import N_

REFUSAL = N_("Sorry, this bot is private. Ask its owner to add you.")


@dataclass(frozen=True)
class AccessPolicy:
    """Empty allowlists mean everyone; admins are always allowed."""

    allowed_users: frozenset[str] = frozenset()
    allowed_chats: frozenset[str] = frozenset()
    allowed_roles: frozenset[str] = frozenset()
    admins: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        users: Iterable[str] = (),
        chats: Iterable[str] = (),
        admins: Iterable[str] = (),
        roles: Iterable[str] = (),
    ) -> AccessPolicy:
        return cls(
            frozenset(map(str, users)),
            frozenset(map(str, chats)),
            frozenset(map(str, roles)),
            frozenset(map(str, admins)),
        )

    def is_admin(self, user_id: str) -> bool:
        return str(user_id) in self.admins

    def allows(self, user_id: str, chat_id: str | None = None, role_ids: Iterable[str] = ()) -> bool:
        """A person passes if they are an admin, or if they pass every allowlist that is set.

        The user and role lists are alternatives (a listed user *or* a listed
        role); the chat list applies on top of them.
        """
        if self.is_admin(user_id):
            return True
        if self.allowed_users or self.allowed_roles:
            by_user = str(user_id) in self.allowed_users
            by_role = bool(self.allowed_roles & {str(r) for r in role_ids})
            if not (by_user or by_role):
                return False
        return not (self.allowed_chats and chat_id is not None and str(chat_id) not in self.allowed_chats)
