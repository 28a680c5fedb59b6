"""How different models cut the same text: the game's tokenizer beside every other scored
model's and tiktoken's cl100k_base (GPT-4's), so a player or a class sees that "a token" depends
on the model.

Only tokenizers that work offline are shown: GGUF vocabularies (llamacpp:), tiktoken encodings
(ngram: models and openai: specs that name one) and cl100k_base. An openai: model whose tokens
come from its server is left out: a page must not wait on a remote server (its name is listed
under `left_out`). Loaded tokenizers are kept for the life of the process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .game import token_view
from .lm import ModelSpec, ModelSpecError, Tokenizer, load_tokenizer
from .models import LanguageModel

REFERENCE_ENCODING = "cl100k_base"
MAX_TOKENIZERS = 6  # a reveal shows a few, not every scoring run ever made

_loaded: dict[str, Tokenizer | None] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Named:
    name: str  # what a person reads: the model's name, or the encoding's
    tokenizer_id: str
    tokenizer: Tokenizer


def _reference() -> Tokenizer | None:
    from .lm.tiktoken_vocab import TiktokenTokenizer

    return _cached(f"tiktoken:{REFERENCE_ENCODING}", lambda: TiktokenTokenizer(REFERENCE_ENCODING))


def _cached(key: str, load) -> Tokenizer | None:
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = load()
            except (ModelSpecError, OSError, ValueError):
                _loaded[key] = None  # not on this machine: left out, asked once
        return _loaded[key]


def _offline_loader(spec: str):
    """How to load a model's tokenizer without its server, or None (an openai: server's own)."""
    parsed = ModelSpec.parse(spec)
    if parsed.backend == "openai":
        from .lm.openai_compat import parse_target
        from .lm.tiktoken_vocab import TiktokenTokenizer

        encoding = parse_target(parsed.target).encoding
        return (lambda: TiktokenTokenizer(encoding)) if encoding else None
    return lambda: load_tokenizer(spec)


def comparison_tokenizers(session: Session, game_name: str, game: Tokenizer) -> tuple[list[Named], list[str]]:
    """The game's tokenizer first, then one per other tokenizer among the scored models, then
    cl100k_base; each tokenizer once. Returns (shown, names of models left out)."""
    shown = [Named(game_name, game.tokenizer_id, game)]
    seen = {game.tokenizer_id}
    left_out: list[str] = []
    rows = session.execute(
        select(LanguageModel.spec, LanguageModel.name, LanguageModel.tokenizer)
        .order_by(LanguageModel.id)
    ).all()
    for spec, name, tokenizer_id in rows:
        if tokenizer_id in seen or len(shown) >= MAX_TOKENIZERS - 1:
            continue
        try:
            loader = _offline_loader(spec)
        except ModelSpecError:
            continue
        if loader is None:
            left_out.append(name)
            continue
        tokenizer = _cached(spec, loader)
        if tokenizer is not None and tokenizer.tokenizer_id not in seen:
            shown.append(Named(name, tokenizer.tokenizer_id, tokenizer))
            seen.add(tokenizer.tokenizer_id)
    reference = _reference()
    if reference is not None and reference.tokenizer_id not in seen:
        shown.append(Named(f"{REFERENCE_ENCODING} (GPT-4's tokenizer)", reference.tokenizer_id, reference))
    return shown, left_out


def cuts(text: str, tokenizers: list[Named]) -> list[dict]:
    """Each tokenizer's tokens for `text` (id and shown text), in the order given."""
    out = []
    for named in tokenizers:
        ids = named.tokenizer.tokenize(text)
        out.append({
            "name": named.name, "tokenizer": named.tokenizer_id, "n_tokens": len(ids),
            "tokens": [token_view(t, named.tokenizer) for t in ids],
        })
    return out
