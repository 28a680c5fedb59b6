"""The language-model interface every backend implements, and the spec-string parser.

A spec names a backend and a model: `llamacpp:gemma-3-270m` (the embedded base model) or
`llamacpp:/path/to/model.gguf`; `ngram:/path/to/model.ngram` (an n-gram baseline over tiktoken
tokens, webapp/lm/ngram.py); `openai:http://host:port/v1#model[;encoding=NAME]` (an
OpenAI-compatible completions server, webapp/lm/openai_compat.py). Backends plug in here without
touching scoring or the game.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .stats import DistributionSummary


class ModelSpecError(ValueError):
    """The spec string names no known backend or no usable model file."""


BACKENDS = ("llamacpp", "ngram", "openai")


class BackendError(RuntimeError):
    """The model's backend failed at run time (a server unreachable, an answer without the
    numbers asked for); the message says what to do. Nothing about the document is stored."""


@dataclass(frozen=True)
class ModelSpec:
    backend: str
    target: str

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        backend, sep, target = spec.partition(":")
        if not sep or not target:
            raise ModelSpecError(
                f"model spec {spec!r} must look like 'llamacpp:gemma-3-270m', "
                "'llamacpp:/path.gguf', 'ngram:/path.ngram' or 'openai:http://host:port/v1#model'"
            )
        if backend not in BACKENDS:
            raise ModelSpecError(
                f"unknown model backend {backend!r} (available: {', '.join(BACKENDS)})"
            )
        if backend == "openai":
            from .openai_compat import parse_target

            parse_target(target)  # raises ModelSpecError with what is wrong
        return cls(backend, target)

    def __str__(self) -> str:
        return f"{self.backend}:{self.target}"


@dataclass(frozen=True)
class Continuation:
    """The model's numbers for one continuation of a prefix: a word, or a guessed first token."""

    token_logprobs: tuple[float, ...]  # ln p(c_i | prefix, c_1..c_{i-1}), chain rule
    token_ranks: tuple[int, ...]  # 1 + tokens strictly more likely than c_i at its step
    end_logprob: float | None = None  # ln P(next token in end_set | prefix, c); None if not asked

    @property
    def logprob(self) -> float:
        """ln p(c | prefix): the sum of the token log-probs (the chain rule)."""
        return float(sum(self.token_logprobs))


@dataclass
class DocumentScores:
    """What one `score_continuations` call returns."""

    summary: DistributionSummary | None  # per position of the document, when top_k was given
    continuations: dict[int, list[Continuation | None]] = field(default_factory=dict)
    """Per branch position, the continuations in the order asked; None for one that does not fit
    the model's context after that position."""
    lookups: dict[tuple[int, int], tuple[float, int]] = field(default_factory=dict)
    """(position, token) -> exact (logprob, rank) of that token as the next one at that position."""


class Tokenizer(Protocol):
    tokenizer_id: str
    n_vocab: int

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` as a continuation (no BOS)."""

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes a token stands for (leading space included)."""

    def is_control(self, token_id: int) -> bool:
        """True for control/special tokens (<eos>, <start_of_image>, ...) the game never shows."""


class LanguageModelBackend(Tokenizer, Protocol):
    spec: str
    name: str

    def settings(self) -> dict:
        """Everything that changes the numbers (file hash, context size, quantisation)."""

    def score(self, token_ids: Sequence[int], top_k: int) -> DistributionSummary:
        """One forward pass over BOS + token_ids; row i describes p(token_ids[i] | BOS, ids[:i])."""

    def logprobs_at(
        self, token_ids: Sequence[int], queries: Sequence[tuple[int, int]]
    ) -> list[tuple[float, int]]:
        """Exact (logprob, rank) of token q at position p for each (p, q), in one forward pass."""

    def score_continuations(
        self,
        token_ids: Sequence[int],
        continuations: Mapping[int, Sequence[Sequence[int]]] | None = None,
        *,
        top_k: int | None = None,
        end_set: np.ndarray | None = None,
        lookups: Iterable[tuple[int, int]] = (),
        through_end: bool = False,
        alternatives: int = 0,
        alternative_seeds: Sequence[Sequence[int]] | None = None,
        summary_rows: Sequence[int] | None = None,
    ) -> DocumentScores:
        """ONE forward pass over BOS + token_ids (the document), then every continuation c at a
        branch position p (0 <= p <= len(token_ids)) is scored as a replacement of token_ids[p:].

        With `top_k`, also the summary of every position of the document (what `score` returns);
        `through_end` adds row len(token_ids), the distribution after the last token, which has
        no actual next token (target_logprob NaN, target_rank 0): a stem's prediction.
        With `end_set` (a boolean mask over the vocabulary), also ln P(the token after c is in
        the set). `lookups` (position, token) are single next tokens, read off the pass. Backends
        that can keep the model's cache continue each c from the document's pass after position
        p (evaluating only c's tokens) and read a c that is the document's own next tokens off
        the pass itself; so every number about (document, p) comes from the document's own pass
        whatever else is asked in the same call, and the log-softmax of each position is
        computed once for all queries on it.
        With `alternatives` = a > 0 (only backends whose `draws_alternatives` is true: they
        know the full distribution), the summary also holds a tokens per row drawn from it at
        T = 1, row i's with numpy's generator seeded by alternative_seeds[i].
        With `summary_rows` (positions 0..len(token_ids), with `top_k`), the summary holds only
        those positions, row i describing position summary_rows[i] (position len(token_ids):
        the distribution after the last token, no target), instead of every position: the
        summaries cost about as much as the pass, and a caller may need a few.
        """

    def next_token_logprobs(self, prefix_ids: Sequence[int]) -> np.ndarray:
        """Full-vocabulary log-probabilities after the prefix (last position only: cheap)."""


@dataclass(frozen=True)
class TextScore:
    """A text's log-probability under a model's own tokenization (BOS + its tokens)."""

    n_tokens: int
    n_bytes: int
    logprob: float | None  # ln p(text) = sum of its tokens' log-probs; None if any is unknown
    unknown: int  # tokens whose log-prob the backend could not give (a top-k-only server)

    @property
    def bits_per_byte(self) -> float | None:
        if self.logprob is None or not self.n_bytes:
            return None
        return -self.logprob / np.log(2) / self.n_bytes


def score_text(model: LanguageModelBackend, text: str) -> TextScore:
    """ln p(text) by the chain rule over the model's own tokens (comparable across tokenizers
    in bits per byte): one pass, nothing stored."""
    ids = model.tokenize(text)
    n_bytes = len(text.encode("utf-8"))
    if not ids:
        return TextScore(0, n_bytes, 0.0, 0)
    logprobs = np.asarray(model.score(ids, top_k=1).target_logprob, dtype=np.float64)
    unknown = int(np.count_nonzero(np.isnan(logprobs)))
    total = None if unknown else float(logprobs.sum())
    return TextScore(len(ids), n_bytes, total, unknown)


def check_branches(n: int, positions: Iterable[int]) -> None:
    """Every branch or look-up position of score_continuations lies within the document (0..n)."""
    for p in positions:
        if not 0 <= p <= n:
            raise ValueError(f"branch position {p} is outside the document (0..{n})")


class LookupsInOnePass:
    """`logprobs_at` for a backend whose score_continuations answers look-ups in one pass."""

    def logprobs_at(
        self, token_ids: Sequence[int], queries: Sequence[tuple[int, int]]
    ) -> list[tuple[float, int]]:
        """Exact (logprob, rank) of token q at position p for each (p, q): one forward pass, the
        log-softmax of each position computed once, each distinct (p, q) looked up once."""
        found = self.score_continuations(token_ids, lookups=queries).lookups  # type: ignore[attr-defined]
        return [found[(int(p), int(q))] for p, q in queries]


def display_text(piece: bytes) -> str:
    """How a token is shown: its bytes as UTF-8, invalid fragments as <0xNN> escapes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in piece)
