"""``/persona``: admins add, change, remove and choose personas in the chat (``core.persona_admin``).

Everything but ``use`` shows or takes prompts, so it is answered only in a private chat with the
bot; in a group it is refused in one line and nothing is changed. ``/persona use NAME|default``
works in a group too: it sets that chat's persona (no prompt is shown) and posts the persona's
greeting. People who are not admins are refused in one line, with nothing stored.
"""

from __future__ import annotations

from telegram import Message, Update
from telegram.ext import ContextTypes

from bots import persona_render as render
from bots.telegram_bot.adapter import Adapter
from bots.telegram_bot.admin import ADMINS_ONLY, TEXT_LIMIT
from bots.telegram_bot.formatting import plain_text
from bots.telegram_bot.incoming import chat_of
from bots.telegram_bot.outbox import Target
from core.i18n import N_, _
from core.persona_admin import PersonaAdminUnavailable, cleared, temperature_of
from core.personas import DEFAULT, Persona, PersonaInvalid, PersonaNotFound, PersonaRefused

USAGE = N_(
    """\
/persona – personas: the prompts my replies are written with (admins).
/persona list – every persona, its settings and prompt
/persona add NAME PROMPT… – a new persona (the prompt may take several lines)
/persona edit NAME PROMPT… – a new prompt for it (its next version)
/persona set NAME voice|greeting|temperature VALUE – one setting (voice or greeting none: take it away)
/persona default NAME – chats without one of their own use it
/persona remove NAME – its chats go back to the default
/persona use NAME|default – this chat's persona (also in a group)"""
)

PRIVATE_ONLY = N_(
    "/persona {sub} shows or takes prompts, so I answer it only in a private chat with me; "
    "in a group, /persona use NAME|default sets the group's persona."
)
NEEDS_NAME = N_("Say which persona: /persona {sub} NAME.")
NEEDS_PROMPT = N_("Give the prompt after the name: /persona {sub} NAME PROMPT…")
SETTINGS = ("voice", "greeting", "temperature")
NEEDS_SETTING = N_("Say what to set: /persona set NAME voice|greeting|temperature VALUE.")

REFUSED = (PersonaInvalid, PersonaNotFound, PersonaRefused)


class PersonaCommands:
    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    async def _say(self, message: Message, text: str) -> None:
        await self.adapter.outbox.send(self.adapter.target(message), plain_text(text))

    async def on_persona(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        if not self.adapter.is_admin(update):
            if await self.adapter.admitted(update):
                await self._say(message, _(ADMINS_ONLY))
            return
        # The words as typed (context.args would lose a prompt's line breaks): /persona SUB NAME REST…
        words = (message.text or "").split(None, 3)
        sub = words[1].casefold() if len(words) > 1 else ""
        name = words[2] if len(words) > 2 else ""
        rest = words[3] if len(words) > 3 else ""
        if sub not in ("list", "add", "edit", "set", "default", "remove", "use"):
            await self._say(message, _(USAGE))
            return
        if sub != "use" and self.adapter.is_group(message):
            await self._say(message, _(PRIVATE_ONLY).format(sub=sub))
            return
        actor = f"telegram:{user.id}"
        try:
            if sub == "list":
                for piece in render.listing(await self.adapter.service.personas.listing(), TEXT_LIMIT):
                    await self._say(message, piece)
                return
            if not name:
                await self._say(message, _(NEEDS_NAME).format(sub=sub))
                return
            if sub == "use":
                await self._use(message, name, actor)
                return
            await self._say(message, await self._change(sub, name, rest, actor))
        except REFUSED as error:
            await self._say(message, render.not_changed(error))
        except PersonaAdminUnavailable:
            await self._say(message, _(render.NOT_STORED))

    async def _change(self, sub: str, name: str, rest: str, actor: str) -> str:
        """Add, edit, set, make default or remove; what the admin is told."""
        personas = self.adapter.service.personas
        if sub in ("add", "edit") and not rest.strip():
            return _(NEEDS_PROMPT).format(sub=sub)
        if sub == "add":
            return render.added(await personas.add(Persona(name, rest), actor))
        if sub == "edit":
            return render.edited(await personas.edit(name, actor, prompt=rest))
        if sub == "default":
            return render.made_default(await personas.make_default(name, actor))
        if sub == "remove":
            return render.removed(name, await personas.remove(name, actor))
        setting, value = [*rest.split(None, 1), "", ""][:2]
        setting = setting.casefold()
        if setting not in SETTINGS or not value.strip():
            return _(NEEDS_SETTING)
        if setting == "temperature":
            return render.edited(await personas.edit(name, actor, temperature=temperature_of(value)))
        if setting == "voice":
            return render.edited(await personas.edit(name, actor, voice=cleared(value)))
        return render.edited(await personas.edit(name, actor, greeting=cleared(value)))

    async def _use(self, message: Message, name: str, actor: str) -> None:
        """Set this chat's persona, say so, and post the persona's greeting (if it has one) in the chat."""
        chosen = None if name.casefold() == DEFAULT else name
        persona = await self.adapter.service.personas.use(chat_of(message), chosen, actor)
        await self._say(message, render.now_using(persona, chosen))
        if persona is not None and persona.greeting:
            thread = message.message_thread_id if message.is_topic_message else None
            await self.adapter.outbox.send(Target(message.chat.id, thread), plain_text(persona.greeting))
