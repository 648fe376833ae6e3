"""What every chat adapter shows the same way: stats, A/B reports, /forget's answer, the audit trail, review
and choice cards (long replies are cut by ``bots.splitting``)."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable

from bots.splitting import cut_point, split_rendered
from core.domain import AuditEntry, Correction, ForgetReport, Stats
from core.experiments import ABReport, Decision, ExperimentKind
from core.i18n import N_, _, ngettext


def format_stats(stats: Stats) -> str:
    """The figures admins see (``iris stats``, /stats), as plain lines every platform shows well.

    In the admin's language in the chats (the CLI speaks English); numbers, model and persona
    names stay as they are.
    """
    lines = [
        _("Messages: {messages} ({voice} voice) from {people} people in {conversations} conversations").format(
            messages=stats.user_turns,
            voice=f"{stats.voice_share:.0%}",
            people=stats.people,
            conversations=stats.conversations,
        ),
        _("Replies: {replies}").format(replies=stats.replies),
        _("Corrections: {pending} waiting for review, {approved} approved, {rejected} rejected").format(
            pending=stats.corrections_pending,
            approved=stats.corrections_approved,
            rejected=stats.corrections_rejected,
        ),
        _(
            "Answered from approved corrections: {served} as approved, "
            "{grounded} written with one given to the model"
        ).format(served=stats.memory_served, grounded=stats.memory_grounded),
        _("Active model: {model}").format(model=stats.active_model or "-"),
    ]
    if stats.active_model_error:
        lines.append(
            _("⚠️ Broken: {error}; running bots keep the model they had loaded").format(
                error=stats.active_model_error
            )
        )
    for row in stats.by_model:
        lines.append(_rated_line(row.model, row.replies, row.up, row.down))
    if any(row.persona is not None for row in stats.by_persona):  # only once a persona wrote a reply
        lines.append(_("By persona:"))
        for figures in stats.by_persona:
            name = figures.persona or _("(configured prompt)")
            lines.append(_rated_line(name, figures.replies, figures.up, figures.down))
    if stats.by_language:  # core.languages: what people write in, and replies the model wrote in another
        spoken = ", ".join(f"{code or _('unknown')} {count}" for code, count in stats.by_language)
        lines.append(_("Messages by language: {languages}").format(languages=spoken))
        lines.append(
            _("Replies not in the person's language: {count}").format(count=stats.replies_off_language)
        )
    return "\n".join(lines)


def _rated_line(name: str, replies: int, up: int, down: int) -> str:
    """One model's or persona's replies and ratings: "• NAME: 12 replies, 3 👍, 1 👎 (75% 👍)"."""
    rated = up + down
    share = f" ({up / rated:.0%} 👍)" if rated else ""
    return _("• {name}: {replies} replies, {up} 👍, {down} 👎{share}").format(
        name=name, replies=replies, up=up, down=down, share=share
    )


def format_ab(report: ABReport | None) -> str:
    """An A/B test's figures (``iris models ab status``, /ab): per arm, the difference, the rule's decision.

    In the admin's language in the chats; arm names (control, candidate), versions and
    command names stay as they are.
    """
    if report is None:
        return _("No A/B test has run yet. Start one with `iris models ab start CANDIDATE`.")
    experiment = report.experiment
    state = (
        _("running")
        if experiment.running
        else _("ended: {decision} by {who}").format(decision=experiment.decision, who=experiment.decided_by)
    )
    by_persona = experiment.kind is ExperimentKind.PERSONA
    if by_persona:
        head = _(
            "A/B test {id}: persona {candidate} to {share} of conversations against persona {control} ({state})"
        )
    else:
        head = _("A/B test {id}: {candidate} to {share} of conversations against {control} ({state})")
    lines = [
        head.format(
            id=experiment.id,
            candidate=experiment.candidate,
            share=f"{experiment.share:.0%}",
            control=experiment.control or _("the active version"),
            state=state,
        )
    ]
    for arm in (report.control, report.candidate):
        counts = arm.counts
        rated = f"{arm.rated_share:.0%}" if arm.rated_share is not None else "-"
        up = "-"
        if arm.up_share is not None and arm.interval is not None:
            up = f"{arm.up_share:.0%} (95% {arm.interval.low:.0%}–{arm.interval.high:.0%})"
        versions = ", ".join(counts.versions) or "-"
        # Ratings past a person's share on the arm are stored but not counted: say how many.
        left_out = counts.all_ratings - arm.ratings
        uncounted = (
            " "
            + _("({count} more not counted: over {most} a person)").format(
                count=left_out, most=experiment.ratings_per_person
            )
            if left_out > 0
            else ""
        )
        # Replies the correction memory served word for word: no arm wrote them, in no figure.
        memory = (
            " " + _("(and {count} served from memory, not counted)").format(count=counts.memory_served)
            if counts.memory_served
            else ""
        )
        name = f" {experiment.arm_name(arm.arm)}" if by_persona else ""
        lines.append(
            _(
                "• {arm} [{versions}]: {conversations} conversations, {replies} replies{memory}, "
                "{rated} rated; {ratings}/{min_ratings} ratings{uncounted} "
                "from {raters}/{min_raters} people, 👍 {up}"
            ).format(
                arm=f"{arm.arm.value}{name}",
                versions=versions,
                conversations=counts.conversations,
                replies=counts.replies,
                memory=memory,
                rated=rated,
                ratings=arm.ratings,
                min_ratings=experiment.min_ratings,
                uncounted=uncounted,
                raters=arm.raters,
                min_raters=experiment.min_raters,
                up=up,
            )
        )
    comparison = report.comparison
    if comparison is None:
        lines.append(_("Difference: - (each arm needs a rating)"))
    else:
        bootstrap = ""
        if comparison.bootstrap:
            bootstrap = _(", {low} to {high} (bootstrap over conversations)").format(
                low=f"{comparison.bootstrap.low:+.1%}", high=f"{comparison.bootstrap.high:+.1%}"
            )
        lines.append(
            _(
                "Difference (candidate − control): {difference}, 95% {low} to {high} (Newcombe){bootstrap}"
            ).format(
                difference=f"{comparison.difference:+.1%}",
                low=f"{comparison.newcombe.low:+.1%}",
                high=f"{comparison.newcombe.high:+.1%}",
                bootstrap=bootstrap,
            )
        )
    margin = f"{experiment.margin:.0%}"
    if report.decision is Decision.WAIT:
        rule = _(
            "wait: the rule decides at {ratings} ratings from at least {raters} people on both arms"
        ).format(ratings=experiment.min_ratings, raters=experiment.min_raters)
    elif report.decision is Decision.PROMOTE:
        rule = _("promote: not worse than the control by more than {margin}").format(margin=margin)
        if by_persona:
            rule += " " + _("({name} becomes the default persona)").format(name=experiment.candidate)
    else:
        rule = _("roll back: it may be worse than the control by more than {margin}").format(margin=margin)
        if by_persona:
            rule += " " + _("({name} becomes the default persona)").format(name=experiment.control)
    shown = _("Rule now: {rule}") if experiment.running else _("Rule at the end: {rule}")
    lines.append(shown.format(rule=rule))
    return "\n".join(lines)


def format_forget(report: ForgetReport) -> str:
    """What /forget did, in words the person can hold Iris to (every chat and the console say the same)."""
    if report.retry_after_s > 0:
        minutes = max(1, math.ceil(report.retry_after_s / 60))
        return ngettext(
            "You used /forget a moment ago, and it takes a while to go through every copy. "
            "Please send /forget again in {count} minute.",
            "You used /forget a moment ago, and it takes a while to go through every copy. "
            "Please send /forget again in {count} minutes.",
            minutes,
        ).format(count=minutes)
    lines = [
        _("Done: I deleted {messages}, {ratings} and {answers}.").format(
            messages=ngettext("{count} message", "{count} messages", report.turns).format(count=report.turns),
            ratings=ngettext("{count} rating", "{count} ratings", report.ratings).format(count=report.ratings),
            answers=ngettext(
                "{count} suggested answer", "{count} suggested answers", report.corrections
            ).format(count=report.corrections),
        )
    ]
    copies = report.copies
    if copies is not None and copies.files:
        lines.append(
            ngettext(
                "I also took your words out of {count} training data file ({examples} removed).",
                "I also took your words out of {count} training data files ({examples} removed).",
                copies.files,
            ).format(
                count=copies.files,
                examples=ngettext("{count} example", "{count} examples", copies.rows).format(count=copies.rows),
            )
        )
    if copies is not None and copies.models:
        lines.append(
            _(
                "Model versions already trained with your words: {names}. A trained model cannot unlearn, "
                "but no future training will use your words."
            ).format(names=", ".join(copies.models))
        )
    if copies is not None and copies.unreachable:
        files = len(copies.unreachable)
        lines.append(
            ngettext(
                "{count} file of training data could not be cleaned yet; the bot's admins have been told.",
                "{count} files of training data could not be cleaned yet; the bot's admins have been told.",
                files,
            ).format(count=files)
        )
    if copies is not None and copies.unchecked and not copies.unreachable:
        files = len(copies.unchecked)
        lines.append(
            ngettext(
                "{count} file beside the training data may hold a copy; "
                "the bot's admins have been told to check them.",
                "{count} files beside the training data may hold a copy; "
                "the bot's admins have been told to check them.",
                files,
            ).format(count=files)
        )
    if report.complete:
        lines.append(_("Nothing about you is stored any more."))
    return "\n".join(lines)


def format_audit(entries: list[AuditEntry]) -> str:
    """The audit trail, one line an entry: when (UTC), who, what, on what, and the details."""
    if not entries:
        return _("The audit trail is empty.")
    return "\n".join(audit_line(entry) for entry in entries)


def audit_line(entry: AuditEntry) -> str:
    details = " ".join(f"{key}={value}" for key, value in entry.details.items() if key != "summary")
    parts = [f"{entry.at:%Y-%m-%d %H:%M} UTC", entry.actor, entry.action.value]
    if entry.target:
        parts.append(entry.target)
    if details:
        parts.append(details)
    return " · ".join(parts)


# /voice on|off, the same words in every chat.
VOICE_CHOICES = {"on": True, "off": False}
VOICE_ASK = N_("Send /voice on to get my replies as voice notes too, or /voice off for text only.")
VOICE_ON = N_("From now on my replies come as text and as a voice note. /voice off stops the voice notes.")
VOICE_OFF = N_("From now on I answer in text only. /voice on brings the voice notes back.")
VOICE_UNAVAILABLE = N_("Spoken replies are not set up on this bot.")


def voice_choice(argument: str) -> bool | None:
    """``True``/``False`` for /voice on|off (also yes/no), None for anything else."""
    word = argument.strip().lower()
    return VOICE_CHOICES.get({"yes": "on", "no": "off"}.get(word, word))


def format_voice_choice(on: bool, available: bool) -> str:
    if not available:
        return _(VOICE_UNAVAILABLE)
    return _(VOICE_ON if on else VOICE_OFF)


# What is stripped from people's text before a reviewer sees it: control characters (a terminal
# runs ANSI escapes; a carriage return overwrites the line) and format characters (bidi overrides
# such as U+202E reorder what is shown, zero-width and tag characters hide text).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_KEPT = frozenset("\n\t")
_LINE_BREAKS = frozenset("\u2028\u2029\x85")


def printable(text: str) -> str:
    """``text`` as a reviewer may safely see it: without control, bidi and invisible format characters.

    Line and paragraph separators become plain line breaks. Everything else is kept as written.
    """
    return "".join(_shown_char(char) for char in text)


def _shown_char(char: str) -> str:
    if char in _KEPT:
        return char
    if char in _LINE_BREAKS:
        return "\n"
    if unicodedata.category(char) in _HIDDEN_CATEGORIES or "\U000e0100" <= char <= "\U000e01ef":
        return ""  # the last: variation selectors 17-256, invisible, used to smuggle text
    return char


def review_card(
    correction: Correction,
    limit: int,
    bold: Callable[[str], str] = str,
    escape: Callable[[str], str] = str,
) -> list[str]:
    """A correction as a reviewer sees it, in as many messages of at most ``limit`` characters as it takes.

    Every character that approval would store is shown (less the hidden ones that
    ``printable`` removes, which the card counts): a cut would let text hide behind it.
    ``bold`` marks the card's own labels and ``escape`` neutralises a platform's markup
    in people's text.
    """
    fields = [
        (_("Asked:"), correction.prompt or "-"),
        (_("Iris replied:"), correction.original_reply or _("(the reply is gone)")),
        (_("Suggested answer:"), correction.text),
    ]
    who = printable(correction.person.display_name or correction.person.user_id).strip()[:80]
    title = bold(_("Correction #{id}").format(id=correction.id))
    head = _("{title} from {who} ({platform})").format(
        title=title, who=escape(who), platform=correction.person.platform
    )
    if correction.served:
        head += "\n" + ngettext(
            "Answered {count} later question from the correction memory.",
            "Answered {count} later questions from the correction memory.",
            correction.served,
        ).format(count=correction.served)
    hidden = sum(len(text) - len(printable(text)) for _label, text in fields)
    if hidden:
        head += "\n⚠ " + ngettext(
            "{count} hidden character (control, bidi or zero-width) not shown; "
            "approval stores the text as written.",
            "{count} hidden characters (control, bidi or zero-width) not shown; "
            "approval stores the text as written.",
            hidden,
        ).format(count=hidden)
    blocks = [head]
    for label, text in fields:
        label = bold(label)
        pieces = split_rendered(printable(text).strip() or "-", limit - len(label) - 1, escape)
        blocks += [f"{label} {pieces[0]}", *pieces[1:]]
    return _pack(blocks, limit)


def _pack(blocks: list[str], limit: int, separator: str = "\n\n") -> list[str]:
    """Blocks (each within ``limit``) joined into as few messages of at most ``limit`` as keep their order."""
    messages: list[str] = []
    for block in blocks:
        if messages and len(messages[-1]) + len(separator) + len(block) <= limit:
            messages[-1] += separator + block
        else:
            messages.append(block)
    return messages


CHOICE_QUESTION = N_("Which answer is better?")


def choice_card(first: str, second: str, limit: int, escape: Callable[[str], str] = str) -> str:
    """The 🔁 pair as one message of at most ``limit`` characters, with its 1 / 2 / Neither buttons.

    One message, so the buttons sit under both answers: an answer that does not fit is cut
    at a whole sentence or word and marked "…", the shorter one keeping all of its text
    and the longer one the rest of the room. ``escape`` neutralises a platform's markup
    in the model's text (measured after escaping, never cut inside an escape).
    """
    labels = (f"{_(CHOICE_QUESTION)}\n\n1: ", "\n\n2: ")
    room = limit - sum(len(label) for label in labels)
    texts = [printable(text).strip() or "-" for text in (first, second)]
    sizes = [len(escape(text)) for text in texts]
    short = 0 if sizes[0] <= sizes[1] else 1
    shares = [0, 0]
    shares[short] = min(sizes[short], room // 2)
    shares[1 - short] = room - shares[short]
    shown = [_whole(text, share, escape) for text, share in zip(texts, shares, strict=True)]
    return f"{labels[0]}{shown[0]}{labels[1]}{shown[1]}"


def _whole(text: str, limit: int, escape: Callable[[str], str]) -> str:
    """``text`` escaped within ``limit`` characters: whole, or cut at the best boundary with "…"."""
    shown = escape(text)
    if len(shown) <= limit:
        return shown
    size = max(limit - 1, 1)
    while True:
        piece = escape(text[: cut_point(text, size)].rstrip()) + "…"
        if len(piece) <= limit or size <= 1:
            return piece
        size = max(1, size * limit // len(piece) - 1)
