"""Online studies as plain functions on a database session (no Flask).

A study is created from a plain dict (the same dict a YAML/JSON file or the set-up form gives),
validated field by field; every error names its field and nothing is stored unless all of it is
valid. A participant who consents gets `items_per_participant` test items chosen least-filled
first (so every item approaches `target_responses`), plus every comprehension check; the choice
and its order come from a seed derived from the study's stored seed and the participant's id,
and what was assigned is stored (`Participant.assigned`), so a run can always be reconstructed.

Counting "filled": an item's count is its responses from non-pilot, non-excluded participants,
plus the items still waiting in the assignments of non-pilot participants who started within
the last `reservation_minutes` and have not finished. Without that reservation, the dozens of
people a recruitment platform sends in the same minute would all see the same "least filled"
items, because nobody has answered yet. Pilot participants never count.

Comprehension checks are items with a known answer. Their threshold (minimum fraction passed)
is stored with the study; a participant below it is flagged `excluded` with the reason written
out, never removed: their answers stay in the database and in the export.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import secrets
import statistics
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import Session

from .. import answers
from ..answers import (
    AnswerRefused,
    Match,
    Placement,
    StudyAnswerIn,
    match_check,
    match_token,
    match_word,
)
from ..corpus import HiddenItemError, get_or_create_corpus, hidden_item, normalize_text
from ..game import prediction_for
from ..lm import Tokenizer, display_text
from ..models import (
    AnswerSource,
    Corpus,
    CorpusPurpose,
    Document,
    Guess,
    Item,
    LanguageModel,
    Participant,
    Player,
    Prediction,
    Study,
    StudyItem,
    utcnow,
)
from ..version import __version__
from ..words import is_word_start, target_word, word_token_ids

CHECKS_CORPUS = "study-checks"
MODES = ("token", "word")
ORDERS = ("random", "fixed")
MAX_ITEMS_PER_PARTICIPANT = 500
MAX_TARGET_RESPONSES = 10_000
MAX_CHECKS = 20
MAX_CHECK_CHARS = 400
MAX_TEXT = 20_000
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,62})[a-z0-9]$")
URL_PARAMS = ("PROLIFIC_PID", "STUDY_ID", "SESSION_ID", "participant")
MAX_PARAM_CHARS = 200

DEFAULT_CONSENT = (
    "This is a short study about how people predict text. You will read the beginnings of "
    "short passages and type what you think comes next. It takes about 10 minutes.\n\n"
    "We store your answers, how long you took, and the participant id from the link that "
    "brought you here; nothing else about you. Your answers are used for research only and "
    "may be published in anonymous form. Taking part is voluntary: you can stop at any time "
    "by closing this page."
)
DEFAULT_INSTRUCTIONS = {
    "token": (
        "You will see the beginning of a text. Type the piece of text you think comes next: "
        "usually a word, sometimes part of a word or a punctuation mark. Only the beginning of "
        "your answer is scored. Answer quickly, with your first idea; there is no time limit."
    ),
    "word": (
        "You will see the beginning of a text. Type the one word you think comes next, then "
        "press Enter. Answer quickly, with your first idea; there is no time limit."
    ),
}

FIELDS = (
    "name", "slug", "corpus", "mode", "items", "items_per_participant", "target_responses",
    "order", "seed", "consent_text", "instructions", "show_feedback", "ask_probability",
    "allow_skip", "checks", "check_threshold", "completion_code", "redirect_url", "pilot",
)


class EntryRefused(Exception):
    """A participant cannot start (or restart) a run; `status` is the HTTP status to use."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class StudyError(ValueError):
    """Invalid study settings: `errors` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {message}" for field, message in self.errors.items()))


# ---------------------------------------------------------------------------------- validation


@dataclass
class _Check:
    item: Item | None  # an existing corpus item, or None for a text check not stored yet
    expected: str
    text: str | None = None  # "prefix | answer" for a text check
    target_char: int = 0


class _Fields:
    """Reads a spec dict field by field, collecting one error per field."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.errors: dict[str, str] = {}

    def fail(self, field: str, message: str) -> None:
        self.errors.setdefault(field, message)

    def text(self, field: str, *, default: str = "", required: bool = False, limit: int = MAX_TEXT) -> str:
        value = self.spec.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(field, "is required")
            return default
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.fail(field, "must be text")
            return default
        value = str(value).strip()
        if len(value) > limit:
            self.fail(field, f"is longer than {limit} characters")
            return default
        return value

    def integer(self, field: str, *, default: int | None, low: int, high: int) -> int | None:
        value = self.spec.get(field)
        if value is None or value == "":
            return default
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, "must be a whole number")
            return default
        if not low <= value <= high:
            self.fail(field, f"must be between {low} and {high} (got {value})")
            return default
        return value

    def boolean(self, field: str, *, default: bool) -> bool:
        value = self.spec.get(field)
        if value is None or value == "":
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
            return value.strip().lower() in {"true", "yes", "on", "1"}
        self.fail(field, "must be true or false")
        return default

    def choice(self, field: str, choices: tuple[str, ...], default: str) -> str:
        value = self.spec.get(field)
        if value is None or value == "":
            return default
        if value not in choices:
            self.fail(field, f"must be one of {', '.join(choices)} (got {value!r})")
            return default
        return value


def slugify(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:40].strip("-")
    return text or "study"


def _is_word_start(document: Document, item: Item) -> bool:
    """Word mode asks only for positions whose token begins a word with a letter or digit
    (webapp.words.is_word_start, minus words that open with punctuation such as a quote)."""
    return is_word_start(document, item) and item.token_text.lstrip()[:1].isalnum()


def eligible_items(session: Session, corpus: Corpus, model: LanguageModel, mode: str) -> list[Item]:
    """Playable positions of the corpus that the model has scored (word starts in word mode)."""
    scored = select(Prediction.item_id).where(Prediction.model_id == model.id)
    items = list(
        session.scalars(
            select(Item)
            .join(Document, Item.document_id == Document.id)
            .where(Document.corpus_id == corpus.id, Item.playable, Item.id.in_(scored))
            .order_by(Item.document_id, Item.position)
        )
    )
    if mode == "word":
        items = [it for it in items if _is_word_start(it.document, it)]
    return items


def _find_item(session: Session, corpus: Corpus | None, ref: Any, where: str, f: _Fields) -> Item | None:
    """An item from `123` (item id) or `{document: id-or-title, position: n}`."""
    if isinstance(ref, bool):
        f.fail(where, "must be an item id or {document, position}")
        return None
    if isinstance(ref, int):
        item = session.get(Item, ref)
        if item is None:
            f.fail(where, f"there is no item {ref}")
        return item
    if not isinstance(ref, dict) or set(ref) - {"document", "position", "expected_answer"}:
        f.fail(where, "must be an item id or {document: <id or title>, position: <n>}")
        return None
    doc_ref, position = ref.get("document"), ref.get("position")
    if doc_ref is None or isinstance(position, bool) or not isinstance(position, int):
        f.fail(where, "needs document (id or title) and position (a whole number)")
        return None
    if corpus is None:
        return None
    query = select(Document).where(Document.corpus_id == corpus.id)
    if isinstance(doc_ref, int) and not isinstance(doc_ref, bool):
        docs = list(session.scalars(query.where(Document.id == doc_ref)))
    else:
        docs = list(session.scalars(query.where(Document.title == str(doc_ref))))
    if not docs:
        f.fail(where, f"corpus '{corpus.name}' has no document {doc_ref!r}")
        return None
    if len(docs) > 1:
        f.fail(where, f"{len(docs)} documents are titled {doc_ref!r}; use the document id")
        return None
    item = session.scalar(select(Item).where(Item.document_id == docs[0].id, Item.position == position))
    if item is None:
        f.fail(where, f"document {doc_ref!r} has no position {position}")
    return item


def _resolve_items(session: Session, f: _Fields, corpus: Corpus | None, model: LanguageModel | None,
                   mode: str, seed: int) -> list[Item]:
    spec = f.spec.get("items", "all")
    if corpus is None or model is None:
        return []
    eligible = eligible_items(session, corpus, model, mode)
    if spec is None or spec == "all":
        if not eligible:
            f.fail("items", f"corpus '{corpus.name}' has no {'word-start ' if mode == 'word' else ''}"
                            "positions scored by the model (run `humanlm score`)")
        return eligible
    if isinstance(spec, dict):
        if set(spec) != {"sample"} or isinstance(spec["sample"], bool) or not isinstance(spec["sample"], int):
            f.fail("items", "must be \"all\", {sample: N} or a list of items")
            return []
        n = spec["sample"]
        if not 1 <= n <= len(eligible):
            f.fail("items", f"sample must be between 1 and {len(eligible)}, the number of eligible "
                            f"positions in corpus '{corpus.name}' (got {n})")
            return []
        chosen = random.Random(f"items:{seed}").sample(eligible, n)
        return sorted(chosen, key=lambda it: (it.document_id, it.position))
    if not isinstance(spec, list) or not spec:
        f.fail("items", "must be \"all\", {sample: N} or a non-empty list of items")
        return []
    ok = {it.id for it in eligible}
    items, seen = [], set()
    for index, ref in enumerate(spec):
        where = f"items[{index}]"
        item = _find_item(session, corpus, ref, where, f)
        if item is None:
            continue
        if item.document.corpus_id != corpus.id:
            f.fail(where, f"item {item.id} is not in corpus '{corpus.name}'")
        elif item.id not in ok:
            why = "not a word start" if mode == "word" and item.playable else "not playable or not scored"
            f.fail(where, f"item {item.id} (document {item.document_id}, position {item.position}) is {why}")
        elif item.id in seen:
            f.fail(where, f"item {item.id} is listed twice")
        else:
            seen.add(item.id)
            items.append(item)
    return items


def _parse_check_text(text: str) -> tuple[str, int, str] | str:
    """'prefix | answer' -> (stored text, target char, expected answer), or an error message."""
    line = normalize_text(text)
    if "\n" in line:
        return "must be one line"
    if len(line) > MAX_CHECK_CHARS:
        return f"is longer than {MAX_CHECK_CHARS} characters"
    if line.count("|") != 1:
        return "must look like 'text before | expected answer' (one |)"
    left, right = line.split("|")
    if not left.strip() or not right.strip():
        return "put text on both sides of the |"
    # As for room prompts: whitespace around the bar becomes one space owned by the answer.
    if left[-1:].isspace() or right[:1].isspace():
        left, right = left.rstrip(), " " + right.lstrip()
    return left + right, len(left), right.strip()


def _resolve_checks(session: Session, f: _Fields, corpus: Corpus | None) -> list[_Check]:
    spec = f.spec.get("checks")
    if spec is None or spec == "" or spec == []:
        return []
    if isinstance(spec, str):
        spec = [line for line in spec.splitlines() if line.strip()]
    if not isinstance(spec, list):
        f.fail("checks", "must be a list of 'text | answer' lines or {document, position, expected_answer}")
        return []
    if len(spec) > MAX_CHECKS:
        f.fail("checks", f"use at most {MAX_CHECKS} comprehension checks (got {len(spec)})")
        return []
    checks: list[_Check] = []
    for index, entry in enumerate(spec):
        where = f"checks[{index}]"
        if isinstance(entry, dict) and set(entry) == {"text"}:
            entry = entry["text"]
        if isinstance(entry, str):
            parsed = _parse_check_text(entry)
            if isinstance(parsed, str):
                f.fail(where, parsed)
                continue
            text, target_char, expected = parsed
            checks.append(_Check(None, expected, text, target_char))
            continue
        item = _find_item(session, corpus, entry, where, f)
        if item is None:
            continue
        expected = entry.get("expected_answer") if isinstance(entry, dict) else None
        if expected is not None and (not isinstance(expected, str) or not expected.strip()):
            f.fail(where, "expected_answer must be non-empty text")
            continue
        if not item.playable:
            f.fail(where, f"item {item.id} is not playable")
            continue
        checks.append(_Check(item, (expected or item.token_text).strip()))
    return checks


def _check_url(f: _Fields) -> str:
    url = f.text("redirect_url", limit=500)
    if url:
        parsed = urlparse(url.replace("{code}", "CODE").replace("{participant}", "ID"))
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            f.fail("redirect_url", "must be an http:// or https:// address")
            return ""
    return url


def validate_study(session: Session, spec: dict[str, Any], model: LanguageModel | None) -> dict[str, Any]:
    """Check every field of a study spec; returns the normalised settings or raises StudyError.

    Stores nothing. `model` is the scoring run whose predictions the study uses (the configured
    model's newest run); without one, no corpus can be used yet.
    """
    if not isinstance(spec, dict):
        raise StudyError({"study": "must be a mapping of settings (YAML/JSON object)"})
    f = _Fields(spec)
    unknown = sorted(set(spec) - set(FIELDS))
    for key in unknown:
        f.fail(str(key), f"unknown setting (known: {', '.join(FIELDS)})")

    name = f.text("name", required=True, limit=200)
    slug = f.text("slug", limit=64).lower()
    if slug and not SLUG.match(slug):
        f.fail("slug", "use 3-64 lowercase letters, digits and dashes (not at either end)")
    elif slug and session.scalar(select(Study.id).where(Study.slug == slug)) is not None:
        f.fail("slug", f"a study with link /s/{slug} already exists")
    mode = f.choice("mode", MODES, "token")
    order = f.choice("order", ORDERS, "random")
    seed = f.integer("seed", default=None, low=0, high=2**31 - 1)
    if seed is None:
        seed = secrets.randbelow(2**31)

    corpus = None
    corpus_name = f.text("corpus", required=True, limit=100)
    if corpus_name:
        corpus = session.scalar(select(Corpus).where(Corpus.name == corpus_name, Corpus.purpose == CorpusPurpose.GAME))
        if corpus is None:
            f.fail("corpus", f"there is no corpus '{corpus_name}' (see `humanlm corpus list`)")
        elif model is None:
            f.fail("corpus", "no passages are scored by the configured model yet (run `humanlm score`)")
    items = _resolve_items(session, f, corpus, model, mode, seed)

    per_participant = f.integer("items_per_participant", default=20, low=1, high=MAX_ITEMS_PER_PARTICIPANT)
    if items and per_participant is not None and per_participant > len(items):
        f.fail("items_per_participant",
               f"is {per_participant} but the study has only {len(items)} test items")
    target = f.integer("target_responses", default=10, low=1, high=MAX_TARGET_RESPONSES)

    consent = f.text("consent_text", required=True)
    instructions = f.text("instructions", default=DEFAULT_INSTRUCTIONS[mode])
    show_feedback = f.boolean("show_feedback", default=False)
    ask_probability = f.boolean("ask_probability", default=False)
    allow_skip = f.boolean("allow_skip", default=True)
    pilot = f.boolean("pilot", default=True)

    checks = _resolve_checks(session, f, corpus)
    test_ids = {it.id for it in items}
    for index, check in enumerate(checks):
        if check.item is not None and check.item.id in test_ids:
            f.fail(f"checks[{index}]", f"item {check.item.id} is also a test item")
    threshold = spec.get("check_threshold")
    if threshold in (None, ""):
        threshold = None
    else:
        try:
            threshold = float(threshold)
            if isinstance(spec.get("check_threshold"), bool) or not 0 <= threshold <= 1:
                raise ValueError
        except (TypeError, ValueError):
            f.fail("check_threshold", "must be a fraction between 0 and 1 (e.g. 0.75), or empty")
            threshold = None
        if threshold is not None and not checks and "checks" not in f.errors:
            f.fail("check_threshold", "is set but the study has no comprehension checks")

    code = f.text("completion_code", limit=100)
    redirect_url = _check_url(f)

    if f.errors:
        raise StudyError(f.errors)
    return {
        "name": name, "slug": slug, "corpus": corpus, "mode": mode, "items": items,
        "items_per_participant": per_participant, "target_responses": target, "order": order,
        "seed": seed, "consent_text": consent, "instructions": instructions,
        "show_feedback": show_feedback, "ask_probability": ask_probability, "allow_skip": allow_skip,
        "checks": checks, "check_threshold": threshold, "completion_code": code,
        "redirect_url": redirect_url, "pilot": pilot,
    }


def _unique_slug(session: Session, name: str) -> str:
    base = slugify(name)
    while True:
        slug = f"{base}-{secrets.token_hex(2)}"
        if session.scalar(select(Study.id).where(Study.slug == slug)) is None:
            return slug


def _store_text_check(session: Session, check: _Check, tokenizer: Tokenizer) -> Item:
    """A text check becomes a document of the hidden corpus CHECKS_CORPUS (reused if stored)."""
    corpus = get_or_create_corpus(
        session, CHECKS_CORPUS, min_prefix_tokens=1,
        description="Comprehension checks of online studies (not scored, never played).",
    )
    corpus.purpose = "study_checks"
    try:
        return hidden_item(
            session, corpus, check.text, check.target_char, tokenizer,
            title=check.text[:60], register="check", source="study check",
        )
    except HiddenItemError:
        raise StudyError({"checks": f"cannot find the token to ask for in {check.text!r}"}) from None


def create_study(
    session: Session,
    spec: dict[str, Any],
    *,
    model: LanguageModel | None,
    tokenizer: Tokenizer,
    created_by: int | None = None,
) -> Study:
    """Validate `spec` and add the study with its items (flushed, not committed).

    On StudyError the caller rolls back; validation runs before anything is added, so a refused
    study leaves nothing behind even without the rollback.
    """
    v = validate_study(session, spec, model)
    study = Study(
        name=v["name"], slug=v["slug"] or _unique_slug(session, v["name"]), mode=v["mode"],
        corpus_id=v["corpus"].id, model_id=model.id,
        items_per_participant=v["items_per_participant"], order=v["order"], seed=v["seed"],
        target_responses=v["target_responses"], consent_text=v["consent_text"],
        instructions=v["instructions"], show_feedback=v["show_feedback"],
        ask_probability=v["ask_probability"], check_threshold=v["check_threshold"],
        completion_code=v["completion_code"], redirect_url=v["redirect_url"], pilot=v["pilot"],
        status="open", created_by=created_by,
    )
    check_items = [
        (check.item or _store_text_check(session, check, tokenizer), check.expected)
        for check in v["checks"]
    ]
    study_items = [StudyItem(item_id=it.id, kind="test", order=i) for i, it in enumerate(v["items"])]
    seen = {it.id for it in v["items"]}
    for i, (item, expected) in enumerate(check_items):
        if item.id in seen:
            raise StudyError({f"checks[{i}]": "the same check is listed twice"})
        seen.add(item.id)
        study_items.append(
            StudyItem(item_id=item.id, kind="check", expected_answer=expected[:200], order=len(study_items))
        )
    study.items = study_items
    study.settings = {
        "name": study.name, "slug": study.slug, "mode": study.mode, "corpus": v["corpus"].name,
        "model": {"id": model.id, "key": model.key, "spec": model.spec, "top_k": model.top_k},
        "items": spec.get("items", "all") if not isinstance(spec.get("items"), list) else
        [it.id for it in v["items"]],
        "n_test_items": len(v["items"]),
        "items_per_participant": study.items_per_participant,
        "target_responses": study.target_responses, "order": study.order, "seed": study.seed,
        "show_feedback": study.show_feedback, "ask_probability": study.ask_probability,
        "allow_skip": v["allow_skip"],
        "checks": [{"item_id": item.id, "expected_answer": expected} for item, expected in check_items],
        "check_threshold": study.check_threshold,
        "check_rule": "passed when the answer equals the expected answer ignoring case, "
                      "surrounding spaces and punctuation; a participant is excluded when "
                      "passed / total < check_threshold",
        "completion_code": study.completion_code, "redirect_url": study.redirect_url,
        "pilot": study.pilot, "assignment": "least-filled-first; ties and order from "
        "random.Random(f'{seed}:{participant.id}'); fixed order keeps the study's item order "
        "with checks spread evenly",
        "humanlm_version": __version__,
    }
    session.add(study)
    session.flush()
    return study


def set_pilot(study: Study, pilot: bool) -> None:
    """Pilot mode applies to participants who start from now on; earlier ones keep their flag."""
    study.pilot = pilot
    study.settings = {**(study.settings or {}), "pilot": pilot}


# ---------------------------------------------------------------------------------- assignment


def allow_skip(study: Study) -> bool:
    return bool((study.settings or {}).get("allow_skip", True))


def _answered(session: Session, study: Study, player_ids: list[str]) -> dict[str, set[int]]:
    """Item ids each player has answered in this study."""
    out: dict[str, set[int]] = {pid: set() for pid in player_ids}
    if not player_ids:
        return out
    rows = session.execute(
        select(Guess.player_id, Guess.item_id).where(
            Guess.study_id == study.id, Guess.player_id.in_(player_ids)
        )
    )
    for player_id, item_id in rows:
        out[player_id].add(item_id)
    return out


def response_counts(session: Session, study: Study) -> dict[int, int]:
    """Responses per StudyItem id from non-pilot, non-excluded participants (test items only)."""
    by_item = {si.item_id: si.id for si in study.items if si.kind == "test"}
    rows = session.execute(
        select(Guess.item_id, func.count(Guess.id))
        .join(Participant, (Participant.player_id == Guess.player_id) & (Participant.study_id == study.id))
        .where(
            Guess.study_id == study.id, Guess.source == AnswerSource.STUDY,
            Participant.pilot.is_(False), Participant.excluded.is_(False),
        )
        .group_by(Guess.item_id)
    )
    counts = {si_id: 0 for si_id in by_item.values()}
    for item_id, n in rows:
        if item_id in by_item:
            counts[by_item[item_id]] = n
    return counts


def fill_counts(session: Session, study: Study, *, now: datetime, reservation_minutes: int) -> dict[int, int]:
    """Responses per test StudyItem plus the reservations of recent unfinished participants."""
    counts = response_counts(session, study)
    since = now - timedelta(minutes=reservation_minutes)
    waiting = [
        p for p in session.scalars(
            select(Participant).where(
                Participant.study_id == study.id, Participant.finished_at.is_(None),
                Participant.pilot.is_(False), Participant.excluded.is_(False),
            )
        )
        if p.started_at >= since
    ]
    answered = _answered(session, study, [p.player_id for p in waiting])
    item_of = {si.id: si.item_id for si in study.items}
    for p in waiting:
        for si_id in p.assigned or []:
            if si_id in counts and item_of[si_id] not in answered[p.player_id]:
                counts[si_id] += 1
    return counts


def participant_rng(study: Study, participant: Participant) -> random.Random:
    """The participant's own random stream, reproducible from the study's stored seed."""
    return random.Random(f"{study.seed}:{participant.id}")


def assign_items(session: Session, study: Study, participant: Participant, *, now: datetime,
                 reservation_minutes: int) -> list[int]:
    """Choose and order the participant's StudyItems; stores and returns their ids."""
    rng = participant_rng(study, participant)
    tests = [si for si in study.items if si.kind == "test"]
    checks = [si for si in study.items if si.kind == "check"]
    counts = fill_counts(session, study, now=now, reservation_minutes=reservation_minutes)
    tiebreak = {si.id: rng.random() for si in tests}
    ranked = sorted(tests, key=lambda si: (counts.get(si.id, 0), tiebreak[si.id]))
    chosen = ranked[: study.items_per_participant]
    if study.order == "random":
        sequence = chosen + checks
        rng.shuffle(sequence)
    else:
        sequence = sorted(chosen, key=lambda si: si.order)
        for j, check in enumerate(checks):  # spread evenly: after about every n/(m+1) items
            at = round((j + 1) * len(chosen) / (len(checks) + 1)) + j
            sequence.insert(at, check)
    participant.assigned = [si.id for si in sequence]
    return participant.assigned


# ---------------------------------------------------------------------------------- participants


def external_id_of(params: dict[str, str]) -> str | None:
    """The recruitment platform's participant id: PROLIFIC_PID, else the generic `participant`."""
    for key in ("PROLIFIC_PID", "participant"):
        value = (params.get(key) or "").strip()
        if value:
            return value[:MAX_PARAM_CHARS]
    return None


def captured_params(args: dict[str, str]) -> dict[str, str]:
    """The URL parameters a study keeps (nothing else from the URL is stored)."""
    return {k: str(args[k]).strip()[:MAX_PARAM_CHARS] for k in URL_PARAMS if str(args.get(k) or "").strip()}


def find_participant(session: Session, study: Study, external_id: str) -> Participant | None:
    return session.scalar(
        select(Participant).where(Participant.study_id == study.id, Participant.external_id == external_id)
    )


def start_participant(
    session: Session, study: Study, params: dict[str, str], *, now: datetime | None = None,
    reservation_minutes: int = 60,
) -> Participant:
    """A consenting participant: resumes an unfinished run of the same id, refuses a finished one.

    Raises EntryRefused(409) for a participant id that already finished, EntryRefused(403) when the
    study is closed. Flushes; the caller commits.
    """
    now = now or utcnow()
    params = captured_params(params)
    external_id = external_id_of(params)
    if external_id is not None:
        existing = find_participant(session, study, external_id)
        if existing is not None:
            if existing.finished_at is not None:
                raise EntryRefused("this participant id has already completed the study", 409)
            return existing
    if study.status != "open":
        raise EntryRefused("this study is not taking participants at the moment", 403)
    player = Player(id=secrets.token_hex(8))
    session.add(player)
    session.flush()  # no relationship() links the two: the player row must exist first
    participant = Participant(
        study_id=study.id, player_id=player.id, external_id=external_id, url_params=params,
        pilot=study.pilot, assigned=[], consented_at=now, started_at=now,
    )
    session.add(participant)
    session.flush()
    assign_items(session, study, participant, now=now, reservation_minutes=reservation_minutes)
    session.flush()
    return participant


def progress(session: Session, study: Study, participant: Participant) -> tuple[list[StudyItem], int, StudyItem | None]:
    """(assigned study items in order, how many are answered, the next one or None)."""
    by_id = {si.id: si for si in study.items}
    sequence = [by_id[i] for i in participant.assigned or [] if i in by_id]
    answered = _answered(session, study, [participant.player_id])[participant.player_id]
    done = [si for si in sequence if si.item_id in answered]
    current = next((si for si in sequence if si.item_id not in answered), None)
    return sequence, len(done), current


def question_payload(study: Study, study_item: StudyItem, index: int, total: int) -> dict:
    """What a participant sees before answering: the text before the item, nothing after it."""
    item = study_item.item
    document = item.document
    context = document.text[: item.char_start]
    return {
        "study_item_id": study_item.id,
        "index": index,
        "total": total,
        "context": context,
        "prefix_ends_with_space": context[-1:].isspace(),
        "mode": study.mode,
        "ask_probability": study.ask_probability,
        "allow_skip": allow_skip(study),
    }


def target_text(study: Study, study_item: StudyItem) -> str:
    """The answer a participant should have given (shown only as feedback, after storing)."""
    item = study_item.item
    if study_item.kind == "check" and study_item.expected_answer:
        return study_item.expected_answer
    if study.mode == "word":
        return target_word(item.document, item)
    return item.token_text


def _feedback(study: Study, study_item: StudyItem, guess: Guess, prediction: Prediction | None,
              tokenizer: Tokenizer) -> dict | None:
    if not study.show_feedback:
        return None
    top = None
    if prediction is not None and study_item.kind == "test":
        shown = [entry for entry in prediction.top_k if not entry[3]][:1]
        if shown:
            top = {"text": shown[0][2], "prob": math.exp(shown[0][1])}
    return {
        "correct": guess.is_correct,
        "skipped": guess.skipped,
        "answer": guess.raw_text,
        "target": target_text(study, study_item),
        "near_miss": guess.match_rule == "first_token_if_space_toggled",
        "model_top": top if study.mode == "token" else None,
    }


def finish_participant(study: Study, participant: Participant, now: datetime) -> None:
    """Mark a run finished and apply the recorded check threshold (flag, never drop)."""
    participant.finished_at = now
    threshold = study.check_threshold
    total, passed = participant.checks_total, participant.checks_passed
    if threshold is not None and total and passed < threshold * total - 1e-9:
        participant.excluded = True
        participant.exclusion_reason = (
            f"passed {passed} of {total} comprehension checks; the study's threshold is "
            f"{threshold:g} ({math.ceil(threshold * total - 1e-9)} of {total})"
        )


@dataclass
class AnswerResult:
    guess: Guess
    feedback: dict | None
    finished: bool
    replayed: bool


class StudyPolicy:
    """Answers in a study: the participant's current item, matched by the study's mode (or as a
    comprehension check); the check count and the end of the run commit with the answer."""

    already_answered = "this item is already answered; reload to continue"

    def __init__(self, study: Study, participant: Participant) -> None:
        self.study = study
        self.participant = participant

    def locate(self, session: Session, answer: StudyAnswerIn) -> Placement:
        study, participant = self.study, self.participant
        if participant.finished_at is not None:
            raise AnswerRefused("you have already completed this study", 409)
        sequence, done, current = progress(session, study, participant)
        if current is None:
            raise AnswerRefused("you have already completed this study", 409)
        if current.id != answer.study_item_id:
            if any(si.id == answer.study_item_id for si in sequence):
                raise AnswerRefused(self.already_answered, 409)
            raise AnswerRefused("this item is not part of your study", 409)
        if answer.skipped and not allow_skip(study):
            raise AnswerRefused("this study asks for an answer to every item", 400)
        if study.ask_probability and not answer.skipped and answer.reported_probability is None:
            raise AnswerRefused("say how likely you think your answer is (0-100%)", 400)
        item = current.item
        prediction = prediction_for(session, item.id, study.model_id) if study.model_id else None
        row = {
            "model_id": study.model_id, "source": AnswerSource.STUDY, "study_id": study.id,
            "mode": study.mode,
            "reported_probability": None if answer.skipped else answer.reported_probability,
        }
        # answers come in order: the current item is the first open one
        finishes = done + 1 == len(sequence)
        return Placement(item.id, item.token_id, prediction, row, (current, finishes))

    def match(self, answer: StudyAnswerIn, placement: Placement, tokenizer: Tokenizer) -> Match:
        study_item, _ = placement.context
        item = study_item.item
        if self.study.mode == "word" and not answer.skipped:
            word = answer.text.strip()
            token_ids = word_token_ids(tokenizer, item.document.text[: item.char_start], word)
            match = match_word(word, target_word(item.document, item), token_ids)
        else:
            match = match_token(answer.text, item.token_id, tokenizer, answer.skipped)
        if study_item.kind == "check":
            match = match_check(match, answer.text, study_item.expected_answer or "", answer.skipped)
        return match

    def owns(self, guess: Guess, answer: StudyAnswerIn) -> bool:
        if guess.study_id != self.study.id:
            return False
        return any(si.id == answer.study_item_id and si.item_id == guess.item_id
                   for si in self.study.items)

    def stored(self, session: Session, placement: Placement, guess: Guess) -> None:
        study_item, finishes = placement.context
        if study_item.kind == "check":
            self.participant.checks_total += 1
            self.participant.checks_passed += int(guess.is_correct)
        if finishes:
            finish_participant(self.study, self.participant, guess.server_received_at)


def submit_answer(
    session: Session,
    study: Study,
    participant: Participant,
    tokenizer: Tokenizer,
    answer: StudyAnswerIn,
    *,
    received_at: datetime,
    write_lock=contextlib.nullcontext,
) -> AnswerResult:
    """Store (and commit) one answer for the participant's current item through the one answer
    path, or replay it; AnswerRefused for a finished run or an item that is not the current one."""
    result = answers.submit(
        session, StudyPolicy(study, participant), answer, player_id=participant.player_id,
        tokenizer=tokenizer, received_at=received_at, write_lock=write_lock,
    )
    guess = result.guess
    study_item = next(si for si in study.items if si.item_id == guess.item_id)
    prediction = prediction_for(session, guess.item_id, study.model_id) if study.model_id else None
    return AnswerResult(
        guess, _feedback(study, study_item, guess, prediction, tokenizer),
        participant.finished_at is not None, result.replayed,
    )


def redirect_target(study: Study, participant: Participant) -> str:
    url = study.redirect_url or ""
    return url.replace("{code}", study.completion_code).replace("{participant}", participant.external_id or "")


# ---------------------------------------------------------------------------------- dashboard


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def study_summary(session: Session, study: Study) -> dict:
    """Headline numbers for the dashboard: participants, fill, times, human vs model accuracy.

    Counts and accuracies use non-pilot participants; accuracy and fill also leave out excluded
    ones (pilot and excluded counts are shown beside them). Skips count as wrong. The model is
    "correct" at an item when its top-1 token is the true token (word mode: the word's first
    token), counted over the same responses as the people, so both are on the same positions.
    """
    participants = list(session.scalars(select(Participant).where(Participant.study_id == study.id)))
    real = [p for p in participants if not p.pilot]
    pilots = [p for p in participants if p.pilot]
    counts = response_counts(session, study)
    target = study.target_responses
    n_items = len(counts)
    minutes = [
        (p.finished_at - (p.consented_at or p.started_at)).total_seconds() / 60
        for p in real if p.finished_at is not None and not p.excluded
    ]
    kept = select(Participant.player_id).where(
        Participant.study_id == study.id, Participant.pilot.is_(False), Participant.excluded.is_(False)
    )
    test_items = select(StudyItem.item_id).where(StudyItem.study_id == study.id, StudyItem.kind == "test")
    row = session.execute(
        select(
            func.count(Guess.id),
            func.coalesce(func.sum(cast(Guess.is_correct, Integer)), 0),
            func.coalesce(func.sum(cast(Prediction.top1_id == Item.token_id, Integer)), 0),
            func.coalesce(func.sum(cast(Guess.skipped, Integer)), 0),
        )
        .select_from(Guess)
        .join(Item, Guess.item_id == Item.id)
        .join(Prediction, (Prediction.item_id == Guess.item_id) & (Prediction.model_id == Guess.model_id), isouter=True)
        .where(Guess.study_id == study.id, Guess.player_id.in_(kept), Guess.item_id.in_(test_items))
    ).one()
    n, human, model_ok, skips = row
    reaction = [
        ms for ms in session.scalars(
            select(Guess.client_reaction_ms).where(
                Guess.study_id == study.id, Guess.player_id.in_(kept), Guess.item_id.in_(test_items),
                Guess.client_reaction_ms.is_not(None),
            )
        )
    ]
    checks_total = sum(p.checks_total for p in real)
    fill = sorted(counts.values())
    return {
        "participants": {
            "started": len(real),
            "finished": sum(p.finished_at is not None for p in real),
            "in_progress": sum(p.finished_at is None for p in real),
            "excluded": sum(p.excluded for p in real),
            "pilot": len(pilots),
        },
        "responses": {
            "total": sum(fill),
            "target_per_item": target,
            "items": n_items,
            "items_at_target": sum(c >= target for c in fill),
            "min": fill[0] if fill else 0,
            "median": _median(fill) or 0,
            "max": fill[-1] if fill else 0,
            "needed": sum(max(0, target - c) for c in fill),
        },
        "median_minutes": _median(minutes),
        "median_reaction_ms": _median(reaction),
        "accuracy": {
            "n": n,
            "human": human / n if n else None,
            "model": model_ok / n if n else None,
            "skipped": skips,
        },
        "checks": {
            "total": checks_total,
            "passed": sum(p.checks_passed for p in real),
            "threshold": study.check_threshold,
        },
        "pilot_mode": study.pilot,
        "status": study.status,
    }


def item_rows(session: Session, study: Study, limit: int | None = None) -> list[dict]:
    """Per test item: its text position and responses against the target, least filled first."""
    counts = response_counts(session, study)
    rows = []
    for si in study.items:
        if si.kind != "test":
            continue
        item = si.item
        rows.append({
            "study_item_id": si.id, "item_id": item.id, "document": item.document.title,
            "position": item.position,
            "context_tail": _tail(item.document.text[: item.char_start]),
            "target": target_text(study, si), "responses": counts.get(si.id, 0),
        })
    rows.sort(key=lambda r: (r["responses"], r["item_id"]))
    return rows[:limit] if limit else rows


def _tail(text: str, chars: int = 48) -> str:
    """The end of a prefix, cut at a word boundary: what a reader needs to place the item."""
    if len(text) <= chars:
        return text
    tail = text[-chars:]
    cut = tail.find(" ")
    return tail[cut + 1 :] if 0 <= cut < chars // 2 else tail


def fill_histogram(session: Session, study: Study) -> list[tuple[int, int]]:
    """(responses, number of items with that many) for every count from 0 to the target (or the
    largest count, if higher), so empty columns show how far the study is from its target."""
    counts = Counter(response_counts(session, study).values())
    if not counts:
        return []
    top = max(max(counts), study.target_responses)
    return [(n, counts.get(n, 0)) for n in range(top + 1)]


__all__ = [
    "DEFAULT_CONSENT", "DEFAULT_INSTRUCTIONS", "FIELDS", "AnswerResult", "EntryRefused", "StudyError",
    "StudyPolicy",
    "assign_items", "captured_params", "create_study", "display_text", "eligible_items",
    "external_id_of", "fill_counts", "find_participant", "finish_participant", "progress",
    "question_payload", "redirect_target", "response_counts", "set_pilot", "start_participant",
    "study_summary", "submit_answer", "validate_study",
]
