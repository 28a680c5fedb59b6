"""Database tables (SQLAlchemy 2.0 typed models).

The research record is: Document -> Item (one per token position) -> Prediction (one per item and
model) and Guess (one per human answer). Every Prediction names its LanguageModel row, which names
the tokenizer and the scoring settings (top-k, temperature grid), so no stored number is anonymous.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class CorpusPurpose(StrEnum):
    """What a corpus is for: only GAME corpora are played in public; the rest are hidden."""

    GAME = "game"
    ROOM_PROMPTS = "room_prompts"  # a teacher's own prompts
    STUDY_CHECKS = "study_checks"  # comprehension checks of studies
    EXTERNAL = "external"  # contexts of imported norms


class AnswerSource(StrEnum):
    """Where a stored answer (a row of `guesses`) came from."""

    GAME = "game"  # the solo game
    ROOM = "room"
    STUDY = "study"
    EXTERNAL = "external"  # imported by `humanlm import-responses`


class RoomStatus(StrEnum):
    """Whether a room's rounds are ready to play (a teacher's prompts are scored first)."""

    PREPARING = "preparing"
    READY = "ready"
    FAILED = "failed"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database.

    Why: SQLite stores no zone and hands values back naive; PostgreSQL hands them back aware.
    Making every value aware here means no code compares naive with aware datetimes.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}  # noqa: RUF012 (SQLAlchemy API)


class Corpus(Base):
    """A named set of documents with its own playability rule."""

    __tablename__ = "corpora"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    min_prefix_tokens: Mapped[int] = mapped_column(Integer, default=3)
    # "game": played in the solo game and listed on the home page; "room_prompts": a teacher's
    # own prompts for a classroom room (scored at one position only, never listed).
    purpose: Mapped[str] = mapped_column(String(20), default="game", server_default="game")
    # Pairwise game: tokens drawn per position from the scoring model's full distribution at
    # T = 1 when the corpus is scored (stored in Prediction.alternatives), with this seed.
    pairwise_alternatives: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    alternatives_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    documents: Mapped[list[Document]] = relationship(back_populates="corpus")


class Document(Base):
    """One passage, stored with the exact token ids its items index into."""

    __tablename__ = "documents"
    __table_args__ = (UniqueConstraint("corpus_id", "content_hash", name="uq_document_content"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    corpus_id: Mapped[int] = mapped_column(ForeignKey("corpora.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(String(300), default="")
    register: Mapped[str] = mapped_column(String(50), default="")
    licence: Mapped[str] = mapped_column(String(100), default="")
    source: Mapped[str] = mapped_column(String(500), default="")
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    tokenizer: Mapped[str] = mapped_column(String(200))
    token_ids: Mapped[list[Any]] = mapped_column(JSON)
    n_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    corpus: Mapped[Corpus] = relationship(back_populates="documents")
    items: Mapped[list[Item]] = relationship(
        back_populates="document", order_by="Item.position", cascade="all, delete-orphan"
    )


class Item(Base):
    """Token position `position` of a document: predict token_ids[position] from the tokens before.

    A stem (a sentence that people completed, imported without a true next word) is the one
    item at position == n_tokens of its document: the prediction after the whole text, with
    no true token (token_id and token_text NULL, never playable, skip_reason "no_target").
    """

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("document_id", "position", name="uq_item_position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # NULL: a stem
    token_text: Mapped[str | None] = mapped_column(String(200), nullable=True)  # NULL: a stem
    char_start: Mapped[int] = mapped_column(Integer)
    playable: Mapped[bool] = mapped_column(Boolean)
    skip_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)

    document: Mapped[Document] = relationship(back_populates="items")


class LanguageModel(Base):
    """A model plus the scoring settings its predictions were made with."""

    __tablename__ = "language_models"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300), unique=True)
    spec: Mapped[str] = mapped_column(String(300), index=True)
    name: Mapped[str] = mapped_column(String(200))
    tokenizer: Mapped[str] = mapped_column(String(200))
    n_vocab: Mapped[int] = mapped_column(Integer)
    top_k: Mapped[int] = mapped_column(Integer)
    temperatures: Mapped[list[Any]] = mapped_column(JSON)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ScoredDocument(Base):
    """Marks a document as fully scored by a model: scoring resumes by skipping these."""

    __tablename__ = "scored_documents"
    __table_args__ = (UniqueConstraint("document_id", "model_id", name="uq_scored_document"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("language_models.id", ondelete="CASCADE"))
    n_tokens: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    scored_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Prediction(Base):
    """The model's next-token distribution at one item, summarised.

    top_k is a list of [token_id, logprob, display_text, is_control] sorted by logprob descending;
    log probabilities are natural logs at temperature 1 over the full vocabulary (no renormalising).
    logz[i] = logsumexp(logprob / T_i) over the full vocabulary for T_i in the model's temperature
    grid, so p_T(token) = exp(logprob / T - logz) exactly for any token whose logprob is known.
    target_logprob/target_rank are NULL at a stem item (no true next token); the rest is there.
    """

    __tablename__ = "predictions"
    __table_args__ = (UniqueConstraint("item_id", "model_id", name="uq_prediction"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("language_models.id", ondelete="CASCADE"))
    target_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)  # NULL: a stem
    target_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)  # NULL: a stem
    top1_id: Mapped[int] = mapped_column(Integer)
    # NULL: the model gives only its top-k (an openai: server), so these are not known
    entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_k: Mapped[list[Any]] = mapped_column(JSON)
    logz: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # {"seed": [corpus seed, document key, position], "tokens": [[token_id, logprob, text], ...]}:
    # the corpus's pairwise_alternatives tokens drawn from this distribution, in drawn order.
    alternatives: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )

    item: Mapped[Item] = relationship()


class Player(Base):
    """A pseudonymous player: a random id kept in a cookie, nothing else about the person."""

    __tablename__ = "players"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Guess(Base):
    """One human answer, stored before anything about the true token is revealed.

    model_logprob/model_rank are the exact values under `model_id` for the guess's first token:
    filled at once when the token is in the stored top-k, otherwise by `humanlm score --fill-guesses`.
    """

    __tablename__ = "guesses"
    __table_args__ = (
        UniqueConstraint("client_key", name="uq_guess_client_key"),
        # One answer per student and round in a room (NULL room_id, the solo game, is exempt).
        UniqueConstraint("room_id", "player_id", "item_id", name="uq_guess_room_answer"),
        # One answer per player and position in every live mode (solo, room, study); imported
        # norms are exempt: one participant label may answer an item several times there.
        Index(
            "uq_guess_one_answer", "player_id", "item_id", unique=True,
            sqlite_where=text("source != 'external'"), postgresql_where=text("source != 'external'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_key: Mapped[str] = mapped_column(String(64))
    player_id: Mapped[str] = mapped_column(ForeignKey("players.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("language_models.id"), nullable=True)
    raw_text: Mapped[str] = mapped_column(String(400), default="")
    token_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    first_token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    multi_token: Mapped[bool] = mapped_column(Boolean, default=False)
    skipped: Mapped[bool] = mapped_column(Boolean, default=False)
    # NULL: an answer to a stem (no true next token, so nothing to be correct about). False
    # when not given; evaluates_none: an explicit None is stored as NULL (by default the ORM
    # leaves a None out of the INSERT, and the default would put False in its place).
    is_correct: Mapped[bool | None] = mapped_column(
        Boolean().evaluates_none(), default=False, nullable=True
    )
    match_rule: Mapped[str] = mapped_column(String(40))
    client_reaction_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    server_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    model_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    model_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    room_id: Mapped[int | None] = mapped_column(
        ForeignKey("rooms.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # game (solo) | room | study | external (imported by `humanlm import-responses`)
    source: Mapped[str] = mapped_column(String(20), default="game", server_default="game")
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="SET NULL"), nullable=True, index=True
    )
    # token: scored by the first token; word: the whole next word (see webapp.words);
    # pairwise and distribution: a judgement (see webapp.judgements), described in `judgement`
    mode: Mapped[str] = mapped_column(String(20), default="token", server_default="token")
    word_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    reported_probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    # What a pairwise or stated-distribution answer showed and said (webapp.judgements); NULL else.
    judgement: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)

    item: Mapped[Item] = relationship()


class Room(Base):
    """A live classroom room: a planned list of rounds (items) played by the class together.

    All state lives here, not in a worker's memory, so several server processes can serve one
    room; `phase` changes are compare-and-set updates (see webapp.rooms.commands).
    """

    __tablename__ = "rooms"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    host_token_hash: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[int | None] = mapped_column(ForeignKey("language_models.id"), nullable=True)
    source: Mapped[str] = mapped_column(String(20))  # corpus | prompts
    corpus_name: Mapped[str] = mapped_column(String(100), default="")
    join_url: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(20), default="ready")  # preparing | ready | failed
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    phase: Mapped[str] = mapped_column(String(20), default="lobby")
    round_index: Mapped[int] = mapped_column(Integer, default=-1)  # -1 until the first round
    show_histogram: Mapped[bool] = mapped_column(Boolean, default=True)
    show_leaderboard: Mapped[bool] = mapped_column(Boolean, default=True)
    timer_seconds: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The host's lock: nobody new may join (seats still come back); kept across restarts.
    joins_locked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # token (type the next token) | pairwise (which of two came next?) | distribution (bet 100 points)
    answer_mode: Mapped[str] = mapped_column(String(20), default="token", server_default="token")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    rounds: Mapped[list[RoomRound]] = relationship(
        back_populates="room", order_by="RoomRound.index", cascade="all, delete-orphan"
    )


class RoomRound(Base):
    """Round `index` of a room asks for item `item_id`; timestamps record when it moved on."""

    __tablename__ = "room_rounds"
    __table_args__ = (UniqueConstraint("room_id", "index", name="uq_room_round"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    room: Mapped[Room] = relationship(back_populates="rounds")
    item: Mapped[Item] = relationship()


class RoomPlayer(Base):
    """A student's seat in a room: a nickname and a secret token (kept hashed) for rejoining."""

    __tablename__ = "room_players"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_room_player_token"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    room_id: Mapped[int] = mapped_column(ForeignKey("rooms.id", ondelete="CASCADE"), index=True)
    player_id: Mapped[str] = mapped_column(ForeignKey("players.id"))
    nickname: Mapped[str] = mapped_column(String(40))
    token_hash: Mapped[str] = mapped_column(String(64))
    connected: Mapped[bool] = mapped_column(Boolean, default=True)
    removed: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WordScore(Base):
    """The model's log-probability of a whole word after an item's prefix (word mode).

    ln p(word) = sum of the log-probs of its tokens given the prefix and the tokens before (chain
    rule, one forward pass), plus ln P(the word ends there): see webapp.words for the method.
    Cached per (item, model, word) because the same word is answered many times.
    """

    __tablename__ = "word_scores"
    __table_args__ = (UniqueConstraint("item_id", "model_id", "word", name="uq_word_score"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("language_models.id", ondelete="CASCADE"))
    word: Mapped[str] = mapped_column(String(200))
    token_ids: Mapped[list[Any]] = mapped_column(JSON)
    tokens_logprob: Mapped[float] = mapped_column(Float)  # sum over the word's tokens
    end_logprob: Mapped[float] = mapped_column(Float)  # ln P(next token starts a new word)
    logprob: Mapped[float] = mapped_column(Float)  # tokens_logprob + end_logprob


class Researcher(Base):
    """A researcher account (created with `humanlm researcher add`); the password is hashed."""

    __tablename__ = "researchers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ResearcherSession(Base):
    """One login of a researcher, kept on the server: the browser's cookie holds only a random
    token whose hash is stored here, so logging out (or expiry) ends it for good, even for a
    copy of the cookie taken before."""

    __tablename__ = "researcher_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    researcher_id: Mapped[int] = mapped_column(
        ForeignKey("researchers.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class StudyAccess(Base):
    """A researcher other than the study's owner who may see and change it (shared access)."""

    __tablename__ = "study_access"
    __table_args__ = (UniqueConstraint("study_id", "researcher_id", name="uq_study_access"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    researcher_id: Mapped[int] = mapped_column(ForeignKey("researchers.id", ondelete="CASCADE"))
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Study(Base):
    """An online study: which items, how they are assigned, and what participants see.

    Every setting that shapes the data is also copied into `settings` (exported verbatim), so a
    dataset always says how it was collected.
    """

    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(64), unique=True)  # the study link: /s/<slug>
    mode: Mapped[str] = mapped_column(String(20), default="token")  # token | word | pairwise | distribution
    corpus_id: Mapped[int | None] = mapped_column(ForeignKey("corpora.id"), nullable=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("language_models.id"), nullable=True)
    items_per_participant: Mapped[int] = mapped_column(Integer, default=20)
    order: Mapped[str] = mapped_column(String(10), default="random")  # random | fixed
    seed: Mapped[int] = mapped_column(Integer, default=0)
    target_responses: Mapped[int] = mapped_column(Integer, default=10)
    consent_text: Mapped[str] = mapped_column(Text, default="")
    instructions: Mapped[str] = mapped_column(Text, default="")
    show_feedback: Mapped[bool] = mapped_column(Boolean, default=False)
    ask_probability: Mapped[bool] = mapped_column(Boolean, default=False)
    check_threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    completion_code: Mapped[str] = mapped_column(String(100), default="")
    redirect_url: Mapped[str] = mapped_column(String(500), default="")
    pilot: Mapped[bool] = mapped_column(Boolean, default=True)  # new participants are pilots
    status: Mapped[str] = mapped_column(String(10), default="open")  # open | closed
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("researchers.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    items: Mapped[list[StudyItem]] = relationship(
        back_populates="study", order_by="StudyItem.order", cascade="all, delete-orphan"
    )


class StudyItem(Base):
    """An item in a study: a test item, or a comprehension check with a known answer."""

    __tablename__ = "study_items"
    __table_args__ = (UniqueConstraint("study_id", "item_id", name="uq_study_item"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    kind: Mapped[str] = mapped_column(String(10), default="test")  # test | check
    expected_answer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    order: Mapped[int] = mapped_column(Integer, default=0)

    study: Mapped[Study] = relationship(back_populates="items")
    item: Mapped[Item] = relationship()


class Participant(Base):
    """One person's run through a study (their answers are Guesses of `player_id`).

    A run resumes only in the browser that consented or with the same platform SESSION_ID; the
    same platform id arriving from elsewhere starts a new run with `duplicate_of` set to the
    first run of that id, so nobody can take over (or lock out) someone else's run, and the
    researcher sees every such case."""

    __tablename__ = "participants"
    __table_args__ = (Index("ix_participants_study_external", "study_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    player_id: Mapped[str] = mapped_column(ForeignKey("players.id"), unique=True)
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    url_params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    pilot: Mapped[bool] = mapped_column(Boolean, default=False)
    assigned: Mapped[list[Any]] = mapped_column(JSON, default=list)  # StudyItem ids, in order
    consented_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    checks_passed: Mapped[int] = mapped_column(Integer, default=0)
    checks_total: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusion_reason: Mapped[str | None] = mapped_column(String(300), nullable=True)
    duplicate_of: Mapped[int | None] = mapped_column(
        ForeignKey("participants.id", ondelete="SET NULL"), nullable=True
    )


class PlayRound(Base):
    """A short round of the solo game (e.g. 10 positions) ending on a result card.

    `id` is random (it names the shareable card, /play/card/<id>.svg); the card shows scores
    and tokens only, never who played. kind: free | daily (the day's passage, same for everyone,
    `day` is its UTC date as YYYY-MM-DD); difficulty: any | easy | hard (positions where the
    model was confident or unsure, from the stored prediction entropy)."""

    __tablename__ = "play_rounds"
    __table_args__ = (Index("ix_play_rounds_day", "kind", "day"),)

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    player_id: Mapped[str] = mapped_column(ForeignKey("players.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10), default="free")
    day: Mapped[str | None] = mapped_column(String(10), nullable=True)
    difficulty: Mapped[str] = mapped_column(String(10), default="any")
    size: Mapped[int] = mapped_column(Integer)
    document_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    answers: Mapped[list[PlayRoundGuess]] = relationship(
        back_populates="round", order_by="PlayRoundGuess.guess_id", cascade="all, delete-orphan"
    )


class PlayRoundGuess(Base):
    """One answer of a round (an answer belongs to at most one round)."""

    __tablename__ = "play_round_guesses"

    round_id: Mapped[str] = mapped_column(
        ForeignKey("play_rounds.id", ondelete="CASCADE"), primary_key=True
    )
    guess_id: Mapped[int] = mapped_column(ForeignKey("guesses.id"), primary_key=True, unique=True)

    round: Mapped[PlayRound] = relationship(back_populates="answers")
    guess: Mapped[Guess] = relationship()


class PlayerNickname(Base):
    """The name a player chose for the daily board (validated like room nicknames); without
    one the board shows a shortened random id."""

    __tablename__ = "player_nicknames"

    player_id: Mapped[str] = mapped_column(ForeignKey("players.id"), primary_key=True)
    nickname: Mapped[str] = mapped_column(String(40))
    set_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class AnswerModelScore(Base):
    """One answer's probability under one model, comparable across tokenizers.

    logprob = ln p_M(answer text | prefix text) by the chain rule over M's OWN tokens: the
    document text before the item tokenized by M on its own, then the answer as typed tokenized
    by M (word mode: the word with its leading space, webapp.words, plus end_logprob, the
    word-end term). first_token_logprob/rank only where M's tokenizer is the one the corpus was
    played with (same_tokenizer): the exact numbers of the answer's first token, as the guesses
    columns are. NULL wherever the backend cannot know the number (never estimated). Method and
    approximation: webapp.predictions.fill_model_scores.
    """

    __tablename__ = "answer_model_scores"
    __table_args__ = (UniqueConstraint("guess_id", "model_id", name="uq_answer_model_score"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    guess_id: Mapped[int] = mapped_column(ForeignKey("guesses.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(
        ForeignKey("language_models.id", ondelete="CASCADE"), index=True
    )
    logprob: Mapped[float | None] = mapped_column(Float, nullable=True)  # word mode: + end term
    n_tokens: Mapped[int] = mapped_column(Integer)  # the answer's tokens under M (0: none)
    end_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)  # word mode only
    first_token_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    first_token_rank: Mapped[int | None] = mapped_column(Integer, nullable=True)
    same_tokenizer: Mapped[bool] = mapped_column(Boolean)


class ItemModelScore(Base):
    """One model's view of one item (an answered position), comparable across tokenizers.

    target_logprob = ln p_M(the true next token's text | prefix text) and target_word_logprob
    = ln p_M(the true next word | prefix text) + its word-end term, both by the chain rule over
    M's own tokens; entropy of M's next-token distribution at the end of the prefix (its own
    tokens; NULL when M gives only a top-k); top1_text, M's most likely next token, and
    top1_starts_word: that text without leading whitespace is non-empty and begins the true next
    word (the accuracy comparable across tokenizers). NULL at a stem (no true continuation) and
    wherever the backend cannot know the number. See webapp.predictions.fill_model_scores.
    """

    __tablename__ = "item_model_scores"
    __table_args__ = (UniqueConstraint("item_id", "model_id", name="uq_item_model_score"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(
        ForeignKey("language_models.id", ondelete="CASCADE"), index=True
    )
    target_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    target_n_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    target_word_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)  # + end term
    target_word_end_logprob: Mapped[float | None] = mapped_column(Float, nullable=True)
    entropy: Mapped[float | None] = mapped_column(Float, nullable=True)
    top1_text: Mapped[str | None] = mapped_column(String(200), nullable=True)
    top1_starts_word: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    same_tokenizer: Mapped[bool] = mapped_column(Boolean)
