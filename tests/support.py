"""Test data and helpers shared by conftest.py and test modules (importable as `support`), and by
the screenshot scripts in tests/browser/ (importable as `tests.support`).

Kept out of conftest.py because tests/ and tests/browser/ both have a conftest module, so
`from conftest import ...` finds whichever was imported first.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server

from webapp.config import DEFAULT_MODEL
from webapp.corpus import RawDocument
from webapp.launch import humanlm_command

MODEL_SPEC = DEFAULT_MODEL
# `humanlm serve` as the console script runs it (webapp/launch.py prepares gevent first).
SERVE_COMMAND = humanlm_command("serve")
TEST_MAX_TOKENS = 128

SHORT_TEXTS = [
    RawDocument(
        title="Fox", register="story",
        text="The quick brown fox jumps over the lazy dog. It was a sunny day in the park.",
    ),
    RawDocument(
        title="Tea", register="recipe",
        text="To make a cup of tea, boil the water, add the tea bag and wait three minutes.",
    ),
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, app, host: str = "127.0.0.1") -> None:
        self.app = app
        self._server = make_server(host, 0, app, threaded=True)
        self.url = f"http://{host}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def serve_scored_demo(
    stack: ExitStack,
    db_name: str,
    n_passages: int,
    populate: Callable[[Any, Any], Any] | None = None,
) -> tuple[str, Any]:
    """Serve the real app on a free loopback port, on a temporary SQLite file (`db_name`) holding
    the first `n_passages` demo passages scored with the real model (MODEL_SPEC, top 64).

    `populate(session, tokenizer)`, if given, adds more before the app starts (and commits it:
    the session is closed afterwards). The file and the server last until `stack` closes. Returns
    the server's base URL and what `populate` returned (None without it). For the screenshot
    scripts: it loads the real model.
    """
    from webapp.app import create_app
    from webapp.cli import upgrade_database
    from webapp.corpus import demo_documents, get_or_create_corpus, import_documents
    from webapp.extensions import db
    from webapp.lm import load_model, load_tokenizer
    from webapp.predictions import score_corpus

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
    url = f"sqlite:///{tmp / db_name}"
    upgrade_database(url)
    db.configure(url)
    session = db.new_session()
    tokenizer = load_tokenizer(MODEL_SPEC)
    corpus = get_or_create_corpus(session, "demo")
    docs = demo_documents()[:n_passages]
    import_documents(session, corpus, docs, tokenizer, max_tokens=256)
    session.commit()
    print(f"scoring {len(docs)} demo passages with the real model…", flush=True)
    score_corpus(session, load_model(MODEL_SPEC, max_tokens=256, n_threads=2), top_k=64)
    extra = populate(session, tokenizer) if populate is not None else None
    session.close()
    db.dispose()

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "screenshots", "MODEL": MODEL_SPEC, "TOP_K": 64})
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = LiveServer(app).start()
    stack.callback(server.stop)
    return server.url, extra


def build_scored_test_database(url: str, tokenizer, model) -> None:
    """Migrate the database at `url`, import SHORT_TEXTS as corpus "tests" and score them (with
    four pairwise alternatives per position, so every mode of answer can be played on them)."""
    from webapp.cli import upgrade_database
    from webapp.corpus import get_or_create_corpus, import_documents
    from webapp.extensions import db
    from webapp.predictions import score_corpus

    upgrade_database(url)
    session = db.new_session()
    try:
        corpus = get_or_create_corpus(session, "tests", min_prefix_tokens=2, pairwise_alternatives=4)
        import_documents(session, corpus, SHORT_TEXTS, tokenizer, max_tokens=TEST_MAX_TOKENS)
        session.commit()
        score_corpus(session, model, top_k=64)
    finally:
        session.close()
        db.dispose()


def add_scored_corpus(app, model, tokenizer, name: str, docs, min_prefix_tokens: int) -> str:
    """Import `docs` (RawDocuments) into a new corpus `name` of the app's database and score
    them with the real model; returns the name (for tests that need passages of their own)."""
    from webapp.corpus import get_or_create_corpus, import_documents
    from webapp.extensions import db
    from webapp.predictions import score_corpus

    with app.app_context():
        session = db.new_session()
        try:
            corpus = get_or_create_corpus(session, name, min_prefix_tokens=min_prefix_tokens)
            import_documents(session, corpus, docs, tokenizer, max_tokens=TEST_MAX_TOKENS)
            session.commit()
            score_corpus(session, model, top_k=64, corpus=name)
            session.commit()
        finally:
            session.close()
    return name


def wait_for_prompt_rooms(seconds: float = 120) -> None:
    """Wait until this process's prompt rooms have finished scoring in the background: they use
    the test's database, and a thread still scoring after its test fails later, under another
    test's name."""
    from webapp.rooms.guards import prompt_queue

    deadline = time.monotonic() + seconds
    while prompt_queue.waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    assert prompt_queue.waiting == 0, "prompt rooms still scoring after the test"
