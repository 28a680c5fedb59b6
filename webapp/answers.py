"""The one answer path: every human answer enters here, whatever the mode.

The solo game, classroom rooms, online studies and imported norms all store answers as rows of
`guesses`. The rules for accepting one are written once, in this module:

1. **Validate once, where it arrives.** The payload is declared as a pydantic model (`AnswerIn`
   and its per-mode subclasses): types are strict, strings are bounded by the configured
   `MAX_GUESS_CHARS`, text that a database cannot store (NUL, unpaired surrogates) is refused,
   integers fit the database's integer columns, unknown fields are refused. The same
   declarations publish the OpenAPI document (`webapp.api`) and drive the fuzz tests.
2. **Idempotency.** A client key names one answer; sending it again replays the stored answer.
3. **One answer per player and position, enforced by the database** (a unique index; imported
   norms, where one label may answer an item many times, are exempt). Concurrent submits race
   to the index: exactly one row is stored, a retry of it gets the replay, a different answer
   gets a 409.
4. **Matching** (token, word, comprehension check, and the judgements of webapp.judgements:
   a pairwise judgement or a stated distribution) and building the row.

A mode supplies only an `AnswerPolicy`: which item is the player's current one (`locate`), how
the text is matched (`match`), what else the row carries, and any bookkeeping that must commit
with the answer (`stored`). Nothing here imports Flask: the web layer parses, calls `submit` and
turns `AnswerRefused` into its own error reply.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Protocol, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .game import model_view_of_token
from .judgements import (
    MAX_BETS,
    TOTAL_POINTS,
    Pair,
    model_true_cell_logprob,
    pairwise_judgement,
    stated_judgement,
)
from .lm import Tokenizer
from .models import Guess
from .textcheck import storable_text_problem
from .words import word_matches

# Ids live in INTEGER columns: 32 bits on PostgreSQL (64 on SQLite). A larger number cannot be
# any row's id, so it is refused here instead of overflowing inside the database driver.
DB_INT = (-(2**31), 2**31 - 1)
MAX_REACTION_MS = 86_400_000
DEFAULT_MAX_CHARS = 200


class AnswerRefused(Exception):
    """An answer the server will not store; `status` is the HTTP status a web route should use
    (Socket.IO handlers send the message in a refused acknowledgement)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# ------------------------------------------------------------------------------------ payloads


DbInt = Annotated[int, Field(ge=DB_INT[0], le=DB_INT[1])]
ClientKey = Annotated[
    str,
    Field(
        min_length=8, max_length=64, pattern=r"^[\x21-\x7e]+$",
        description="A random key the client makes once per answer and resends on retry.",
    ),
]


def storable(value: str) -> str:
    """A text field's value if a database can store it exactly; a validation error otherwise."""
    problem = storable_text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


SafeStr = Annotated[str, AfterValidator(storable)]


class Payload(BaseModel):
    """Strict JSON: no coercion ("1" is not 1, 1.0 is not an id), no unknown fields."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _fits(value: str, info: ValidationInfo) -> str:
    limit = (info.context or {}).get("max_chars", DEFAULT_MAX_CHARS)
    if len(value) > limit:
        raise ValueError(f"the answer is longer than {limit} characters")
    return storable(value)


class BetIn(Payload):
    """One candidate of a stated distribution and the points put on it."""

    text: str = Field(description="A continuation as typed (a leading space counts).")
    points: int = Field(ge=0, le=TOTAL_POINTS)

    @field_validator("text")
    @classmethod
    def _text_fits(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("every candidate needs some text")
        return _fits(value, info)


class AnswerIn(Payload):
    """What every answer carries, in every mode. One kind of answer per payload: `text` (token
    and word modes), `left_probability` (pairwise) or `bets` + `else_points` (distribution)."""

    client_key: ClientKey
    text: str = Field(default="", description="The answer exactly as typed (a leading space counts).")
    skipped: bool = Field(default=False, description="\"I don't know\": stored as a skip.")
    reaction_ms: float | None = Field(
        default=None, ge=0, le=MAX_REACTION_MS,
        description="performance.now() from showing the question to sending the answer.",
    )
    left_probability: int | None = Field(
        default=None, ge=1, le=99,
        description="Pairwise: percent chance that the LEFT token is the one that really came next "
                    "(the scale's stops are 1, 10, 20, ..., 90, 99).",
    )
    bets: list[BetIn] | None = Field(
        default=None, min_length=1, max_length=MAX_BETS,
        description="Distribution: up to five candidate continuations with their points.",
    )
    else_points: int | None = Field(
        default=None, ge=0, le=TOTAL_POINTS,
        description="Distribution: points on \"something else\"; with the bets, 100 in all.",
    )

    @field_validator("text")
    @classmethod
    def _text_fits(cls, value: str, info: ValidationInfo) -> str:
        return _fits(value, info)

    @model_validator(mode="after")
    def _one_kind_or_skip(self) -> AnswerIn:
        if self.skipped:
            self.text, self.left_probability, self.bets, self.else_points = "", None, None, None
            return self
        kinds = [bool(self.text.strip()), self.left_probability is not None,
                 self.bets is not None or self.else_points is not None]
        if sum(kinds) > 1:
            raise ValueError("send one kind of answer: text, left_probability, or bets with else_points")
        if not any(kinds):
            raise ValueError("type an answer, or choose \"I don't know\"")
        if not kinds[0]:
            self.text = ""  # blank text beside a judgement is no answer of its own
        if kinds[2]:
            if self.bets is None or self.else_points is None:
                raise ValueError("a distribution needs both bets and else_points")
            total = sum(bet.points for bet in self.bets) + self.else_points
            if total != TOTAL_POINTS:
                raise ValueError(f"the points must add up to {TOTAL_POINTS} (they add up to {total})")
        return self

    @property
    def kind(self) -> str:
        """skip | text | pairwise | distribution."""
        if self.skipped:
            return "skip"
        if self.left_probability is not None:
            return "pairwise"
        return "distribution" if self.bets is not None else "text"


class SoloAnswerIn(AnswerIn):
    """POST /api/play/guesses: an answer to one position of the solo game."""

    item_id: DbInt
    mode: Literal["token", "pairwise", "distribution"] = Field(
        default="token", description="What the question asked for (from /api/play/next's mode).",
    )


class RoomAnswerIn(AnswerIn):
    """Socket.IO `guess`: a student's answer to the open round of a room."""

    code: SafeStr = Field(max_length=40)
    round: int = Field(ge=0, le=10_000)


class StudyAnswerIn(AnswerIn):
    """POST /api/s/<slug>/answers: a participant's answer to their current study item."""

    study_item_id: DbInt
    reported_probability: float | None = Field(
        default=None, ge=0, le=1, description="How likely the participant thinks the answer is."
    )


def parse(model: type[Payload], data: Any, *, max_chars: int = DEFAULT_MAX_CHARS) -> Any:
    """Validate `data` against `model`; AnswerRefused(400) with one clear sentence otherwise."""
    if not isinstance(data, dict):
        raise AnswerRefused("send one JSON object", 400)
    try:
        return model.model_validate(data, context={"max_chars": max_chars})
    except ValidationError as exc:
        raise AnswerRefused(describe(exc, model), 400) from None


_KINDS = {
    "int": "a whole number", "float": "a number", "bool": "true or false", "string": "text",
    "dict": "an object", "list": "a list",
}


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `list[BetIn] | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _bounds(model: type[BaseModel], name: str) -> tuple[Any, Any]:
    *path, last = [part for part in name.split(".") if not part.isdigit()] or [name]
    for part in path:  # "bets.0.points": the field `points` of the model inside `bets`
        info = model.model_fields.get(part)
        model = _nested_model(info.annotation) if info else None
        if model is None:
            return None, None
    info = model.model_fields.get(last)
    low = high = None
    for meta in info.metadata if info else ():
        low = getattr(meta, "ge", low)
        high = getattr(meta, "le", high)
    return low, high


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def describe(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first validation error as a sentence a person can act on, naming the field."""
    error = exc.errors(include_url=False)[0]
    name = ".".join(str(part) for part in error["loc"]) or "body"
    kind = error["type"]
    if kind == "missing":
        return f"missing field '{name}'"
    if kind == "extra_forbidden":
        return f"unknown field '{name}'"
    if kind.endswith(("_type", "_parsing")):
        expected = _KINDS.get(kind.split("_")[0], "of another type")
        return f"missing field '{name}' ({expected}): the value sent has the wrong type"
    if kind == "string_unicode":  # pydantic's own refusal of a lone surrogate
        return f"field '{name}' contains a lone surrogate, half of a UTF-16 pair, which cannot be stored"
    if kind == "literal_error":
        return f"{name} must be {error['ctx']['expected']}"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(model, name)
        if low is not None and high is not None:
            return f"{name} must be between {_plain(low)} and {_plain(high)}"
    message = error["msg"].removeprefix("Value error, ")
    return message if error["loc"] == () or name in message else f"field '{name}': {message}"


# ------------------------------------------------------------------------------------ matching


@dataclass(frozen=True)
class Match:
    """How an answer compares with the truth; the tokens are the model tokenizer's view of it."""

    token_ids: list[int]
    first_token_id: int | None
    multi_token: bool
    correct: bool | None  # None: nothing to be correct about (a stem has no true continuation)
    match_rule: str  # first_token | first_token_if_space_toggled | none | skip | word | no_target | ...
    stored_text: str | None = None  # the text as stored, when the mode normalises it
    mode: str | None = None  # the row's mode when the match decides it (pairwise, distribution)
    judgement: dict[str, Any] | None = None  # what a pairwise or distribution answer said
    model_logprob: float | None = None  # distribution: the model's log score on the same cells


def match_token(text: str, target_id: int, tokenizer: Tokenizer, skipped: bool) -> Match:
    """Correct when the answer's FIRST model token is the true next token.

    The answer is tokenized on its own, exactly as typed (a leading space is part of the text).
    `first_token_if_space_toggled` records a near miss: wrong as typed, right with the leading
    space added or removed (shown to the player as a hint, never counted as correct).
    """
    if skipped:
        return Match([], None, False, False, "skip")
    ids = tokenizer.tokenize(text)
    first = ids[0] if ids else None
    if first is not None and first == target_id:
        rule = "first_token"
    else:
        toggled = text[1:] if text.startswith(" ") else " " + text
        toggled_ids = tokenizer.tokenize(toggled) if toggled.strip() else []
        rule = "first_token_if_space_toggled" if toggled_ids[:1] == [target_id] else "none"
    return Match(ids, first, len(ids) > 1, rule == "first_token", rule)


def match_word(word: str, target: str, token_ids: list[int]) -> Match:
    """Word mode: correct when the typed word equals the true next word (webapp.words rules);
    `token_ids` is the word as the model sees it after the prefix (leading space included)."""
    correct = word_matches(word, target)
    return Match(token_ids, token_ids[0] if token_ids else None, len(token_ids) > 1, correct,
                 "word" if correct else "word_mismatch", stored_text=word)


def match_without_target(token_ids: list[int], stored_text: str | None = None) -> Match:
    """An answer to a stem, an item with no true continuation (imported norms): tokenized like
    any answer, but neither correct nor wrong (is_correct NULL, match_rule no_target)."""
    return Match(token_ids, token_ids[0] if token_ids else None, len(token_ids) > 1, None,
                 "no_target", stored_text=stored_text)


def match_check(match: Match, text: str, expected: str, skipped: bool) -> Match:
    """A comprehension check: passed when the answer equals the expected one (words rules)."""
    passed = not skipped and word_matches(text, expected)
    return replace(match, correct=passed, match_rule="skip" if skipped else "check")


ASKS = {
    "token": "type the next token",
    "word": "type the next word",
    "pairwise": "say how likely the left token is the original: send left_probability (1-99)",
    "distribution": "spread 100 points: send bets (up to five) and else_points",
}


def expect_kind(answer: AnswerIn, mode: str) -> None:
    """Refuse (400) an answer of another kind than the question asked for; a skip fits any."""
    wanted = "text" if mode in ("token", "word") else mode
    if answer.kind not in ("skip", wanted):
        raise AnswerRefused(f"this question is in {mode} mode: {ASKS[mode]}", 400)


def match_pairwise(answer: AnswerIn, pair: Pair | None, true_logprob: float | None) -> Match:
    """A pairwise judgement of the pair this person was shown (found again by the policy)."""
    expect_kind(answer, "pairwise")
    if pair is None:
        raise AnswerRefused("this position has no pair to judge", 409)
    return Match([], None, False, None, "skip" if answer.skipped else "pairwise", mode="pairwise",
                 judgement=pairwise_judgement(pair, answer.left_probability, true_logprob))


def match_distribution(answer: AnswerIn, true_id: int | None, tokenizer: Tokenizer, prediction) -> Match:
    """A stated distribution: each candidate tokenized on its own, the cell of the truth found."""
    expect_kind(answer, "distribution")
    if answer.skipped:
        return Match([], None, False, None, "skip", mode="distribution")
    judgement = stated_judgement([(b.text, b.points) for b in answer.bets], answer.else_points,
                                 tokenizer, true_id, prediction)
    return Match([], None, False, None, "distribution", mode="distribution", judgement=judgement,
                 model_logprob=model_true_cell_logprob(judgement))


def build_row(answer: AnswerIn, match: Match, prediction, **fields) -> Guess:
    """The Guess row for a matched answer. The model's exact log-prob and rank of its first
    token are filled when that token is in the stored top-k (`prediction` may be None before
    scoring); `fields` are the rest of the row: ids, times, source, mode ..."""
    logprob, rank = model_view_of_token(prediction, match.first_token_id)
    if match.model_logprob is not None:
        logprob = match.model_logprob
    if match.mode is not None:
        fields["mode"] = match.mode
    return Guess(
        raw_text=answer.text if match.stored_text is None else match.stored_text,
        token_ids=match.token_ids, first_token_id=match.first_token_id,
        multi_token=match.multi_token, skipped=answer.skipped, is_correct=match.correct,
        match_rule=match.match_rule, client_key=answer.client_key,
        client_reaction_ms=float(answer.reaction_ms) if answer.reaction_ms is not None else None,
        model_logprob=logprob, model_rank=rank, judgement=match.judgement, **fields,
    )


# ------------------------------------------------------------------------------------ storing


@dataclass
class Placement:
    """Where an answer goes, as the mode's policy found it."""

    item_id: int
    token_id: int  # the true next token
    prediction: Any  # the mode's model at this item (anything with .top_k), or None
    row: dict[str, Any] = field(default_factory=dict)  # the rest of the Guess row
    context: Any = None  # whatever the policy needs again in match/stored


class AnswerPolicy(Protocol):
    """What a mode decides; everything else about an answer is decided in this module."""

    already_answered: ClassVar[str]  # the 409 message when the position already has an answer

    def locate(self, session: Session, answer: Any) -> Placement:
        """The player's current item for this answer, or AnswerRefused."""

    def match(self, answer: Any, placement: Placement, tokenizer: Tokenizer) -> Match:
        """How the answer compares with the truth."""

    def owns(self, guess: Guess, answer: Any) -> bool:
        """Whether a stored answer with this client key is the same answer resent."""

    def stored(self, session: Session, placement: Placement, guess: Guess) -> None:
        """Bookkeeping that must commit together with the answer (may be a no-op)."""


@dataclass
class Stored:
    guess: Guess
    replayed: bool
    placement: Placement | None = None  # None for a replay


def submit(
    session: Session,
    policy: AnswerPolicy,
    answer: AnswerIn,
    *,
    player_id: str,
    tokenizer: Tokenizer,
    received_at: datetime,
    write_lock: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Stored:
    """Store one live answer, or replay it; commits before returning (acknowledge after commit).

    Races are settled by the database: when concurrent requests carry the same client key, the
    losers replay the winner's row; when they carry different answers for the same position, the
    unique index keeps one and the others get `policy.already_answered` (409). A policy must
    refuse an already answered position with status 409, so that a resent answer is replayed.
    """
    with write_lock():
        # Optimistic: most answers are new, so no lookup comes first; a resent answer shows up
        # as a refusal of its (already answered) position or as a clash on its client key.
        try:
            placement = policy.locate(session, answer)
        except AnswerRefused as refused:
            if refused.status != 409:
                raise
            session.rollback()
            stored = _by_key(session, answer.client_key)
            if stored is None:
                raise
            return _replay(stored, policy, answer, player_id)
        match = policy.match(answer, placement, tokenizer)
        guess = build_row(
            answer, match, placement.prediction, player_id=player_id, item_id=placement.item_id,
            server_received_at=received_at, **placement.row,
        )
        session.add(guess)
        policy.stored(session, placement, guess)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            stored = _by_key(session, answer.client_key)
            if stored is None:
                raise AnswerRefused(policy.already_answered, 409) from None
            return _replay(stored, policy, answer, player_id)
    return Stored(guess, False, placement)


def _by_key(session: Session, client_key: str) -> Guess | None:
    return session.scalar(select(Guess).where(Guess.client_key == client_key))


def _replay(stored: Guess, policy: AnswerPolicy, answer: AnswerIn, player_id: str) -> Stored:
    if stored.player_id != player_id or not policy.owns(stored, answer):
        raise AnswerRefused("client_key was already used for another answer", 409)
    return Stored(stored, True)
