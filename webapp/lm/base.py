"""The language-model interface every backend implements, and the spec-string parser.

A spec names a backend and a model: `llamacpp:gemma-3-270m` (the embedded base model) or
`llamacpp:/path/to/model.gguf`. Later backends (openai-compatible servers, transformers, n-gram
baselines) plug in here without touching scoring or the game.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .stats import DistributionSummary


class ModelSpecError(ValueError):
    """The spec string names no known backend or no usable model file."""


@dataclass(frozen=True)
class ModelSpec:
    backend: str
    target: str

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        backend, sep, target = spec.partition(":")
        if not sep or not target:
            raise ModelSpecError(
                f"model spec {spec!r} must look like 'llamacpp:gemma-3-270m' or 'llamacpp:/path.gguf'"
            )
        if backend != "llamacpp":
            raise ModelSpecError(f"unknown model backend {backend!r} (available: llamacpp)")
        return cls(backend, target)

    def __str__(self) -> str:
        return f"{self.backend}:{self.target}"


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

    def continuation_logprobs(
        self, prefix_ids: Sequence[int], continuation_ids: Sequence[int]
    ) -> tuple[list[float], np.ndarray]:
        """ln p of each continuation token after the prefix (one pass) and the next-token row."""

    def next_token_logprobs(self, prefix_ids: Sequence[int]) -> np.ndarray:
        """Full-vocabulary log-probabilities after the prefix (last position only: cheap)."""


def display_text(piece: bytes) -> str:
    """How a token is shown: its bytes as UTF-8, invalid fragments as <0xNN> escapes."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<0x{b:02X}>" for b in piece)
