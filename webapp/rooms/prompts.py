"""A teacher's own prompts: parse them, store them as documents, score them with the model.

A prompt is one line. The class guesses the token after the prompt's text: the last token of the
line, or, when the line contains `|`, the first token after the `|`
("The capital of France is | Paris"). Prompts are stored as documents of the hidden corpus
ROOM_PROMPTS_CORPUS (purpose "room_prompts"), so their items, predictions and guesses are ordinary
rows that the research export sees like any other.

Scoring runs off the request thread (`score_room_prompts`) with a small-context model kept once
per process: one forward pass over the short prompt (its last position is the one asked; the
other positions come for free in the same pass and are stored too, so a prompt reused later is
not scored again).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..corpus import HiddenItemError, get_or_create_corpus, hidden_item, normalize_text
from ..green import NativeThreadModel, in_native_thread, patched
from ..lm import LanguageModelBackend, Tokenizer, load_model
from ..models import Document, Item, ScoredDocument
from ..predictions import get_or_create_model_row, score_document
from .state import RoomRuleError

ROOM_PROMPTS_CORPUS = "room-prompts"
MAX_PROMPTS = 30
MAX_PROMPT_CHARS = 400
MAX_PROMPT_TOKENS = 120  # the prompt model's context; plenty for a line typed by a teacher


@dataclass(frozen=True)
class ParsedPrompt:
    line_number: int
    text: str  # the whole line as stored (with the `|` removed)
    target_char: int  # the class guesses the first token starting at or after this offset


def parse_prompts(raw: str) -> list[ParsedPrompt]:
    """Split the teacher's text into prompts, or raise RoomRuleError naming the bad line.

    Blank lines are ignored. Around a `|`, any whitespace becomes one space that belongs to the
    answer (" Paris" is the token to guess, as the model would see it); with no whitespace the
    split is inside a word ("unbeliev|able").
    """
    prompts: list[ParsedPrompt] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(raw.splitlines(), 1):
        line = normalize_text(line)
        if not line:
            continue
        if len(line) > MAX_PROMPT_CHARS:
            raise RoomRuleError(f"line {number} is longer than {MAX_PROMPT_CHARS} characters")
        if line.count("|") > 1:
            raise RoomRuleError(f"line {number} has more than one |; mark only where to guess")
        if "|" in line:
            left, right = line.split("|")
            if not left.strip() or not right.strip():
                raise RoomRuleError(f"line {number}: put text on both sides of the |")
            if left[-1:].isspace() or right[:1].isspace():
                left, right = left.rstrip(), " " + right.lstrip()
            text, target_char = left + right, len(left)
        else:
            text, target_char = line, -1  # -1: the last token
        if text in seen:
            raise RoomRuleError(f"line {number} repeats line {seen[text]}")
        seen[text] = number
        prompts.append(ParsedPrompt(number, text, target_char))
    if not prompts:
        raise RoomRuleError("type at least one prompt, one per line")
    if len(prompts) > MAX_PROMPTS:
        raise RoomRuleError(f"use at most {MAX_PROMPTS} prompts (you typed {len(prompts)})")
    return prompts


def store_prompts(session: Session, prompts: list[ParsedPrompt], tokenizer: Tokenizer) -> list[Item]:
    """The item to ask for each prompt, creating its document (reused when already stored)."""
    corpus = get_or_create_corpus(
        session, ROOM_PROMPTS_CORPUS, min_prefix_tokens=1,
        description="Prompts typed by teachers for classroom rooms.",
    )
    corpus.purpose = "room_prompts"
    items = []
    for prompt in prompts:
        try:
            items.append(hidden_item(
                session, corpus, prompt.text, prompt.target_char, tokenizer,
                title=prompt.text[:60], register="prompt", source="room prompt",
                max_tokens=MAX_PROMPT_TOKENS,
            ))
        except HiddenItemError as exc:
            raise RoomRuleError(_refusal(prompt, exc)) from None
    return items


def _refusal(prompt: ParsedPrompt, exc: HiddenItemError) -> str:
    if exc.reason == "too_long":
        return (f"line {prompt.line_number} is {exc.n_tokens} tokens long; "
                f"use at most {MAX_PROMPT_TOKENS}")
    if exc.reason == "not_visible":
        return (f"line {prompt.line_number}: the token to guess must be visible text, "
                f"not {exc.item.token_text!r}")
    return f"line {prompt.line_number}: there must be text before the token to guess"


_model_lock = threading.Lock()
_models: dict[tuple[str, int], LanguageModelBackend] = {}


def prompt_model(spec: str, n_threads: int) -> LanguageModelBackend:
    """The scoring model for prompts, opened once per process with a small context (~0.4 GB).
    In the gevent server it loads and runs its forward passes on a native thread (green.py),
    so a room's scoring never holds up the other rooms' answers."""
    with _model_lock:
        key = (spec, n_threads)
        if key not in _models:
            model = in_native_thread(
                load_model, spec, max_tokens=MAX_PROMPT_TOKENS, n_threads=n_threads
            )
            _models[key] = NativeThreadModel(model) if patched() else model
        return _models[key]


def score_prompt_documents(
    session: Session, model: LanguageModelBackend, top_k: int, document_ids: list[int]
) -> int:
    """Score the prompts' documents not yet scored by this model; returns the model row id."""
    row = get_or_create_model_row(session, model, top_k)
    done = set(
        session.scalars(
            select(ScoredDocument.document_id).where(
                ScoredDocument.model_id == row.id, ScoredDocument.document_id.in_(document_ids)
            )
        )
    )
    for doc_id in document_ids:
        if doc_id not in done:
            with _model_lock:  # one llama.cpp context per process: one pass at a time
                score_document(session, model, row, session.get(Document, doc_id))
            done.add(doc_id)
    return row.id
