"""Test data and helpers shared by conftest.py and test modules (importable as `support`).

Kept out of conftest.py because tests/ and tests/browser/ both have a conftest module, so
`from conftest import ...` finds whichever was imported first.
"""

from __future__ import annotations

import threading

from werkzeug.serving import make_server

from webapp.corpus import RawDocument

MODEL_SPEC = "llamacpp:gemma-3-270m"
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
