"""Language-model backends behind one small interface (see base.py).

`load_model` opens a model that can score (heavy: run it in the CLI, never in a web worker);
`load_tokenizer` opens only the vocabulary (light, cached per process: web workers use it to
show players how their guess splits into tokens).
"""

from __future__ import annotations

from functools import lru_cache

from .base import (
    BackendError,
    Continuation,
    DocumentScores,
    LanguageModelBackend,
    ModelSpec,
    ModelSpecError,
    Tokenizer,
    display_text,
)
from .stats import TEMPERATURES, DistributionSummary, summarize_logits


def load_model(spec: str, *, max_tokens: int = 512, n_threads: int = 0) -> LanguageModelBackend:
    backend = ModelSpec.parse(spec).backend
    if backend == "ngram":
        from .ngram import NgramModel

        return NgramModel(spec)
    if backend == "openai":
        from .openai_compat import OpenAIModel

        return OpenAIModel(spec)
    from .llamacpp import LlamaCppModel

    return LlamaCppModel(spec, n_ctx=max_tokens + 1, n_threads=n_threads)


def set_verbose(verbose: bool) -> None:
    """Show llama.cpp's own log lines on stderr, or drop them (the default)."""
    from .llamacpp import set_verbose as set_llamacpp_verbose

    set_llamacpp_verbose(verbose)


@lru_cache(maxsize=4)
def load_tokenizer(spec: str) -> Tokenizer:
    backend = ModelSpec.parse(spec).backend
    if backend == "ngram":
        from .ngram import NgramTokenizer

        return NgramTokenizer(spec)
    if backend == "openai":
        from .openai_compat import OpenAITokenizer

        return OpenAITokenizer(spec)
    from .llamacpp import LlamaCppModel

    return LlamaCppModel(spec, vocab_only=True)


__all__ = [
    "TEMPERATURES",
    "BackendError",
    "Continuation",
    "DistributionSummary",
    "DocumentScores",
    "LanguageModelBackend",
    "ModelSpec",
    "ModelSpecError",
    "Tokenizer",
    "display_text",
    "load_model",
    "load_tokenizer",
    "set_verbose",
    "summarize_logits",
]
