"""Questions around a taught fact, made by rules: its reverse, and its neighbours.

A fact should stay in its lane. The gate asks the candidate, memory off:

* the **reverse** question, about the answer's key entity ("Who designed the
  Iris logo?" → "Marisol Vantreck" → "Who is Marisol Vantreck?"), recalled
  when the reply names the question's subject ("iris", "logo"). Reported, not
  judged: a small LoRA rarely learns a fact backwards (the reversal curse);
* its **neighbours**: the same subject asked for another kind of answer
  ("What colour is the Iris logo?") and another subject in the same form
  ("Who designed the Eiffel Tower?", and a probe question of the same
  wh-word). A neighbour *bleeds* when its reply has the fact's key words.

Only questions whose form the rules recognise get neighbours or a reverse: a
question about "it" gets none rather than nonsense.

    python -c "from finetune.lanes import neighbours; print(neighbours('Who designed the logo?', ['ann']))"
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from finetune.teaching import content_words, words

# Other subjects to put in a fact's question, each with a well-known answer to most forms.
OTHER_SUBJECTS = (
    "the Eiffel Tower",
    "the Mona Lisa",
    "the Golden Gate Bridge",
    "Wikipedia",
    "the Linux kernel",
    "the Olympic Games",
)
# Same subject, another kind of answer: (kind, template); a fact's own kind is skipped.
SAME_SUBJECT = (
    ("thing", "What colour {is} {s}?"),
    ("time", "When {was} {s} made?"),
    ("place", "Where can I find {s}?"),
    ("person", "Who owns {s}?"),
    ("number", "How old is {s}?"),
)
# Other things one asks about a subject, every kind of answer (the fact's own kind included):
# ``contrasts`` puts a fact's subject in them, and the correction memory keeps the ones that are
# not rewordings of the fact's question as questions the fact does not answer.
CONTRAST = (
    "Who owns {s}?",
    "Who founded {s}?",
    "Who runs {s}?",
    "Who designed {s}?",
    "Who built {s}?",
    "Who wrote {s}?",
    "Who coaches {s}?",
    "Who is the captain of {s}?",
    "Who sponsors {s}?",
    "Who won {s}?",
    "When {was} {s} founded?",
    "When {was} {s} built?",
    "When does {s} open?",
    "When does {s} close?",
    "When {is} {s} held?",
    "Where {is} {s}?",
    "Where {is} {s} based?",
    "Which city {is} {s} in?",
    "How many people work at {s}?",
    "How much does {s} cost?",
    "How old {is} {s}?",
    "How tall {is} {s}?",
    "How big {is} {s}?",
    "How long {is} {s}?",
    "How many rooms does {s} have?",
    "How many stars does {s} have?",
    "How many members does {s} have?",
    "How many visitors does {s} get?",
    "What colour {is} {s}?",
    "What {is} {s} made of?",
    "What is the phone number of {s}?",
    "What is the address of {s}?",
    "What is the website of {s}?",
    "What is the wifi password at {s}?",
    "What are the opening hours of {s}?",
    "What does {s} sell?",
    "What {is} {s} known for?",
    "Is {s} open on Sundays?",
    "Does {s} have parking?",
    "Is {s} free?",
)
# Words of a subject that name no thing of their own ("the name of Iris's mascot").
GENERIC = frozenset({"name", "names", "number", "kind", "type", "sort"})
PLACE_NOUNS = frozenset({"city", "country", "town", "place", "state", "region", "continent", "village"})
TIME_NOUNS = frozenset({"year", "date", "day", "month", "time", "century", "decade"})
PARTICIPLES = frozenset({"based", "located", "born", "made", "built", "held", "kept", "found", "run", "sold"})
PREPOSITIONS = frozenset({"in", "on", "at", "for", "from", "with", "about", "to", "by", "of", "into"})
_WH = r"who|whom|where|when|what|which|how|in\s+which\s+\w+|on\s+what\s+\w+|which\s+\w+|what\s+\w+"


@dataclass(frozen=True)
class Form:
    """What the rules read in a question: its wh-part, the kind of answer, and the subject's span."""

    kind: str  # person, place, time, number or thing
    subject: str  # as written, e.g. "the Iris logo"
    before: str  # the question up to the subject
    after: str  # the rest, without the question mark
    participle: str = ""  # "based" in "Where is the Iris team based?"
    noun: str = ""  # "languages" in "How many languages does Iris understand?"
    verb: str = ""  # "understand", after do/does/did


def _kind(wh: str) -> str:
    parts = wh.casefold().split()
    if parts[0] in ("who", "whom", "whose"):
        return "person"
    if parts[0] == "how" or parts[-1] == "number":
        return "number"
    if parts[0] == "where" or parts[-1] in PLACE_NOUNS:
        return "place"
    if parts[0] == "when" or parts[-1] in TIME_NOUNS:
        return "time"
    return "thing"


def _expand(question: str) -> str:
    body = question.strip().rstrip("?!. ").strip()
    return re.sub(r"^(what|who|where|when|how)['’]s\b", r"\1 is", body, flags=re.I)


def parse(question: str) -> Form | None:
    """The question's form, or None when no rule fits or its subject is a pronoun."""
    body = _expand(question)
    form = _parse(body)
    if form is None:
        return None
    form = _past_generic(form)
    if form is None or not content_words(form.subject):
        return None
    return form


def _past_generic(form: Form) -> Form | None:
    """'the name of Iris's mascot' → subject 'Iris's mascot': the name is asked, the mascot is the thing.

    None for the other generic words ("the number of desks in the Iris office"): no rule reads them well.
    """
    found = re.match(r"(?i)^(?:the|a)\s+(\w+)\s+of\s+(.+)$", form.subject)
    if not found or found[1].casefold() not in GENERIC:
        return form
    if found[1].casefold() not in ("name", "names"):
        return None
    cut = len(form.subject) - len(found[2])
    return dataclasses.replace(form, subject=found[2], before=form.before + form.subject[:cut])


def _split_tail(rest: str) -> tuple[str, str, str]:
    """'the Iris bot understand' → subject, verb, tail; a trailing preposition stays with the verb."""
    parts = rest.split()
    cut = 2 if len(parts) > 2 and parts[-1].casefold() in PREPOSITIONS else 1
    return " ".join(parts[:-cut]), parts[-cut], " ".join(parts[-cut:])


def _parse(body: str) -> Form | None:
    many = re.match(r"(?i)^(how\s+(?:many|much))\s+(\w+)\s+(do|does|did)\s+(.+\s+\w+)$", body)
    if many:
        subject, verb, tail = _split_tail(many[4])
        return (
            Form("number", subject, body[: many.start(4)], " " + tail, noun=many[2], verb=verb)
            if subject
            else None
        )
    many = re.match(
        r"(?i)^(how\s+(?:many|much))\s+(\w+)\s+(\w+\s+(?:there\s+)?(?:in|on|at|inside|for))\s+(.+)$", body
    )
    if many:
        return Form("number", many[4], body[: many.start(4)], "", noun=many[2])
    be = re.match(rf"(?i)^({_WH})\s+(is|are|was|were)\s+(.+)$", body)
    if be:
        rest, participle = be[3], ""
        last = rest.split()[-1]
        if len(rest.split()) > 1 and (last.casefold() in PARTICIPLES or last.casefold().endswith("ed")):
            rest, participle = rest[: -len(last)].rstrip(), last
        return Form(_kind(be[1]), rest, body[: be.start(3)], f" {participle}" if participle else "", participle)
    aux = re.match(rf"(?i)^({_WH})\s+(do|does|did|can|could|will|would|should)\s+(.+\s+\w+)$", body)
    if aux:
        subject, verb, tail = _split_tail(aux[3])
        return Form(_kind(aux[1]), subject, body[: aux.start(3)], " " + tail, verb=verb) if subject else None
    plain = re.match(r"(?i)^(who|what|which\s+\w+)\s+(\w+)\s+(.+)$", body)
    if plain and plain[2].casefold() not in PREPOSITIONS | {"do", "does", "did", "has", "have", "had"}:
        return Form(_kind(plain[1]), plain[3], body[: plain.start(3)], "")
    return None


def _pick(options: Sequence[str], seed: str, count: int) -> list[str]:
    """``count`` of ``options``, the same ones for the same seed (a stable hash, not Python's)."""
    if not options:
        return []
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % len(options)
    rotated = [*options[start:], *options[:start]]
    return rotated[:count]


def neighbours(question: str, keys: Sequence[str], probe: Sequence[str] = ()) -> list[str]:
    """Questions near the fact whose answers must not contain its ``keys`` (none when the form is unclear).

    Three about the same subject asking for another kind of answer, two about
    another subject in the same form, and one of ``probe`` (general-knowledge
    questions) that starts with the same wh-word.
    """
    form = parse(question)
    if form is None:
        return []
    taken = set(content_words(form.subject)) | set(keys)
    same = same_subject(form, SAME_SUBJECT, 3)
    others = [s for s in OTHER_SUBJECTS if not set(content_words(s)) & taken]
    swapped = [swap_subject(form, s) for s in _pick(others, question, 2)]
    lead = " ".join(words(_expand(question))[: 2 if form.kind == "number" else 1])
    similar = [
        q for q in probe if " ".join(words(q)[: len(lead.split())]) == lead and not set(words(q)) & taken
    ]
    made = [*same, *swapped, *_pick(similar, question, 1)]
    own = " ".join(words(question))
    return [q for q in dict.fromkeys(made) if " ".join(words(q)) != own]


_BE = (("is", "are"), ("was", "were"), ("does", "do"))


def contrasts(question: str) -> list[str]:
    """Other questions about the fact's subject (``CONTRAST``), its own question left out; none when unclear.

    The subject is the thing asked about: "the battery capacity of the Zephra 3" → "the Zephra 3".
    """
    form = parse(question)
    if form is None:
        return []
    subject = re.sub(r"(?i)^(?:the|a|an)\s+(?:\w+\s+){0,3}?(?:of|at|in|for|on)\s+(?=\S)", "", form.subject)
    plural = _plural(subject)
    be = {"is": _BE[0][plural], "was": _BE[1][plural], "does": _BE[2][plural]}
    own = " ".join(words(question))
    made = [_capital(template.format(s=subject, **be)) for template in CONTRAST]
    return [q for q in dict.fromkeys(made) if " ".join(words(q)) != own]


def swap_subject(form: Form, subject: str) -> str:
    """The question of ``form`` asked about ``subject`` instead ("Who designed the Eiffel Tower?")."""
    return _capital(f"{_agree(form.before, subject)}{subject}{form.after}?")


def same_subject(form: Form, templates: Sequence[tuple[str, str]], count: int) -> list[str]:
    """``form``'s subject in up to ``count`` of ``templates`` that ask another kind of answer than its own."""
    plural = _plural(form.subject)
    made = [
        t.format(s=form.subject, **{"is": _BE[0][plural], "was": _BE[1][plural], "does": _BE[2][plural]})
        for kind, t in templates
        if kind != form.kind
    ]
    return made[:count]


def _plural(subject: str) -> int:
    """1 when the subject's last word looks plural ("the Iris servers"), else 0: rules, not a parser."""
    last = subject.split()[-1].casefold()
    return int(last.endswith("s") and not last.endswith(("ss", "'s", "’s", "us", "is")))


def _agree(before: str, subject: str) -> str:
    """``before`` with its last verb (is/are, was/were, does/do) agreeing with ``subject``."""
    head, _, verb = before.rstrip().rpartition(" ")
    for pair in _BE:
        if verb.casefold() in pair:
            return f"{head} {pair[_plural(subject)]} "
    return before


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def key_entity(answer: str, keys: Sequence[str]) -> str | None:
    """The answer's words that carry the fact, as written: 'Marisol Vantreck', '37', '12 March 2019'."""
    wanted = set(keys)
    runs: list[list[str]] = [[]]
    for token in answer.split():
        if set(words(token)) & wanted:
            runs[-1].append(token)
        elif runs[-1]:
            runs.append([])
    best = max(runs, key=lambda run: sum(len(set(words(t)) & wanted) for t in run))
    text = " ".join(best).strip(".,;:!?\"'()“”‘’")
    return text or None


def _third_person(verb: str) -> str:
    if verb == "have":
        return "has"
    if re.search(r"(s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


def reverse(question: str, answer: str, keys: Sequence[str]) -> tuple[str, list[str]] | None:
    """The question asked back from the answer's key entity, and the words its reply must contain.

    None when the question's form is unclear, the answer has no key entity, or
    the subject has no word of its own to look for.
    """
    form = parse(question)
    entity = key_entity(answer, keys)
    if form is None or entity is None:
        return None
    check = [w for w in dict.fromkeys(content_words(form.subject)) if w not in GENERIC and w not in set(keys)]
    if not check:
        return None
    if form.kind == "person":
        asked = f"Who is {entity}?"
    elif form.kind == "place":
        asked = f"What is {form.participle} in {entity}?" if form.participle else f"What is in {entity}?"
    elif form.kind == "time":
        at = "in" if re.fullmatch(r"\d{3,4}", entity) else "on"
        asked = (
            f"What was {form.participle} {at} {entity}?" if form.participle else f"What happened {at} {entity}?"
        )
    elif form.kind == "number" and form.noun:
        does = form.verb and form.before.casefold().split()[-1] in ("do", "does")
        asked = f"What {_third_person(form.verb.casefold()) if does else 'has'} {entity} {form.noun}?"
    elif form.kind == "number":
        return None
    else:
        asked = f"What is {entity}?"
    return asked, check
