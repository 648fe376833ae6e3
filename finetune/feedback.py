"""Feedback → training data: SFT (FineTome's shape), KTO and DPO files, and a manifest.

Run it::

    iris feedback export --out data/feedback [--since 2026-01-01] [--until 2026-02-01]

or from Python: ``export_feedback(database_url, Path("data/feedback"))``.

What becomes what:

* ``sft.jsonl`` – FineTome rows (``conversations`` of ``{from, value}``, ``source``,
  ``score``): each approved correction (the corrected answer replaces the bot's,
  score 5.0) and each reply that more people rated 👍 than 👎 and that has no
  approved correction (score 5 × its 👍 share).
* ``kto.jsonl`` – one row per current 👍/👎, for TRL's ``KTOTrainer``:
  ``prompt`` (the conversation up to the question, in TRL's conversational
  format: a list of ``{role, content}``), ``completion`` (``[{role: assistant,
  content: reply}]``) and ``label`` (true for 👍).
* ``dpo.jsonl`` – one row per approved correction, for TRL's ``DPOTrainer``:
  ``prompt`` as above, ``chosen`` = the correction, ``rejected`` = the bot's reply;
  then one per 🔁 pair picked 1 or 2 (``core.choices``): ``chosen`` = the picked
  answer, ``rejected`` = the other. "Neither" is counted (``choices_neither``) and
  exports nothing; an exported pick no longer changes.
* ``sft_meta.jsonl`` – beside each SFT row, in the same order: whose it is (a
  pseudonym, for the per-person cap of ``iris dataset build``), where it came from, the
  language the person asked in (``language``, ISO 639-1; None: not detected),
  and whose words it holds: the pseudonyms of everyone in it, its turn ids and its
  conversation id (``finetune.rows.RowOwners``), so that /forget finds the rows of
  a person by who they are, never by what they said;
* ``kto_meta.jsonl``, ``dpo_meta.jsonl`` – the same owners beside each KTO and DPO row.
* ``manifest.json`` – counts per kind, date range, model versions, hashes.

Nothing comes from people who used /forget (their rows are gone from the
database) or who did not consent; their turns are also left out of other
people's contexts. The same database and pseudonym key give byte-identical files.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import phonenumbers

from core.domain import CorrectionStatus, Role
from finetune import jsonl
from finetune.rows import DpoExample, FineTomeRow, KtoExample, Message, RowOwners, SftMeta, ShareGptTurn

if TYPE_CHECKING:
    from storage.choices import ChoiceRecord
    from storage.queries import ContextTurn, CorrectionRecord, RatingRecord, Speaker

SOURCE = "iris-feedback"
FORMAT_VERSION = 1
KEY_FILE = "pseudonym.key"
KEYED = "hmac-sha256"  # the manifest's ``pseudonyms``: how this export named people
LEGACY = "sha256"  # exports made before the key: a plain hash of the id (brute-forced in seconds)
CONSENT_MODES = ("opt-out", "opt-in")
# The chat-template (OpenAI) role names → FineTome's (finetune.rows reads them back).
FROM_ROLE = {"system": "system", "user": "human", "assistant": "gpt"}


@dataclass(frozen=True)
class Manifest:
    """What an export wrote, in ``manifest.json``; no wall-clock time, so exports are reproducible."""

    counts: dict[str, int]
    excluded: dict[str, int]
    since: str | None
    until: str | None
    first_feedback: str | None
    last_feedback: str | None
    model_versions: dict[str, int]
    files: dict[str, str]
    content_hash: str
    scrub: bool
    consent: str
    format: int = FORMAT_VERSION
    # How people are named in the ``*_meta.jsonl`` files; manifests written before the key say nothing.
    pseudonyms: str = LEGACY

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def export_counts(
    sft: Sequence[object],
    sft_meta: Sequence[Mapping[str, Any]],
    kto: Sequence[Mapping[str, Any]],
    dpo: Sequence[object],
) -> dict[str, int]:
    """The manifest's ``counts``: SFT rows and where they came from, 👍/👎 rows, correction pairs."""
    kinds = Counter(meta.get("kind") for meta in sft_meta)
    up = sum(1 for row in kto if row.get("label"))
    return {
        "sft": len(sft),
        "sft_from_corrections": kinds["correction"],
        "sft_from_ratings": kinds["rating"],
        "kto": len(kto),
        "kto_up": up,
        "kto_down": len(kto) - up,
        "dpo": len(dpo),
    }


def content_hash(file_hashes: Mapping[str, str]) -> str:
    """One digest over every file's name and sha256: equal exports have equal hashes."""
    return hashlib.sha256(
        "".join(f"{name}\0{digest}\n" for name, digest in sorted(file_hashes.items())).encode()
    ).hexdigest()


# --- chat messages in FineTome's shape -------------------------------------------------


def to_conversations(messages: Sequence[Message]) -> list[ShareGptTurn]:
    """``[{role, content}]`` → FineTome's ``[{from, value}]``."""
    return [{"from": FROM_ROLE[m["role"]], "value": m["content"]} for m in messages]


# --- scrubbing ------------------------------------------------------------------------

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Phone numbers are found by libphonenumber's matcher: international ones (+44 20 …) from any
# country, national ones as written in PHONE_REGION. POSSIBLE (the right length for a number
# there) rather than VALID (an assigned range): a scrub had better mask a made-up number than
# miss a real one. Dates, years, prices and short numbers stay.
PHONE_REGION = "US"


def scrub_text(text: str) -> str:
    """Mask e-mail addresses as ``[email]`` and phone numbers as ``[phone]``."""
    text = EMAIL.sub("[email]", text)
    found = phonenumbers.PhoneNumberMatcher(text, PHONE_REGION, leniency=phonenumbers.Leniency.POSSIBLE)
    for match in reversed(list(found)):  # from the end, so earlier offsets still hold
        text = text[: match.start] + "[phone]" + text[match.end :]
    return text


# --- the export -------------------------------------------------------------------------


@dataclass
class _Rows:
    name: Pseudonyms
    sft: list[tuple[tuple[int, int, int], FineTomeRow, SftMeta]] = field(default_factory=list)
    kto: list[KtoExample] = field(default_factory=list)
    kto_meta: list[RowOwners] = field(default_factory=list)
    dpo: list[DpoExample] = field(default_factory=list)
    dpo_meta: list[RowOwners] = field(default_factory=list)
    excluded: Counter[str] = field(default_factory=Counter)
    models: dict[int, str] = field(default_factory=dict)
    moments: list[datetime] = field(default_factory=list)


def export_feedback(
    database_url: str,
    out_dir: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    scrub: bool = False,
    consent: str = "opt-out",
    context_turns: int = 20,
    pseudonyms: Pseudonyms | None = None,
) -> Manifest:
    """Write ``sft.jsonl``, ``kto.jsonl``, ``dpo.jsonl``, their ``*_meta.jsonl`` and ``manifest.json``.

    ``since``/``until`` select feedback by when it was given (a rating's last
    change, a correction's approval); naive datetimes are UTC and ``until`` is
    exclusive. ``consent`` is ``"opt-out"`` (everyone who did not say no) or
    ``"opt-in"`` (only people who said yes). ``context_turns`` bounds the
    earlier turns kept before the question. ``pseudonyms`` names people in
    the meta files: the deployment's (``Pseudonyms.of_deployment``, as the
    ``iris`` commands pass), or by default a key for this export alone. Like
    every ``iris`` command, it first brings the database schema up to date
    (Alembic, idempotent).
    """
    from storage import choices as stored_choices
    from storage import queries
    from storage.database import make_engine
    from storage.migrate import upgrade

    if consent not in CONSENT_MODES:
        raise ValueError(f"consent must be one of {', '.join(CONSENT_MODES)}, not {consent!r}")
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        ratings = queries.ratings(engine, since, until)
        approved = queries.corrections(engine, CorrectionStatus.APPROVED, since, until)
        picks = stored_choices.picked(engine, since, until)
        conversations = queries.conversation_turns(
            engine,
            {r.conversation_id for r in ratings}
            | {c.conversation_id for c in approved}
            | {p.conversation_id for p in picks},
        )
        people = queries.speakers(engine)
    finally:
        engine.dispose()

    allowed = {pid for pid, s in people.items() if _consents(s.consent, consent)}
    contexts = _Contexts(conversations, allowed, context_turns, scrub)
    contexts.bad = _disliked(ratings, allowed) | {c.reply_id for c in approved if not _same(c.text, c.reply)}
    rows = _Rows(pseudonyms or Pseudonyms.ephemeral())
    corrected = _add_corrections(rows, approved, contexts, people, allowed, scrub)
    _add_ratings(rows, ratings, contexts, people, allowed, corrected, scrub)
    used = _add_choices(rows, picks, contexts, people, allowed, scrub)
    rows.excluded["context_turns_of_others_left_out"] = len(contexts.left_out)
    rows.excluded["sft_context_turns_before_a_bad_reply"] = len(contexts.cut)
    manifest = _write(rows, out_dir, since, until, scrub, consent)
    if used:  # written whole first: a pick is frozen only once the files that used it exist
        engine = make_engine(database_url)
        try:
            stored_choices.mark_exported(engine, used)
        finally:
            engine.dispose()
    return manifest


def _disliked(ratings: Iterable[RatingRecord], allowed: set[int]) -> set[int]:
    """Replies that more people rated 👎 than 👍."""
    balance: Counter[int] = Counter()
    for rating in ratings:
        if rating.rater_id in allowed:
            balance[rating.reply_id] += rating.value
    return {reply_id for reply_id, total in balance.items() if total < 0}


def _consents(said: bool | None, mode: str) -> bool:
    return said is True if mode == "opt-in" else said is not False


def legacy_pseudonym(platform: str, user_id: str) -> str:
    """How exports made before the deployment key named a person; /forget still looks for it."""
    return hashlib.sha256(f"iris-person:{platform}:{user_id}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pseudonyms:
    """Stand-ins for people in exported files: HMAC-SHA256 of their platform id with a deployment key.

    A plain hash of a Telegram id (about 10^10 of them) is reversed by trying
    them all; without the key, a keyed one is not.
    """

    key: bytes = field(repr=False)

    @classmethod
    def of_deployment(cls, data_dir: Path) -> Pseudonyms:
        """The data dir's key (``pseudonym.key``, mode 0600), created on first use."""
        return cls(deployment_key(data_dir / KEY_FILE))

    @classmethod
    def ephemeral(cls) -> Pseudonyms:
        """A key for one export only (a library call given no data dir): stable in it, linkable to nothing."""
        return cls(secrets.token_bytes(32))

    def __call__(self, platform: str, user_id: str) -> str:
        message = f"iris-person:{platform}:{user_id}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:16]


def deployment_key(path: Path) -> bytes:
    """Read the key at ``path``, or create it: written whole under another name, then linked in.

    ``os.link`` fails when the name exists, so two processes starting together
    both end up with the one key that got there first.
    """
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".key-")  # mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    return bytes.fromhex(path.read_text(encoding="ascii").strip())


class _Contexts:
    """Builds the chat a reply answered: earlier question/answer pairs, then the question."""

    def __init__(
        self, conversations: dict[int, list[ContextTurn]], allowed: set[int], turns: int, scrub: bool
    ) -> None:
        self.by_id = {t.id: t for turns_ in conversations.values() for t in turns_}
        self.replies: dict[int, list[ContextTurn]] = defaultdict(list)
        for conversation_id, turns_ in conversations.items():
            self.replies[conversation_id] = [t for t in turns_ if t.role is Role.ASSISTANT]
        self.allowed = allowed
        self.pairs = max(turns, 0) // 2
        self.scrub = scrub
        # Replies people corrected or disliked: an SFT row must not teach them as context.
        self.bad: set[int] = set()
        self.left_out: set[int] = set()
        self.cut: set[int] = set()

    def prompt(self, conversation_id: int, reply_id: int, *, clean: bool = False) -> list[Message] | None:
        """The messages before reply ``reply_id``; None when its question is gone.

        As the model saw them, less the turns of people who may not be exported;
        ``clean`` also starts after the last earlier reply in ``bad`` (for SFT,
        where every assistant turn is learned).
        """
        turns = self.turns(conversation_id, reply_id, clean=clean)
        return None if turns is None else [self._message(turn) for turn in turns]

    def turns(self, conversation_id: int, reply_id: int, *, clean: bool = False) -> list[ContextTurn] | None:
        """The turns ``prompt`` shows, in order."""
        reply = self.by_id.get(reply_id)
        question = self._turn(reply.reply_to_id) if reply is not None else None
        if question is None or question.role is not Role.USER:
            return None
        pairs = []
        # What the model saw: answered turns stored before the question arrived.
        for earlier in self.replies.get(conversation_id, []):
            asked = self._turn(earlier.reply_to_id)
            if asked is None or earlier.id >= question.id:
                continue
            if asked.person_id not in self.allowed:
                self.left_out |= {asked.id, earlier.id}
                continue
            pairs.append((asked, earlier))
        pairs.sort(key=lambda pair: pair[0].id)
        if clean:
            last_bad = max((i for i, (_, answer) in enumerate(pairs) if answer.id in self.bad), default=-1)
            self.cut |= {turn.id for pair in pairs[: last_bad + 1] for turn in pair}
            pairs = pairs[last_bad + 1 :]
        kept = pairs[len(pairs) - self.pairs :] if self.pairs else []
        return [*(turn for pair in kept for turn in pair), question]

    def owners(
        self, conversation_id: int, reply_id: int, people: dict[int, Speaker], name: Pseudonyms, *more: Speaker
    ) -> RowOwners:
        """Whose words a row built on reply ``reply_id`` holds (with its context), for /forget."""
        turns = [
            *(self.turns(conversation_id, reply_id) or []),
            *(self.turns(conversation_id, reply_id, clean=True) or []),
        ]
        speakers = [people[t.person_id] for t in turns if t.person_id in people]
        return {
            "people": sorted({name(s.person.platform, s.person.user_id) for s in [*speakers, *more]}),
            "turns": sorted({turn.id for turn in turns} | {reply_id}),
            "conversation": conversation_id,
        }

    def _turn(self, turn_id: int | None) -> ContextTurn | None:
        return self.by_id.get(turn_id) if turn_id is not None else None

    def _message(self, turn: ContextTurn) -> Message:
        text = scrub_text(turn.text) if self.scrub else turn.text
        return {"role": turn.role.value, "content": text.strip()}


def _add_corrections(
    rows: _Rows,
    approved: Iterable[CorrectionRecord],
    contexts: _Contexts,
    people: dict[int, Speaker],
    allowed: set[int],
    scrub: bool,
) -> set[int]:
    corrected: set[int] = set()
    for correction in approved:
        if correction.author_id not in allowed or correction.asker_id not in allowed:
            rows.excluded["no_consent"] += 1
            continue
        prompt = contexts.prompt(correction.conversation_id, correction.reply_id)
        if prompt is None:
            rows.excluded["question_missing"] += 1
            continue
        chosen = _clean(correction.text, scrub)
        rejected = _clean(correction.reply, scrub)
        corrected.add(correction.reply_id)
        rows.models[correction.reply_id] = correction.model_version or "?"
        rows.moments.append(correction.reviewed_at or correction.created_at)
        answer: Message = {"role": "assistant", "content": chosen}
        learned = contexts.prompt(correction.conversation_id, correction.reply_id, clean=True) or prompt
        sft: FineTomeRow = {
            "conversations": to_conversations([*learned, answer]),
            "source": SOURCE,
            "score": 5.0,
        }
        author = people[correction.author_id]
        owners = contexts.owners(correction.conversation_id, correction.reply_id, people, rows.name, author)
        meta = _meta(rows.name, author, "correction", correction.reply_id, correction.model_version, owners)
        meta["persona"] = correction.persona  # which persona's prompt wrote the corrected reply
        meta["language"] = correction.language  # the language the person asked in
        rows.sft.append(((correction.reply_id, 0, correction.id), sft, meta))
        if _same(chosen, rejected):
            rows.excluded["correction_equals_reply"] += 1
            continue
        rows.dpo_meta.append(owners)
        rows.dpo.append(
            {
                "prompt": prompt,
                "chosen": [answer],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return corrected


def _add_ratings(
    rows: _Rows,
    ratings: Iterable[RatingRecord],
    contexts: _Contexts,
    people: dict[int, Speaker],
    allowed: set[int],
    corrected: set[int],
    scrub: bool,
) -> None:
    votes: dict[int, list[tuple[RatingRecord, int, list[Message], str]]] = defaultdict(list)
    for rating in ratings:
        asker_id = rating.asker_id
        if rating.rater_id not in allowed or asker_id is None or asker_id not in allowed:
            rows.excluded["no_consent"] += 1
            continue
        prompt = contexts.prompt(rating.conversation_id, rating.reply_id)
        if prompt is None:
            rows.excluded["question_missing"] += 1
            continue
        reply = _clean(rating.reply, scrub)
        rows.models[rating.reply_id] = rating.model_version or "?"
        rows.moments.append(rating.rated_at)
        rows.kto_meta.append(
            contexts.owners(rating.conversation_id, rating.reply_id, people, rows.name, people[rating.rater_id])
        )
        rows.kto.append(
            {
                "prompt": prompt,
                "completion": [{"role": "assistant", "content": reply}],
                "label": rating.value > 0,
            }
        )
        votes[rating.reply_id].append((rating, asker_id, prompt, reply))
    for reply_id, given in sorted(votes.items()):
        up = sum(1 for rating, _, _, _ in given if rating.value > 0)
        if up * 2 <= len(given) or reply_id in corrected:
            continue
        first, asker_id, prompt, reply = given[0]
        score = round(5.0 * up / len(given), 3)
        answer: Message = {"role": "assistant", "content": reply}
        learned = contexts.prompt(first.conversation_id, reply_id, clean=True) or prompt
        sft: FineTomeRow = {
            "conversations": to_conversations([*learned, answer]),
            "source": SOURCE,
            "score": score,
        }
        raters = [people[rating.rater_id] for rating, _, _, _ in given]
        owners = contexts.owners(first.conversation_id, reply_id, people, rows.name, *raters)
        meta = _meta(rows.name, people[asker_id], "rating", reply_id, first.model_version, owners)
        meta["persona"] = first.persona  # which persona's prompt wrote the rated reply
        meta["language"] = first.language  # the language the person asked in
        rows.sft.append(((reply_id, 1, first.id), sft, meta))


def _add_choices(
    rows: _Rows,
    picks: Iterable[ChoiceRecord],
    contexts: _Contexts,
    people: dict[int, Speaker],
    allowed: set[int],
    scrub: bool,
) -> list[int]:
    """A DPO row per 🔁 pair picked 1 or 2 (the picked answer chosen, the other rejected).

    "Neither" exports nothing: it says the two are as good (or as bad) as each other, which
    is no preference, and a 👎 the person did not press is not read into it. The ids of the
    pairs the export used (rows and "neither" counted), to freeze their picks.
    """
    used: list[int] = []
    for pick in picks:
        if pick.chooser_id not in allowed or pick.asker_id is None or pick.asker_id not in allowed:
            rows.excluded["no_consent"] += 1
            continue
        prompt = contexts.prompt(pick.conversation_id, pick.reply_id)
        if prompt is None:
            rows.excluded["question_missing"] += 1
            continue
        used.append(pick.id)
        if pick.pick.value == "neither":
            rows.excluded["choices_neither"] += 1
            continue
        first, second = _clean(pick.first, scrub), _clean(pick.second, scrub)
        chosen, rejected = (first, second) if pick.pick.value == "first" else (second, first)
        if _same(chosen, rejected):
            rows.excluded["choice_answers_equal"] += 1
            continue
        rows.models[pick.reply_id] = pick.first_model or "?"
        rows.moments.append(pick.decided_at)
        chooser = people[pick.chooser_id]
        rows.dpo_meta.append(contexts.owners(pick.conversation_id, pick.reply_id, people, rows.name, chooser))
        rows.dpo.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            }
        )
    return used


def _sft_row(messages: Sequence[Message], score: float) -> FineTomeRow:
    return {"conversations": to_conversations(messages), "source": SOURCE, "score": score}


def _clean(text: str, scrub: bool) -> str:
    text = text.strip()
    return scrub_text(text) if scrub else text


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _meta(
    name: Pseudonyms,
    speaker: Speaker,
    kind: Literal["correction", "rating"],
    reply_id: int,
    model: str | None,
    owners: RowOwners,
) -> SftMeta:
    return {
        "people": owners["people"],
        "turns": owners["turns"],
        "conversation": owners["conversation"],
        "person": name(speaker.person.platform, speaker.person.user_id),
        "kind": kind,
        "reply_id": reply_id,
        "model_version": model or "?",
        "persona": None,  # the caller sets it from the reply's record
        "language": None,  # and this
    }


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat()


def _write(
    rows: _Rows, out_dir: Path, since: datetime | None, until: datetime | None, scrub: bool, consent: str
) -> Manifest:
    rows.sft.sort(key=lambda item: item[0])
    files: dict[str, Sequence[Mapping[str, Any]]] = {
        "sft.jsonl": [sft for _, sft, _ in rows.sft],
        "sft_meta.jsonl": [meta for _, _, meta in rows.sft],
        "kto.jsonl": rows.kto,
        "kto_meta.jsonl": rows.kto_meta,
        "dpo.jsonl": rows.dpo,
        "dpo_meta.jsonl": rows.dpo_meta,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    # manifest.json is written last: an export that stops midway (a full disk) must not look complete.
    (out_dir / "manifest.json").unlink(missing_ok=True)
    hashes = {name: jsonl.write(out_dir / name, content) for name, content in files.items()}
    manifest = Manifest(
        counts=export_counts(files["sft.jsonl"], files["sft_meta.jsonl"], rows.kto, rows.dpo),
        excluded=dict(sorted(rows.excluded.items())),
        since=_iso(since),
        until=_iso(until),
        first_feedback=_iso(min(rows.moments)) if rows.moments else None,
        last_feedback=_iso(max(rows.moments)) if rows.moments else None,
        model_versions=dict(sorted(Counter(rows.models.values()).items())),
        files=hashes,
        content_hash=content_hash(hashes),
        scrub=scrub,
        consent=consent,
        pseudonyms=KEYED,
    )
    jsonl.replace_file(out_dir / "manifest.json", manifest.to_json().encode())
    return manifest
