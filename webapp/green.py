"""Long C work inside the gevent server (webapp/launch.py) runs in a native thread.

Why: under gevent every connection is a greenlet of one OS thread, so a call that computes for
a second in C (a llama.cpp forward pass) would stop every phone and projector for that second.
gevent's thread pool runs it on a real thread instead; llama.cpp releases the interpreter lock
while it computes, so the greenlets keep answering. In unpatched processes (threads, tests,
the job process) the calls run directly, as before.

One rule for callers: hand work to a native thread only while the session holds no open SQLite
write (commit first). A greenlet that waits with an uncommitted write would leave every other
writer of the process waiting on SQLite's lock inside C, where gevent cannot switch back to it.
(The prompt scorer commits each document; the report only reads; a dashboard upload runs
whole on the native thread, with a session of its own that commits there.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# A model's calls that run a forward pass (webapp/lm/base.py LanguageModelBackend).
FORWARD_PASSES = frozenset({"score", "logprobs_at", "score_continuations", "next_token_logprobs"})


def patched() -> bool:
    """True inside a process that gevent monkey-patched (the gevent `humanlm serve`)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def in_native_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), on one of gevent's native threads when this process is patched."""
    if not patched():
        return fn(*args, **kwargs)
    import gevent

    return gevent.get_hub().threadpool.apply(fn, args, kwargs)


class NativeThreadModel:
    """A language model whose forward passes run in_native_thread; everything else (its
    tokenizer, its name and settings) is the model's own."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._model, name)
        if name in FORWARD_PASSES and callable(attr):
            return lambda *args, **kwargs: in_native_thread(attr, *args, **kwargs)
        return attr
