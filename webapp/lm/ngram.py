"""A smoothed n-gram baseline over tiktoken tokens: interpolated Kneser-Ney, exact distributions.

It answers Shannon's question for the game: how much of what people (and big models) predict is
local statistics? Spec: `ngram:/path/to/model.ngram`, built by `humanlm ngram train`.

Model (interpolated Kneser-Ney, Chen & Goodman 1998, with KenLM's treatment of the document start):
- Each document is `<|endoftext|> t_1 ... t_n <|endoftext|>`: the first <|endoftext|> plays BOS
  (the context of t_1, never predicted), the last is predicted like any token (the end of text).
- Counts a_k(g) of the k-grams g, k = 1..N, every gram ending on a predicted token:
  a_N(g) = c(g), the raw count; for k < N, a_k(g) = N1+(. g), the number of distinct tokens seen
  just before g, except for grams that start at the BOS (nothing can precede them), which keep
  their raw count c(g). The unigram of the BOS itself is not counted.
- One discount per order, D_k = n1 / (n1 + 2 n2) from the numbers of k-grams with a_k = 1 and 2
  (0.5 when n1 = 0, e.g. a corpus with no singletons).
- With h the context (the last min(N-1, i+1) tokens of BOS t_1..t_i) and h' = h without its
  first token:
      P(w | h) = max(a(h w) - D, 0) / a(h .) + D * N1+(h .) / a(h .) * P(w | h')
  where a(h .) = sum_w a(h w), N1+(h .) = #{w : a(h w) > 0} and D = D_{|h|+1}; when h was never
  seen as a context (a(h .) = 0) P(w | h) = P(w | h') (full back-off). Below the unigrams:
      P(w | ()) = max(a_1(w) - D_1, 0) / a_1(.) + D_1 * N1+(.) / a_1(.) / |V|
  uniform over the vocabulary V: every BPE token plus <|endoftext|>. The encoding's other
  special tokens (never in text) and the holes in its id space have probability 0.
- So every distribution is exact and sums to 1 over the vocabulary: entropy, log Z(T), ranks and
  the top-k come from stats.summarize_logits on log P, like a neural model's.

File (.ngram): a NumPy .npz archive (zip, read with allow_pickle=False: no code runs on load)
holding `header` (UTF-8 JSON: format, order, encoding, discounts, corpus sizes, sources),
`counts1` (a_1 per token id) and for k >= 2 `keys{k}` (sorted int64, parent * n_vocab + last
token, where parent is the row of the gram's first k-1 tokens in the (k-1)-gram table, or its
token id for k = 2) and `counts{k}` (a_k per row): a trie walked by binary search.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from .stats import DistributionSummary, summarize_logits
from .tiktoken_vocab import TiktokenTokenizer

FORMAT = "humanlm-ngram"
VERSION = 1
MAX_ORDER = 8
_CHUNK = 32  # positions summarised together (rows of n_vocab float32)


class NgramTrainError(ValueError):
    """Bad training input; the message says what to change."""


# ---------------------------------------------------------------------------------- training


def count_ngrams(
    documents: Iterable[Sequence[int]], *, order: int, n_vocab: int, bos: int,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[np.ndarray], list[float], dict]:
    """The Kneser-Ney count tables of documents given as token ids (see the module docstring).

    Returns (tables, discounts, sizes): tables[0] = a_1 per token id (uint32, n_vocab); for
    k >= 2, tables[k-1] = (keys, counts); discounts[k-1] = D_k. `progress(n)` is told of each
    document's tokens as it is read.
    """
    if not 1 <= order <= MAX_ORDER:
        raise NgramTrainError(f"the order must be between 1 and {MAX_ORDER}, not {order}")
    pieces, n_docs, n_tokens = [], 0, 0
    for ids in documents:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            continue
        pieces.append(np.concatenate(([bos], ids, [bos])))
        n_docs += 1
        n_tokens += int(ids.size)
        if progress is not None:
            progress(int(ids.size))
    if not n_docs:
        raise NgramTrainError("no text to train on (every document is empty)")
    seq = np.concatenate(pieces)
    lengths = np.array([p.size for p in pieces], dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    doc_of = np.repeat(np.arange(n_docs), lengths)
    pos = np.arange(seq.size) - starts[doc_of]  # index inside the padded document
    rem = (lengths[doc_of] - 1) - pos  # tokens after this one in the same document
    V = n_vocab

    # nodes[k][s]: row of the k-gram seq[s:s+k] in the k-gram table (k = 1: its token id), -1
    # where the window leaves its document.
    nodes: list[np.ndarray | None] = [None, seq.copy()]
    raw: list[np.ndarray | None] = [None, None]
    keys_of: list[np.ndarray | None] = [None, None]
    for k in range(2, order + 1):
        valid = rem >= k - 1
        starts_k = np.flatnonzero(valid)
        key = nodes[k - 1][starts_k] * V + seq[starts_k + k - 1]
        uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        node = np.full(seq.size, -1, dtype=np.int64)
        node[starts_k] = inverse
        nodes.append(node)
        raw.append(counts)
        keys_of.append(uniq)

    tables: list = []
    for k in range(1, order + 1):
        size = V if k == 1 else keys_of[k].size
        if k == order:  # raw counts
            if k == 1:
                counts = np.bincount(seq[pos > 0], minlength=V)
            else:
                counts = raw[k]
        else:
            # continuation counts: distinct (k+1)-grams, each adding one to its suffix k-gram
            longer = np.flatnonzero(rem >= k)  # (k+1)-windows starting at s
            first = np.unique(nodes[k + 1][longer], return_index=True)[1]
            suffix = nodes[k][longer[first] + 1]
            counts = np.bincount(suffix, minlength=size)
            if k >= 2:  # grams starting at the BOS: raw counts
                at_start = np.flatnonzero((pos == 0) & (rem >= k - 1))
                counts = counts + np.bincount(nodes[k][at_start], minlength=size)
        counts = counts.astype(np.uint32)
        tables.append(counts if k == 1 else (keys_of[k], counts))
    discounts = []
    for table in tables:
        counts = table if isinstance(table, np.ndarray) else table[1]
        n1 = int(np.count_nonzero(counts == 1))
        n2 = int(np.count_nonzero(counts == 2))
        discounts.append(n1 / (n1 + 2 * n2) if n1 else 0.5)
    return tables, discounts, {"documents": n_docs, "tokens": n_tokens}


def train(
    texts: Iterable[str], *, order: int, encoding: str, output: Path,
    sources: list[str] | None = None, progress: Callable[[int], object] | None = None,
) -> dict:
    """Tokenize `texts` with the tiktoken encoding, count, and write the model file atomically
    (a temporary file renamed into place). Returns the header written."""
    tokenizer = TiktokenTokenizer(encoding)
    documents = (tokenizer.tokenize(text) for text in texts)
    tables, discounts, sizes = count_ngrams(
        documents, order=order, n_vocab=tokenizer.n_vocab, bos=tokenizer.eot, progress=progress
    )
    header = {
        "format": FORMAT,
        "version": VERSION,
        "order": order,
        "encoding": encoding,
        "n_vocab": tokenizer.n_vocab,
        "smoothing": "interpolated Kneser-Ney",
        "discounts": discounts,
        "bos_eos": "<|endoftext|>",
        **sizes,
        "ngrams": [int(np.count_nonzero(tables[0]))] + [int(t[0].size) for t in tables[1:]],
        "sources": sources or [],
    }
    arrays = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
              "counts1": tables[0]}
    for k, (keys, counts) in enumerate(tables[1:], start=2):
        arrays[f"keys{k}"] = keys
        arrays[f"counts{k}"] = counts
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")
    with tmp.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    tmp.replace(output)
    return header


# ----------------------------------------------------------------------------------- loading


def read_header(path: Path) -> dict:
    """The header of a model file (cheap: the count tables are not read)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            header = json.loads(bytes(archive["header"]).decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ModelSpecError(f"{path} is not a humanlm n-gram model file ({exc})") from None
    if header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ModelSpecError(f"{path} is not a humanlm n-gram model file (version {VERSION})")
    return header


def resolve_path(target: str) -> Path:
    path = Path(target).expanduser()
    if not path.is_file():
        raise ModelSpecError(f"n-gram model file {path} does not exist (build one with "
                             "`humanlm ngram train`)")
    return path


class NgramTokenizer(TiktokenTokenizer):
    """The tokenizer of an n-gram model file (reads its header only)."""

    def __init__(self, spec: str) -> None:
        parsed = ModelSpec.parse(spec)
        self.path = resolve_path(parsed.target)
        self.header = read_header(self.path)
        super().__init__(self.header["encoding"])


class NgramModel(LookupsInOnePass, NgramTokenizer):
    """An n-gram model file behind the LanguageModelBackend interface."""

    draws_alternatives = True  # exact full-vocabulary distributions

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.spec = str(ModelSpec.parse(spec))
        self.name = f"{self.path.stem} ({self.header['order']}-gram {self.encoding_name})"
        self.order = int(self.header["order"])
        if self.header["n_vocab"] != self.n_vocab:
            raise ModelSpecError(f"{self.path} was built for a vocabulary of "
                                 f"{self.header['n_vocab']} tokens, not {self.n_vocab}")
        self.discounts = [float(d) for d in self.header["discounts"]]
        with np.load(self.path, allow_pickle=False) as archive:
            counts1 = archive["counts1"].astype(np.float64)
            self._keys = [None, None] + [archive[f"keys{k}"] for k in range(2, self.order + 1)]
            self._counts = [None, None] + [archive[f"counts{k}"].astype(np.float64)
                                           for k in range(2, self.order + 1)]
        self._digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        support = np.array([self.exists(i) and (i == self.eot or not self.is_control(i))
                            for i in range(self.n_vocab)])
        base = support / support.sum()
        total, seen, d1 = counts1.sum(), np.count_nonzero(counts1), self.discounts[0]
        self._unigram = np.maximum(counts1 - d1, 0) / total + d1 * seen / total * base
        self._support = support

    def settings(self) -> dict:
        h = self.header
        return {
            "backend": "ngram",
            "file": self.path.name,
            "file_sha256_prefix": self._digest,
            "order": self.order,
            "encoding": self.encoding_name,
            "smoothing": h["smoothing"],
            "discounts": self.discounts,
            "bos_eos": h["bos_eos"],
            "documents": h["documents"],
            "tokens": h["tokens"],
            "bos": True,
            "logprob_base": "e",
        }

    # --------------------------------------------------------------------------- probabilities

    def _row(self, gram: Sequence[int]) -> int | None:
        """Row of a gram in its table (a 1-gram: its token id), or None if never seen."""
        row = int(gram[0])
        for k in range(2, len(gram) + 1):
            keys = self._keys[k]
            key = row * self.n_vocab + int(gram[k - 1])
            at = int(np.searchsorted(keys, key))
            if at == keys.size or keys[at] != key:
                return None
            row = at
        return row

    def distribution(self, history: Sequence[int]) -> np.ndarray:
        """P(. | history) over the vocabulary (float64, sums to 1); `history` starts with BOS."""
        p = self._unigram.copy()
        context = list(history)[-(self.order - 1):] if self.order > 1 else []
        V = self.n_vocab
        for j in range(1, len(context) + 1):  # shortest context first
            row = self._row(context[-j:])
            if row is None:
                break  # no longer context was seen either
            keys = self._keys[j + 1]
            lo, hi = np.searchsorted(keys, [row * V, (row + 1) * V])
            if lo == hi:
                break
            words = keys[lo:hi] - row * V
            counts = self._counts[j + 1][lo:hi]
            total, discount = counts.sum(), self.discounts[j]
            p *= discount * (hi - lo) / total
            p[words] += np.maximum(counts - discount, 0) / total
        return p

    def _logits(self, history: Sequence[int]) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.distribution(history))

    def _lookup(self, logp: np.ndarray, token: int) -> tuple[float, int]:
        """Exact log-prob of a token, and its rank counted on the same float32 values that
        summarize_logits ranks (so a lookup and a stored prediction agree)."""
        as32 = logp.astype(np.float32)
        return float(logp[token]), 1 + int(np.count_nonzero(as32 > as32[token]))

    def score(self, token_ids: Sequence[int], top_k: int) -> DistributionSummary:
        return self.score_continuations(token_ids, top_k=top_k).summary

    def _summary(self, ids: list[int], top_k: int, through_end: bool, alternatives: int = 0,
                 seeds: Sequence[Sequence[int]] | None = None,
                 rows: Sequence[int] | None = None) -> DistributionSummary:
        history = [self.eot, *ids]
        if rows is None:
            rows = range(len(ids) + 1 if through_end else len(ids))
        rows = [int(r) for r in rows]
        n_rows = len(rows)
        padded = [*ids, -1]
        targets = [padded[r] for r in rows]
        parts = []
        for start in range(0, n_rows, _CHUNK):
            stop = min(start + _CHUNK, n_rows)
            logits = np.stack([self._logits(history[: rows[i] + 1]) for i in range(start, stop)])
            parts.append(summarize_logits(
                logits, targets[start:stop], top_k, alternatives=alternatives,
                seeds=None if seeds is None else seeds[start:stop],
            ))
        if not parts:
            return summarize_logits(np.zeros((0, self.n_vocab)), [], top_k)
        return DistributionSummary(*(
            None if getattr(parts[0], f) is None
            else np.concatenate([getattr(p, f) for p in parts])
            for f in DistributionSummary.__dataclass_fields__
        ))

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
        ids = [int(t) for t in token_ids]
        n = len(ids)
        continuations = continuations or {}
        lookups = list(lookups)
        if end_set is not None and end_set.shape != (self.n_vocab,):
            raise ValueError(f"end_set must be a boolean mask of {self.n_vocab} tokens")
        check_branches(n, (*continuations, *(p for p, _ in lookups), *(summary_rows or ())))
        history = [self.eot, *ids]
        summary = self._summary(ids, top_k, through_end, alternatives,
                                alternative_seeds, summary_rows) if top_k else None
        result = DocumentScores(summary, {p: [None] * len(c) for p, c in continuations.items()})
        cache: dict[int, np.ndarray] = {}

        def at(position: int) -> np.ndarray:
            if position not in cache:
                cache[position] = self._logits(history[: position + 1])
            return cache[position]

        for p, token in lookups:
            key = (int(p), int(token))
            if key not in result.lookups:
                result.lookups[key] = self._lookup(at(key[0]), key[1])
        for p, asked in continuations.items():
            for j, cont in enumerate(asked):
                cont = [int(t) for t in cont]
                if not cont:
                    raise ValueError("an empty continuation has no probability")
                steps = [at(p)] + [self._logits([*history[: p + 1], *cont[:i]])
                                   for i in range(1, len(cont))]
                looked = [self._lookup(logp, t) for logp, t in zip(steps, cont)]
                end = None
                if end_set is not None:
                    probs = self.distribution([*history[: p + 1], *cont])
                    inside = float(probs[end_set].sum())
                    end = float(np.log(inside)) if inside > 0 else float("-inf")
                result.continuations[p][j] = Continuation(
                    tuple(lp for lp, _ in looked), tuple(r for _, r in looked), end
                )
        return result

    def next_token_logprobs(self, prefix_ids: Sequence[int]) -> np.ndarray:
        return self._logits([self.eot, *prefix_ids])
