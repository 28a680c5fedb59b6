"""Setting a study up: its spec validated field by field, then stored with its items (no Flask).

A study is created from a plain dict (the same dict a YAML/JSON file or the set-up form gives),
validated field by field; every error names its field and nothing is stored unless all of it is
valid. Why one validator for the file, the form and the command line: a setting means the same
wherever it is typed, and a refused study never leaves half of itself behind.

What was decided at creation (the items, the seed, the check rule, the version) is also written
out in `Study.settings`, so the export can say how a study was run. The rest of a study's life is
in assignment.py (who sees which items), participants.py (a run and its answers) and dashboard.py
(what the researcher sees).
"""

from __future__ import annotations

import random
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..corpus import HiddenItemError, get_or_create_corpus, hidden_item, normalize_text
from ..judgements import JUDGEMENT_MODES, usable_alternatives
from ..lm import Tokenizer
from ..models import (
    Corpus,
    CorpusPurpose,
    Document,
    Item,
    LanguageModel,
    Prediction,
    Study,
    StudyItem,
)
from ..version import __version__
from ..words import is_word_start

CHECKS_CORPUS = "study-checks"
MODES = ("token", "word", "pairwise", "distribution")
ORDERS = ("random", "fixed")
MAX_ITEMS_PER_PARTICIPANT = 500
MAX_TARGET_RESPONSES = 10_000
MAX_CHECKS = 20
MAX_CHECK_CHARS = 400
MAX_TEXT = 20_000
SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{1,62})[a-z0-9]$")

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
    "pairwise": (
        "You will see the beginning of a text and two short pieces of text that could come next. "
        "One of them really came next in the original; the other was made up. Say how likely "
        "you think the LEFT one is the original, from 1% to 99%. 50% means you cannot tell."
    ),
    "distribution": (
        "You will see the beginning of a text. Type up to five pieces of text that could come "
        "next and spread 100 points over them and \"something else\", as you would bet: more "
        "points on what you think is more likely. Only the beginning of each one is scored."
    ),
}

FIELDS = (
    "name", "slug", "corpus", "mode", "items", "items_per_participant", "target_responses",
    "order", "seed", "consent_text", "instructions", "show_feedback", "ask_probability",
    "allow_skip", "checks", "check_threshold", "completion_code", "redirect_url", "pilot",
)



class StudyError(ValueError):
    """Invalid study settings: `errors` maps each bad field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{field}: {message}" for field, message in self.errors.items()))



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


_LINE_BREAKS = str.maketrans({"\u2029": "\n\n", "\u2028": "\n", "\x85": "\n", "\x0b": "\n", "\x0c": "\n"})


def normalize_paragraphs(text: str) -> str:
    """Consent and instructions as stored: whatever line endings the browser or file sent
    (a form sends "\r\n"; old Macs "\r"; Unicode's line and paragraph separators), lines end in
    "\n" without trailing spaces, and paragraphs are separated by exactly one blank line (a line
    of spaces is blank too). Why: "\r\n\r\n" is not "\n\n", so paragraphs merged on the page."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LINE_BREAKS)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def paragraphs(text: str | None) -> list[str]:
    """The paragraphs of a stored text (also of one stored before normalize_paragraphs)."""
    return [part for part in normalize_paragraphs(text or "").split("\n\n") if part.strip()]


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
    if mode == "pairwise":  # only positions with a drawn alternative other than the truth
        drawn = dict(session.execute(
            select(Prediction.item_id, Prediction.alternatives)
            .join(Item, Item.id == Prediction.item_id)
            .join(Document, Item.document_id == Document.id)
            .where(Document.corpus_id == corpus.id, Prediction.model_id == model.id,
                   Prediction.alternatives.is_not(None))
        ).all())
        items = [it for it in items if usable_alternatives(drawn.get(it.id), it.token_id)]
    return items


_ELIGIBLE = {"word": "word-start ", "pairwise": "pairwise-ready ("
             "import the corpus with --pairwise-alternatives N, then score it) "}


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
            f.fail("items", f"corpus '{corpus.name}' has no {_ELIGIBLE.get(mode, '')}"
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
            why = ("not a word start" if mode == "word" and item.playable else
                   "without a drawn alternative other than the true token" if mode == "pairwise"
                   and item.playable else "not playable or not scored")
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

    consent = normalize_paragraphs(f.text("consent_text", required=True))
    instructions = normalize_paragraphs(f.text("instructions", default=DEFAULT_INSTRUCTIONS[mode]))
    show_feedback = f.boolean("show_feedback", default=False)
    ask_probability = f.boolean("ask_probability", default=False)
    if ask_probability and mode in JUDGEMENT_MODES:
        f.fail("ask_probability", f"applies to token and word studies: a {mode} answer is "
                                  "already a probability")
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



def allow_skip(study: Study) -> bool:
    """Whether participants may skip an item. Kept in `Study.settings` (the table has no column
    for it), so a study stored before the setting existed allows skips, as it did then."""
    return bool((study.settings or {}).get("allow_skip", True))
