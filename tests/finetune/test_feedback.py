"""``export_feedback`` on a database seeded through the real service (see conftest.py)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from finetune.feedback import SOURCE, Manifest, Pseudonyms, export_feedback, scrub_text
from finetune.jsonl import read as read_jsonl
from finetune.rows import chat_messages
from storage.database import make_engine
from storage.queries import set_consent
from tests.finetune.conftest import (
    ALICE,
    CAROL_MARKER,
    DAVE_MARKER,
    EMAIL,
    PHONE,
    SECOND_MODEL,
    Ledger,
    Seeded,
)

KINDS = ("sft.jsonl", "kto.jsonl", "dpo.jsonl")


def same(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def expected_counts(ledger: Ledger) -> dict[str, int]:
    """What an export must hold, derived from what people did."""
    ratings = ledger.exported_ratings()
    approved = ledger.approved()
    corrected = {int(str(c["reply_id"])) for c in approved}
    votes: dict[int, list[int]] = {}
    for (_, reply_id), value in ratings.items():
        votes.setdefault(reply_id, []).append(value)
    liked = [rid for rid, vs in votes.items() if sum(v > 0 for v in vs) * 2 > len(vs) and rid not in corrected]
    dpo = [c for c in approved if not same(str(c["text"]), ledger.replies[int(str(c["reply_id"]))].text)]
    up = sum(v > 0 for v in ratings.values())
    return {
        "sft": len(approved) + len(liked),
        "sft_from_corrections": len(approved),
        "sft_from_ratings": len(liked),
        "kto": len(ratings),
        "kto_up": up,
        "kto_down": len(ratings) - up,
        "dpo": len(dpo),
    }


def copy_database(seeded: Seeded, folder: Path) -> str:
    """A private copy of the seeded SQLite database (the backup API copes with WAL)."""
    target = folder / "copy.db"
    source = sqlite3.connect(seeded.url.removeprefix("sqlite:///"))
    with sqlite3.connect(target) as copy:
        source.backup(copy)
    source.close()
    return f"sqlite:///{target}"


KEYED = Pseudonyms(b"a deployment's key, the same for every export")


@pytest.fixture
def exported(seeded: Seeded, tmp_path: Path) -> tuple[Path, Manifest]:
    out = tmp_path / "export"
    return out, export_feedback(seeded.url, out, pseudonyms=KEYED)


def test_counts_match_what_people_did(seeded: Seeded, exported: tuple[Path, Manifest]) -> None:
    out, manifest = exported
    expected = expected_counts(seeded.ledger)
    assert manifest.counts == expected
    assert expected["sft_from_corrections"] == 3 and expected["kto"] >= 8  # the seed did what it says
    for name, kind in (("sft.jsonl", "sft"), ("kto.jsonl", "kto"), ("dpo.jsonl", "dpo")):
        assert len(read_jsonl(out / name)) == expected[kind]
    assert len(read_jsonl(out / "sft_meta.jsonl")) == expected["sft"]
    assert manifest.excluded["no_consent"] >= 2  # carol's rating and correction
    assert json.loads((out / "manifest.json").read_text())["counts"] == expected


def test_every_kind_loads_with_datasets_and_has_trls_keys(
    exported: tuple[Path, Manifest], tmp_path: Path
) -> None:
    datasets = pytest.importorskip("datasets")
    out, manifest = exported
    columns = {
        "sft.jsonl": ["conversations", "source", "score"],
        "kto.jsonl": ["prompt", "completion", "label"],
        "dpo.jsonl": ["prompt", "chosen", "rejected"],
    }
    for name, wanted in columns.items():
        table = datasets.load_dataset(
            "json", data_files=str(out / name), split="train", cache_dir=str(tmp_path)
        )
        assert table.column_names == wanted
        assert len(table) == manifest.counts[name.removesuffix(".jsonl")]
    for row in read_jsonl(out / "kto.jsonl"):
        assert set(row) == {"prompt", "completion", "label"} and isinstance(row["label"], bool)
        assert [m["role"] for m in row["completion"]] == ["assistant"]
    for row in read_jsonl(out / "dpo.jsonl"):
        assert set(row) == {"prompt", "chosen", "rejected"}
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
    for row in read_jsonl(out / "sft.jsonl"):
        assert set(row) == {"conversations", "source", "score"} and row["source"] == SOURCE
        assert 0 < row["score"] <= 5


def test_prompts_carry_the_conversation_up_to_the_rated_reply(
    seeded: Seeded, exported: tuple[Path, Manifest]
) -> None:
    out, _ = exported
    ledger = seeded.ledger
    rows = read_jsonl(out / "kto.jsonl")
    wanted = ledger.exported_ratings()
    assert len(rows) == len(wanted)
    # Rows come in the order the ratings were first given, as the ledger recorded them.
    for row, ((_, reply_id), value) in zip(rows, wanted.items(), strict=True):
        reply = ledger.replies[reply_id]
        assert row["completion"][0]["content"] == reply.text.strip()
        assert row["label"] is (value > 0)
        roles = [m["role"] for m in row["prompt"]]
        assert len(roles) == reply.messages_before + 1
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
    voice_row = next(r for r in rows if len(r["prompt"]) == 3 and "France" in r["prompt"][0]["content"])
    assert voice_row["prompt"][2]["content"] == "What is the capital of France?"  # the transcript
    group_row = next(r for r in rows if r["prompt"][-1]["content"] == "What is 5 plus 5?")
    assert group_row["prompt"][0]["content"] == "Hello, I am Erin."
    assert len(group_row["prompt"]) == 3  # dave's turn between them is gone


def test_corrections_replace_the_reply_and_pair_with_it(
    seeded: Seeded, exported: tuple[Path, Manifest]
) -> None:
    out, _ = exported
    sft = read_jsonl(out / "sft.jsonl")
    answers = Counter(row["conversations"][-1]["value"] for row in sft if row["score"] == 5.0)
    assert answers["The Iris bot is maintained by Zephyrine Quill."] == 1
    assert answers["The capital of Peru is Lima."] == 2  # bob's (edited by the reviewer) and erin's
    assert "Lima, I think." not in (out / "sft.jsonl").read_text()  # the text before the edit
    assert "Blue is a primary colour." not in (out / "sft.jsonl").read_text()  # rejected
    assert "Jupiter" not in (out / "sft.jsonl").read_text()  # pending
    dpo = read_jsonl(out / "dpo.jsonl")
    maintained = next(r for r in dpo if r["prompt"][-1]["content"] == "Who maintains the Iris bot?")
    fix = next(c for c in seeded.ledger.approved() if "Zephyrine" in str(c["text"]))
    assert maintained["rejected"][0]["content"] == seeded.ledger.replies[int(str(fix["reply_id"]))].text.strip()
    assert maintained["chosen"][0]["content"] == "The Iris bot is maintained by Zephyrine Quill."


def test_sft_never_teaches_a_reply_people_corrected_or_disliked(
    seeded: Seeded, exported: tuple[Path, Manifest]
) -> None:
    out, manifest = exported
    ledger = seeded.ledger
    ratings = ledger.exported_ratings()
    balance = Counter[int]()
    for (_, reply_id), value in ratings.items():
        balance[reply_id] += value
    bad = {ledger.replies[rid].text.strip() for rid, total in balance.items() if total < 0}
    bad |= {
        ledger.replies[int(str(c["reply_id"]))].text.strip()
        for c in ledger.approved()
        if not same(str(c["text"]), ledger.replies[int(str(c["reply_id"]))].text)
    }
    good = {ledger.replies[rid].text.strip() for rid, total in balance.items() if total > 0}
    bad -= good  # the model may have said the same thing twice, once liked
    assert bad
    for row in read_jsonl(out / "sft.jsonl"):
        *context, answer = [t["value"] for t in row["conversations"] if t["from"] == "gpt"]
        assert not set(context) & bad
        assert answer not in bad - {str(c["text"]) for c in ledger.approved()}
    assert manifest.excluded["sft_context_turns_before_a_bad_reply"] > 0


def test_the_manifest_names_model_versions_and_dates(seeded: Seeded, exported: tuple[Path, Manifest]) -> None:
    _, manifest = exported
    assert set(manifest.model_versions) == {seeded.base_model, SECOND_MODEL}
    exported_replies = {rid for _, rid in seeded.ledger.exported_ratings()} | {
        int(str(c["reply_id"])) for c in seeded.ledger.approved()
    }
    by_model = Counter(seeded.ledger.replies[rid].model for rid in exported_replies)
    assert manifest.model_versions == dict(by_model)
    assert manifest.first_feedback is not None and manifest.last_feedback is not None
    assert manifest.first_feedback < manifest.last_feedback
    assert manifest.since is None and manifest.until is None
    assert set(manifest.files) == {*KINDS, "sft_meta.jsonl", "kto_meta.jsonl", "dpo_meta.jsonl"}
    assert manifest.pseudonyms == "hmac-sha256"


def test_forgotten_and_unconsenting_peoples_words_appear_nowhere(exported: tuple[Path, Manifest]) -> None:
    out, _ = exported
    everything = "".join(path.read_text() for path in sorted(out.iterdir()))
    assert "Zephyrine" in everything  # the export is not simply empty
    assert DAVE_MARKER not in everything
    assert CAROL_MARKER not in everything
    assert "4004" not in everything and "3003" not in everything and "1001" not in everything  # no user ids


def test_a_second_export_is_byte_identical(
    seeded: Seeded, exported: tuple[Path, Manifest], tmp_path: Path
) -> None:
    first, manifest = exported
    again = export_feedback(seeded.url, tmp_path / "again", pseudonyms=KEYED)
    same_dir = export_feedback(seeded.url, first, pseudonyms=KEYED)
    assert again == manifest == same_dir
    for path in sorted(first.iterdir()):
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    assert not list(first.glob("*.partial"))


def test_since_and_until_pick_feedback_by_when_it_was_given(seeded: Seeded, tmp_path: Path) -> None:
    ledger = seeded.ledger
    assert ledger.midpoint is not None
    later = export_feedback(seeded.url, tmp_path / "later", since=ledger.midpoint)
    earlier = export_feedback(seeded.url, tmp_path / "earlier", until=ledger.midpoint)
    assert later.counts["kto"] == len(ledger.exported_ratings(since=ledger.midpoint))
    assert later.counts["kto"] + earlier.counts["kto"] == expected_counts(ledger)["kto"]
    assert earlier.counts["sft_from_corrections"] == 1  # only the Iris-maintainer fix came before
    assert later.since == ledger.midpoint.isoformat() and earlier.until == ledger.midpoint.isoformat()
    assert "Zephyrine" not in (tmp_path / "later" / "sft.jsonl").read_text()


def test_scrub_masks_email_addresses_and_phone_numbers(seeded: Seeded, tmp_path: Path) -> None:
    plain = export_feedback(seeded.url, tmp_path / "plain")
    masked = export_feedback(seeded.url, tmp_path / "masked", scrub=True)
    assert EMAIL in (tmp_path / "plain" / "kto.jsonl").read_text()
    text = "".join(p.read_text() for p in sorted((tmp_path / "masked").iterdir()))
    assert EMAIL not in text and PHONE not in text
    assert "[email]" in text and "[phone]" in text
    assert masked.scrub and not plain.scrub and masked.counts == plain.counts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to a.b-c@mail.example.org now", "write to [email] now"),
        ("call +1 (555) 123-4567 today", "call [phone] today"),
        ("call 555-123-4567", "call [phone]"),
        ("06 12 34 56 78", "[phone]"),
        # International numbers from anywhere, as people write them.
        ("+44 20 7946 0958", "[phone]"),
        ("in Paris: +33 6 12 34 56 78.", "in Paris: [phone]."),
        ("Berlin office +49 30 12345678, Mumbai +91 98765 43210", "Berlin office [phone], Mumbai [phone]"),
        ("text me at +1-202-555-0143!", "text me at [phone]!"),
        # National ones in the default region's formats.
        ("(650) 253-0000 or 650.253.0000", "[phone] or [phone]"),
        ("my number is 4155552671", "my number is [phone]"),
        ("toll free: 1 800 555 0199", "toll free: [phone]"),
        # Numbers that are not phones stay.
        ("17 × 23 = 391, in 2024, pi is 3.14159265", "17 × 23 = 391, in 2024, pi is 3.14159265"),
        ("the answer is 83810205", "the answer is 83810205"),
        ("dates like 2024-05-01 and 01.05.2024 stay", "dates like 2024-05-01 and 01.05.2024 stay"),
        ("between 12/25/2023 and 2023-12-31, at 10:30", "between 12/25/2023 and 2023-12-31, at 10:30"),
        ("In 1969, 600 million people watched", "In 1969, 600 million people watched"),
        ("It costs $1,299.99, or 1299 dollars", "It costs $1,299.99, or 1299 dollars"),
        ("The app speaks 37 languages", "The app speaks 37 languages"),
        (
            "a population of 67,390,000 (ISBN 978-3-16-148410-0)",
            "a population of 67,390,000 (ISBN 978-3-16-148410-0)",
        ),
    ],
)
def test_scrub_text(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


def test_opt_in_exports_only_people_who_said_yes(seeded: Seeded, tmp_path: Path) -> None:
    url = copy_database(seeded, tmp_path)
    engine = make_engine(url)
    set_consent(engine, ALICE, True)
    engine.dispose()
    manifest = export_feedback(url, tmp_path / "opt-in", consent="opt-in")
    only_alice = Ledger(
        replies=seeded.ledger.replies,
        ratings=seeded.ledger.ratings,
        corrections=seeded.ledger.corrections,
        excluded={r.asker.user_id for r in seeded.ledger.replies.values()} - {ALICE.user_id},
        forgotten=seeded.ledger.forgotten,
    )
    assert manifest.counts == expected_counts(only_alice)
    assert manifest.counts["kto"] > 0 and manifest.consent == "opt-in"
    text = (tmp_path / "opt-in" / "kto.jsonl").read_text()
    assert "Peru" not in text  # bob's and erin's questions


def test_an_unknown_consent_mode_is_refused(seeded: Seeded, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="opt-in"):
        export_feedback(seeded.url, tmp_path, consent="maybe")


def test_sft_rows_render_through_the_models_chat_template(
    exported: tuple[Path, Manifest], served_gguf: Path
) -> None:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    out, _ = exported
    model = Llama(model_path=str(served_gguf), vocab_only=True, verbose=False)
    template = model.metadata["tokenizer.chat_template"]
    formatter = Jinja2ChatFormatter(
        template,
        eos_token=model.detokenize([model.token_eos()]).decode(),
        bos_token=model.detokenize([model.token_bos()]).decode(),
        add_generation_prompt=False,
    )
    rows = read_jsonl(out / "sft.jsonl")
    assert rows
    for row in rows:
        messages = chat_messages(row)
        rendered = formatter(messages=messages).prompt  # type: ignore[arg-type]
        position = 0
        for message in messages:
            header = f"<|im_start|>{message['role']}\n"
            position = rendered.index(header + message["content"], position) + len(header)
        assert rendered.count("<|im_start|>assistant") == sum(m["role"] == "assistant" for m in messages)
        assert rendered.endswith(messages[-1]["content"] + "<|im_end|>\n")  # ends on the answer to learn
