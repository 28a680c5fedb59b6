"""The openai: backend against the REAL llama-cpp-python server on the embedded Gemma file.

llama-cpp-python's server is started once for the module (`python -m llama_cpp.server --model
<gemma.gguf> --logits_all true`) and its numbers are compared with the embedded backend's,
per position and for every human answer (fill_model_scores through `humanlm score --answers`,
once through a proxy that drops the connections mid-run). Its echo + logprobs path costs about
a second per token on 2 cores (it sorts the 262,144-way distribution of every position in
Python), so the texts are short. vLLM cannot run here: its replies (echo + logprobs, and
prompt_logprobs) are parsed from its documented shapes, served by a tiny scripted HTTP server,
which also tests retries; an unreachable URL is tested against a closed port.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import numpy as np
import pytest
from sqlalchemy import func, select
from support import free_port

from webapp.lm import BackendError, ModelSpec, ModelSpecError, load_model, openai_compat
from webapp.lm.llamacpp import resolve_model_path
from webapp.lm.openai_compat import OpenAIModel, parse_target

TEXT = "The quick brown fox jumps over the"
K = 5
ASKED = 64  # llama-cpp-python is asked for at least HUMANLM_TOP_K (64) log-probs: ranks up to it


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """The real llama-cpp-python OpenAI-compatible server on the Gemma GGUF."""
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    log_file = log.open("wb")  # not a pipe: llama.cpp's start-up log would fill it and block
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model_path("gemma-3-270m")),
         "--logits_all", "true", "--n_ctx", "512", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log_file, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the llama-cpp-python server did not start within 90 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


@pytest.fixture(scope="module")
def served(server_url):
    return load_model(f"openai:{server_url}#gemma-3-270m")


@pytest.fixture(scope="module")
def both(served, gemma):
    """One document scored by both backends (through_end: the row after the last token)."""
    ids = gemma.tokenize(TEXT)
    assert served.tokenize(TEXT) == ids  # the server's tokenizer is the embedded one
    remote = served.score_continuations(ids, top_k=K, through_end=True)
    local = gemma.score_continuations(ids, top_k=K, through_end=True)
    return ids, remote.summary, local.summary


def test_logprobs_agree_with_the_embedded_backend(both):
    ids, remote, local = both
    n = len(ids)
    # position 0: llama-cpp-python nulls the first echoed token's numbers: absent, not guessed
    assert math.isnan(remote.target_logprob[0]) and remote.target_rank[0] == -1
    assert (remote.top_ids[0] == -1).all()
    np.testing.assert_allclose(remote.target_logprob[1:n], local.target_logprob[1:n], atol=1e-3)
    np.testing.assert_array_equal(remote.top_ids[1:], local.top_ids[1:])  # incl. the end row
    np.testing.assert_allclose(remote.top_logprobs[1:], local.top_logprobs[1:], atol=1e-3)
    # ranks: exact within the log-probs asked for, "beyond k" (-1) otherwise; never estimated
    for i in range(1, n):
        expected = local.target_rank[i] if local.target_rank[i] <= ASKED else -1
        assert remote.target_rank[i] == expected, i
    assert (remote.target_rank[1:n] == -1).any() and (remote.target_rank[1:n] >= 1).any()
    assert remote.target_rank[n] == 0  # the row after the last token has no target
    # " over" after "The quick brown fox jumps": the FACTS figure
    over = ids.index(1024) if 1024 in ids else None
    assert over is not None and math.exp(remote.target_logprob[over]) == pytest.approx(0.88, abs=0.02)


def test_entropy_and_logz_are_absent_and_the_settings_say_top_k_only(both, served):
    _ids, remote, _local = both
    assert np.isnan(remote.entropy).all() and np.isnan(remote.logz).all()
    settings = served.settings()
    assert settings["top_k_only"] is True and settings["server"] == "llama-cpp-python"
    assert "entropy" in settings["absent"] and "logz" in settings["absent"]
    assert not any("key" in name for name in settings)
    with pytest.raises(BackendError, match="only the top-k"):
        served.next_token_logprobs([818])


def test_a_token_outside_the_document_is_looked_up_exactly(served, gemma):
    """logit_bias makes the server generate the token; its log-prob is the unbiased one."""
    ids = gemma.tokenize("The quick brown fox")
    brown = gemma.tokenize(" brown")[0]
    over = gemma.tokenize(" over")[0]
    got = served.logprobs_at(ids, [(4, brown), (4, over)])
    expected = gemma.next_token_logprobs(ids)  # the prefix alone: the same evaluation shape
    assert got[0][0] == pytest.approx(expected[brown], abs=1e-3)
    assert got[0][1] == -1  # far outside the top-k: beyond k
    assert got[1][0] == pytest.approx(expected[over], abs=1e-3)
    rank = 1 + int(np.count_nonzero(expected > expected[over]))
    assert got[1][1] == (rank if rank <= 64 else -1)  # lookups ask for HUMANLM_TOP_K (64)


def test_score_command_stores_absent_numbers_as_null(app, server_url, gemma):
    from webapp.extensions import db
    from webapp.models import LanguageModel, Prediction

    runner = app.test_cli_runner()
    spec = f"openai:{server_url}#gemma-3-270m"
    with app.app_context():
        from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
        from webapp.lm import load_tokenizer

        corpus = get_or_create_corpus(db.session, "tiny", min_prefix_tokens=0)
        # texts sharing no first token with each other or the earlier requests: the server
        # reuses the cache of a prefix shared with its previous request, and evaluating the rest
        # as a batch of its own moves the numbers by up to ~0.08 nats (llama.cpp's batch noise)
        import_documents(db.session, corpus, [RawDocument("Cats sat down."),
                                              RawDocument("Dogs ran.")],
                         load_tokenizer(app.config["MODEL"]), max_tokens=64)
        db.session.commit()
    result = runner.invoke(args=["score", "--model", spec, "--corpus", "tiny", "--top-k", str(K)])
    assert result.exit_code == 0, result.output
    ids = gemma.tokenize("Cats sat down.")
    local = gemma.score(ids, K)
    with app.app_context():
        row = db.session.scalar(select(LanguageModel).where(LanguageModel.spec == spec))
        assert row.settings["top_k_only"] is True
        stored = db.session.scalars(select(Prediction).where(Prediction.model_id == row.id))
        rows = {p.item.position: p for p in stored if p.item.document.text.startswith("Cats")}
        assert sorted(rows) == list(range(1, len(ids)))  # position 0 absent
        n_dog = len(gemma.tokenize("Dogs ran."))
        assert db.session.scalar(select(func.count(Prediction.id)).where(
            Prediction.model_id == row.id)) == len(ids) - 1 + n_dog - 1
        for position, prediction in rows.items():
            assert prediction.entropy is None and prediction.logz is None
            assert prediction.target_logprob == pytest.approx(local.target_logprob[position],
                                                              abs=1e-3)
            rank = int(local.target_rank[position])
            assert prediction.target_rank == (rank if rank <= ASKED else None)
            assert [t[0] for t in prediction.top_k] == local.top_ids[position].tolist()
    listed = runner.invoke(args=["models"])
    assert f"{spec}  (top-k {K})" in listed.output
    assert "computes: top-k log-probs only: no entropy or log Z" in listed.output
    assert "corpora scored: tiny (2 documents)" in listed.output


# ------------------------------------------------------- every answer under the server's model

CATS, DOGS = "Cats sat on the mat.", "Dogs ran."
# (document, item position, mode, answer): a token of the document, a guess looked up through
# logit_bias, a two-token answer (its own echo), a word (needs the full distribution: NULL), an
# answer at the first position (llama-cpp-python gives no numbers there: NULL)
SERVED_ANSWERS = [(CATS, 3, "token", " the"), (CATS, 3, "token", "floor"), (CATS, 4, "word", "mat"),
                  (DOGS, 0, "token", "Birds"), (DOGS, 1, "token", " barked"),
                  (DOGS, 2, "word", "away")]
NOISE = 0.1  # nats: llama.cpp's batch-shape noise (see test_answers_agree_with_the_embedded_backend)


class CuttingProxy(BaseHTTPRequestHandler):
    """Passes every request on to the real server until a completion's prompt begins with
    `cut_at`; from then on it closes every connection without an answer (the server is gone)."""

    upstream: ClassVar[str] = ""
    cut_at: ClassVar[str | None] = None
    cut: ClassVar[bool] = False

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        prompt = json.loads(raw).get("prompt") if raw else None
        cls = type(self)
        if cls.cut_at and self.path.endswith("/completions") and isinstance(prompt, str) \
                and prompt.startswith(cls.cut_at):
            cls.cut = True
        if cls.cut:
            self.close_connection = True  # no answer at all
            return
        got = httpx.request(self.command, cls.upstream + self.path, content=raw or None,
                            headers={"content-type": "application/json"}, timeout=300)
        self.send_response(got.status_code)
        self.send_header("content-type", got.headers.get("content-type", "application/json"))
        self.send_header("content-length", str(len(got.content)))
        self.end_headers()
        self.wfile.write(got.content)

    do_GET = do_POST = _forward

    def log_message(self, *args) -> None:
        pass


def _model_rows(session, spec: str) -> tuple[dict, dict]:
    """{guess id: answer row} and {item id: item row} (as dicts) of the model with this spec."""
    from webapp.models import AnswerModelScore, ItemModelScore, LanguageModel

    model_id = session.scalar(select(LanguageModel.id).where(LanguageModel.spec == spec))

    def columns(row) -> dict:
        return {c.key: getattr(row, c.key) for c in row.__table__.columns}

    answers = {a.guess_id: columns(a) for a in session.scalars(
        select(AnswerModelScore).where(AnswerModelScore.model_id == model_id))}
    items = {i.item_id: columns(i) for i in session.scalars(
        select(ItemModelScore).where(ItemModelScore.model_id == model_id))}
    return answers, items


@pytest.fixture(scope="module")
def answers_through_the_server(server_url, gemma, tmp_path_factory):
    """Two short documents (imported with Gemma's tokenizer) and SERVED_ANSWERS, filled by
    `humanlm score --model openai:... --answers` through a proxy to the real server that drops
    every connection once the second document's requests begin (HUMANLM_OPENAI_RETRIES=2),
    then again with the proxy passing everything; then filled by the embedded backend
    (fill_model_scores) in the same database. Everything the tests look at is read out here:
    the app's database is global, so no app outlives this fixture."""
    from datetime import UTC, datetime

    from webapp.app import create_app
    from webapp.cli import upgrade_database
    from webapp.corpus import RawDocument, get_or_create_corpus, import_documents
    from webapp.extensions import db
    from webapp.models import Document, Guess, Item, Player
    from webapp.predictions import fill_model_scores

    path = tmp_path_factory.mktemp("served-answers") / "answers.db"
    upgrade_database(f"sqlite:///{path}")
    app = create_app({"DATABASE_URL": f"sqlite:///{path}", "TESTING": True, "SECRET_KEY": "test",
                      "MODEL": gemma.spec, "MAX_DOCUMENT_TOKENS": 64, "TOP_K": ASKED,
                      "ROOM_ANSWER_BATCH_MS": 0})
    CuttingProxy.upstream = server_url.removesuffix("/v1")
    CuttingProxy.cut_at, CuttingProxy.cut = DOGS[:4], False
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), CuttingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    spec = f"openai:http://127.0.0.1:{proxy.server_address[1]}/v1#gemma-3-270m"
    out: dict = {"spec": spec}
    try:
        with app.app_context():
            session = db.session
            corpus = get_or_create_corpus(session, "two", min_prefix_tokens=0)
            import_documents(session, corpus, [RawDocument(CATS), RawDocument(DOGS)], gemma,
                             max_tokens=64)
            docs = {d.text: d for d in session.scalars(select(Document))}
            for n, (text, position, mode, answer) in enumerate(SERVED_ANSWERS):
                item = next(it for it in docs[text].items if it.position == position)
                ids = gemma.tokenize(answer if mode == "token" else " " + answer)
                session.add(Player(id=f"p{n}"))
                session.flush()
                session.add(Guess(client_key=f"g{n}", player_id=f"p{n}", item_id=item.id,
                                  raw_text=answer, token_ids=ids, first_token_id=ids[0],
                                  multi_token=len(ids) > 1, is_correct=False, match_rule="none",
                                  mode=mode, server_received_at=datetime.now(UTC)))
            session.commit()
            out["guesses"] = {g.id: (g.item.document.text, g.item.position, g.mode, g.raw_text)
                              for g in session.scalars(select(Guess))}
            out["items"] = {i.id: (i.document.text, i.position) for i in session.scalars(
                select(Item).where(Item.id.in_(select(Guess.item_id))))}
        runner = app.test_cli_runner()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HUMANLM_OPENAI_RETRIES", "2")
            patch.setattr(openai_compat, "RETRY_WAIT_SECONDS", (0.01, 0.02))
            out["cut"] = runner.invoke(args=["score", "--model", spec, "--answers"])
            with app.app_context():
                out["after_cut"] = _model_rows(db.session, spec)
            CuttingProxy.cut_at, CuttingProxy.cut = None, False
            out["rerun"] = runner.invoke(args=["score", "--model", spec, "--answers"])
        with app.app_context():
            fill_model_scores(db.session, gemma, top_k=ASKED)
            out["served"] = _model_rows(db.session, spec)
            out["embedded"] = _model_rows(db.session, gemma.spec)
    finally:
        proxy.shutdown()
        proxy.server_close()
        db.dispose()
    return out


def test_a_server_dropping_mid_run_keeps_the_documents_finished_before(answers_through_the_server):
    """The proxy drops every connection when the second document's requests begin: a clear
    error, exit 1, the first document's answers and items all stored and nothing of the second;
    the re-run fills only the second and leaves the first document's rows as they were."""
    got = answers_through_the_server
    cut = got["cut"]
    assert cut.exit_code == 1 and "Traceback" not in cut.output
    assert "Error: cannot reach" in cut.output and "gave up after 2 attempts" in cut.output
    answers, items = got["after_cut"]
    assert set(answers) == {g for g, (text, *_rest) in got["guesses"].items() if text == CATS}
    assert set(items) == {i for i, (t, _p) in got["items"].items() if t == CATS} and items
    rerun = got["rerun"]
    assert rerun.exit_code == 0, rerun.output
    assert "3 answers and 3 items filled in 1 documents" in rerun.output
    assert "3 answers had them already" in rerun.output
    served_answers, served_items = got["served"]
    assert set(served_answers) == set(got["guesses"]) and set(served_items) == set(got["items"])
    assert all(served_answers[g] == row for g, row in answers.items())  # untouched
    assert all(served_items[i] == row for i, row in items.items())


def test_answers_agree_with_the_embedded_backend(answers_through_the_server, gemma):
    """Every answer's and item's row through the server against the embedded backend's, the
    same Gemma file: log-probs within llama.cpp's batch-shape noise, 0.1 nats (the server
    evaluates the tail of a prompt after the prefix it shares with the request before as a
    batch of its own). Measured: here at most 4.6e-7 nats over the 8 log-probs compared
    (answers, first tokens; the items' equal too), whether this file runs alone or whole; with
    a longer first document ("Cats sat on the warm mat all day.") "floor", looked up through
    logit_bias after "Cats sat on", was 0.031 nats off and a two-token answer 0.0014. Ranks
    where the server's own log-prob places the token in the embedded distribution (within
    that noise). What the server cannot know is NULL: entropy (top-k only), word log-probs and
    end terms, and everything at the first position (llama-cpp-python nulls it)."""
    got = answers_through_the_server
    served_answers, served_items = got["served"]
    embedded_answers, embedded_items = got["embedded"]
    deltas = []
    for guess_id, (text, position, mode, answer) in got["guesses"].items():
        served, embedded = served_answers[guess_id], embedded_answers[guess_id]
        assert served["same_tokenizer"] and embedded["same_tokenizer"]
        assert served["n_tokens"] == embedded["n_tokens"] > 0
        assert served["end_logprob"] is None and (mode == "word") == (embedded["end_logprob"] is
                                                                     not None)
        if position == 0:  # no numbers from llama-cpp-python at the first position
            assert served["logprob"] is None and served["first_token_logprob"] is None
            assert served["first_token_rank"] is None and embedded["logprob"] is not None
            continue
        if mode == "word":  # the word's end term needs the full distribution
            assert served["logprob"] is None and embedded["logprob"] is not None
        else:
            deltas.append(abs(served["logprob"] - embedded["logprob"]))
        first = served["first_token_logprob"]
        deltas.append(abs(first - embedded["first_token_logprob"]))
        ids = gemma.tokenize(text)
        full = np.asarray(gemma.next_token_logprobs(ids[:position]), dtype=np.float64)
        highest = 1 + int(np.count_nonzero(full > first + NOISE))
        lowest = 1 + int(np.count_nonzero(full > first - NOISE))
        rank = served["first_token_rank"]
        if rank is None:  # beyond the 64 asked for, never estimated
            assert lowest > ASKED, answer
        else:
            assert highest <= rank <= lowest, answer
    assert max(deltas) <= NOISE, deltas
    ranks = {got["guesses"][g][3]: a["first_token_rank"] for g, a in served_answers.items()}
    assert ranks[" the"] == 1 and ranks["floor"] is None  # "floor" is far beyond the top 64
    for item_id, (text, position) in got["items"].items():
        served, embedded = served_items[item_id], embedded_items[item_id]
        assert served["entropy"] is None and embedded["entropy"] is not None
        assert served["target_word_logprob"] is None and served["target_word_end_logprob"] is None
        assert served["target_n_tokens"] == embedded["target_n_tokens"] == 1
        if position == 0:
            assert served["target_logprob"] is None and served["top1_text"] is None
            assert served["top1_starts_word"] is None
            continue
        assert served["target_logprob"] == pytest.approx(embedded["target_logprob"], abs=NOISE)
        assert served["top1_text"] == embedded["top1_text"]
        assert served["top1_starts_word"] == embedded["top1_starts_word"]
    rerun = got["rerun"].output
    assert "answers have no log-prob" in rerun and "a number this backend cannot give" in rerun


# --------------------------------------------------------------------------------- errors


def test_unreachable_server_is_a_clear_error(app):
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match="cannot reach"):
        load_model(f"openai:{url}#some-model")
    result = app.test_cli_runner().invoke(args=["score", "--model", f"openai:{url}#m"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "Error:" in result.output and "cannot reach" in result.output


@pytest.mark.parametrize("target, message", [
    ("http://h:1/v1", "names the model after '#'"),
    ("http://h:1/v1#", "names the model after '#'"),
    ("ftp://h/v1#m", "not an http(s) URL"),
    ("http://h:1/v1#m;colour=red", "unknown option"),
])
def test_bad_specs(target, message):
    with pytest.raises(ModelSpecError, match=re.escape(message)):
        ModelSpec.parse(f"openai:{target}")


def test_spec_with_an_encoding():
    parsed = parse_target("https://api.example.com/v1#davinci-002;encoding=cl100k_base")
    assert parsed.base_url == "https://api.example.com/v1" and parsed.model == "davinci-002"
    assert parsed.encoding == "cl100k_base" and parsed.root == "https://api.example.com"


class Scripted(BaseHTTPRequestHandler):
    """Answers from a script: path -> list of (status, body); the last entry repeats."""

    script: ClassVar[dict[str, list[tuple[int, dict]]]] = {}
    hits: ClassVar[dict[str, int]] = {}
    seen: ClassVar[list[dict]] = []
    delay: ClassVar[float] = 0.0  # seconds each completion takes
    in_flight: ClassVar[list[int]] = [0, 0]  # now, most at once
    lock = threading.Lock()

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length)) if length else {}
        type(self).seen.append({"path": self.path, "body": body,
                                "auth": self.headers.get("authorization")})
        n = type(self).hits.get(self.path, 0)
        type(self).hits[self.path] = n + 1
        answers = type(self).script.get(self.path)
        if not answers:
            self.send_response(404)
            self.end_headers()
            return
        if callable(answers):  # an answer computed from the request
            status, payload = answers(body)
        else:
            status, payload = answers[min(n, len(answers) - 1)]
        if self.path == "/v1/completions" and type(self).delay:
            with self.lock:
                self.in_flight[0] += 1
                self.in_flight[1] = max(self.in_flight)
            time.sleep(type(self).delay)
            with self.lock:
                self.in_flight[0] -= 1
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch):
    monkeypatch.setattr(openai_compat, "RETRY_WAIT_SECONDS", (0.01, 0.02))
    Scripted.script, Scripted.hits, Scripted.seen = {}, {}, []
    Scripted.delay, Scripted.in_flight = 0.0, [0, 0]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ECHO = {"choices": [{"text": "ab", "logprobs": {
    "tokens": ["a", "b"], "token_logprobs": [None, -0.5],
    "top_logprobs": [None, {"b": -0.5, "c": -1.5}], "text_offset": [0, 1]}}]}


def test_429_and_500_are_retried(scripted, monkeypatch):
    monkeypatch.setenv("HUMANLM_OPENAI_API_KEY", "sk-test")
    Scripted.script = {
        "/extras/tokenize": [(200, {"tokens": [1]})],
        "/extras/detokenize": [(200, {"text": "a"})],
        "/v1/models": [(200, {"data": [{"id": "m"}]})],
        "/v1/completions": [(500, {"error": "boom"}), (503, {"error": "busy"}), (200, ECHO)],
    }
    model = OpenAIModel(f"openai:{scripted}/v1#m")
    Scripted.script["/extras/tokenize"] = [(429, {}), (200, {"tokens": [1, 7]})]
    Scripted.hits["/extras/tokenize"] = 0
    assert model.tokenize("b") == [7]
    assert Scripted.hits["/extras/tokenize"] == 2
    summary = model.score([5, 7], top_k=2)
    assert Scripted.hits["/v1/completions"] == 3
    assert summary.target_logprob[1] == -0.5 and summary.target_rank[1] == 1
    completion = [s for s in Scripted.seen if s["path"] == "/v1/completions"][-1]
    assert completion["body"]["max_tokens"] == 1 and completion["body"]["echo"] is True
    assert completion["auth"] == "Bearer sk-test"


def test_a_storm_of_429_gives_up_with_a_clear_error(scripted, monkeypatch):
    monkeypatch.setenv("HUMANLM_OPENAI_RETRIES", "3")
    Scripted.script = {
        "/extras/tokenize": [(200, {"tokens": [1]})],
        "/extras/detokenize": [(200, {"text": "ab"})],
        "/v1/models": [(200, {"data": [{"id": "m"}]})],
        "/v1/completions": [(429, {"error": "rate limited"})],
    }
    model = OpenAIModel(f"openai:{scripted}/v1#m")
    with pytest.raises(BackendError, match=r"HTTP 429.*gave up after 3 attempts"):
        model.score([5, 7], top_k=2)
    assert Scripted.hits["/v1/completions"] == 3


def test_a_server_without_prompt_logprobs_is_a_clear_error(scripted):
    Scripted.script = {
        "/extras/tokenize": [(200, {"tokens": [1]})],
        "/extras/detokenize": [(200, {"text": "ab"})],
        "/v1/models": [(200, {"data": [{"id": "m"}]})],
        "/v1/completions": [(200, {"choices": [{"text": "x", "logprobs": None}]})],
    }
    model = OpenAIModel(f"openai:{scripted}/v1#m")
    with pytest.raises(BackendError, match="returned no log-probabilities"):
        model.score([5, 7], top_k=2)


@pytest.mark.parametrize("probe", ["ignored", "refused"])
def test_vllm_without_prompt_logprobs_is_scored_with_echo(scripted, probe):
    """A vLLM older than 0.5.5 (its documented echo shapes): the start-up probe finds no
    prompt_logprobs (the field ignored, or refused with HTTP 400 as extra fields once were), so
    documents go through echo + logprobs: /tokenize, prompts as token ids, BOS echoed first
    with a null, return_tokens_as_token_ids keys, k+1 entries, ranks beyond k absent."""
    echo = {"choices": [{"text": "", "logprobs": {
        "tokens": ["token_id:1", "token_id:5", "token_id:7", "token_id:9"],
        "token_logprobs": [None, -2.0, -3.0, -0.1],
        "top_logprobs": [None,
                         {"token_id:5": -2.0, "token_id:6": -0.2},
                         {"token_id:8": -0.1, "token_id:4": -1.0, "token_id:7": -3.0},
                         {"token_id:9": -0.1, "token_id:3": -2.5}],
        "text_offset": [0, 0, 1, 2]}}]}
    refusal = {"object": "error", "message": "Extra inputs are not permitted", "code": 400}

    def completion(body):
        if "prompt_logprobs" in body and probe == "refused":
            return 400, refusal
        return 200, echo

    Scripted.script = {
        "/tokenize": [(200, {"tokens": [1], "count": 1, "max_model_len": 4096})],
        "/v1/models": [(200, {"data": [{"id": "meta-llama/Llama-3.1-8B"}]})],
        "/v1/completions": completion,
    }
    model = OpenAIModel(f"openai:{scripted}/v1#meta-llama/Llama-3.1-8B")
    assert model.server == "vllm" and model.bos == 1 and model.prompt_logprobs is False
    assert model.settings()["request"] == "echo + logprobs"
    assert "ranks beyond the top-k" in model.settings()["absent"]
    summary = model.score_continuations([5, 7], top_k=2, through_end=True).summary
    probe_body, body = [s["body"] for s in Scripted.seen if s["path"] == "/v1/completions"]
    assert probe_body["prompt"] == [1] and probe_body["prompt_logprobs"] == 1
    assert body["prompt"] == [1, 5, 7] and body["return_tokens_as_token_ids"] is True
    assert body["echo"] is True and "prompt_logprobs" not in body
    assert summary.target_logprob.tolist()[:2] == [-2.0, -3.0]
    assert summary.target_rank.tolist() == [2, -1, 0]  # 7 was the added (k+1)-th entry
    assert summary.top_ids.tolist() == [[6, 5], [8, 4], [9, 3]]


# vLLM's prompt_logprobs, from its protocol (vllm/entrypoints/openai/completion/protocol.py,
# CompletionResponseChoice.prompt_logprobs: list[dict[int, Logprob] | None]; vllm/logprobs.py,
# Logprob: logprob, rank, decoded_token; JSON object keys are strings): one entry per prompt
# token, the first null; each holds the prompt token itself with its rank in the whole
# vocabulary, and the top-k with ranks 1..k. Here a made-up character-level model (token id =
# code point, BOS 1): every position's top-2 is "a" then "z"; the prompt token's own numbers:
VLLM = "meta-llama/Llama-3.1-8B"
OWN = {"a": (-0.1, 1), "b": (-6.0, 27), "c": (-2.0, 3)}  # (logprob, rank); others OTHER
OTHER = (-9.0, 500)
TOP = [(ord("a"), -0.1), (ord("z"), -1.5)]


def vllm_reply(body: dict) -> dict:
    """vLLM's answer to a completion with `prompt_logprobs: k` and `logprobs: k` (one token
    generated, its top-k keyed "token_id:N" as asked by return_tokens_as_token_ids)."""
    prompt, k = body["prompt"], body["prompt_logprobs"]
    entries: list = [None]
    for token in prompt[1:]:
        logprob, rank = OWN.get(chr(token), OTHER)
        entry = {str(token): {"logprob": logprob, "rank": rank, "decoded_token": chr(token)}}
        entry.update({str(t): {"logprob": lp, "rank": r, "decoded_token": chr(t)}
                      for r, (t, lp) in enumerate(TOP[:k], start=1)})
        entries.append(entry)
    generated = None if body.get("logprobs") is None else {
        "text_offset": [0], "token_logprobs": [TOP[0][1]], "tokens": [f"token_id:{TOP[0][0]}"],
        "top_logprobs": [{f"token_id:{t}": lp for t, lp in TOP[: body["logprobs"]]}]}
    return {"id": "cmpl-1", "object": "text_completion", "created": 0, "model": VLLM,
            "choices": [{"index": 0, "text": chr(TOP[0][0]), "logprobs": generated,
                         "finish_reason": "length", "stop_reason": None,
                         "prompt_logprobs": entries}],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1,
                      "total_tokens": len(prompt) + 1}}


def vllm_script(completion, *, bos: bool = True) -> dict:
    """A vLLM server with the character-level tokenizer (/tokenize, /detokenize)."""
    first = [1] if bos else []
    return {
        "/tokenize": lambda body: (200, {"tokens": first + [ord(c) for c in body["prompt"]],
                                         "count": len(body["prompt"]) + len(first),
                                         "max_model_len": 4096}),
        "/detokenize": lambda body: (200, {"prompt": "".join(map(chr, body["tokens"]))}),
        "/v1/models": [(200, {"data": [{"id": VLLM}]})],
        "/v1/completions": completion,
    }


def _completions() -> list[dict]:
    return [s["body"] for s in Scripted.seen if s["path"] == "/v1/completions"]


@pytest.mark.parametrize("bos", [True, False])
def test_vllm_prompt_logprobs_give_exact_ranks_beyond_k(scripted, bos):
    """vLLM is asked for prompt_logprobs (probed once at start): the target's rank is the one
    the server states, beyond k too (27 for "b", absent through echo + logprobs); a stated
    k+1 is read as beyond k; token ids come from the keys; the first entry (null) has no
    prediction: with a BOS it is the BOS's, without one the first document token is absent.
    A guess is looked up as the last token of a prompt, its rank exact too (no logit_bias)."""
    Scripted.script = vllm_script(lambda body: (200, vllm_reply(body)), bos=bos)
    model = OpenAIModel(f"openai:{scripted}/v1#{VLLM}")
    assert model.server == "vllm" and model.prompt_logprobs is True
    probe, = _completions()
    assert probe["prompt_logprobs"] == 1 and probe["prompt"] == ([1] if bos else [ord("a")])
    settings = model.settings()
    assert settings["request"] == "prompt_logprobs (exact ranks)" and settings["top_k_only"]
    assert "rank" not in settings["absent"] and "entropy" in settings["absent"]
    ids = model.tokenize("abc")
    assert ids == [97, 98, 99]
    summary = model.score_continuations(ids, top_k=2, through_end=True).summary
    body = _completions()[-1]
    assert body["prompt"] == [1] * bos + ids and body["prompt_logprobs"] == 2
    assert body["logprobs"] == 2 and body["echo"] is False and body["max_tokens"] == 1
    assert body["return_tokens_as_token_ids"] is True and "logit_bias" not in body
    logprobs, ranks = summary.target_logprob.tolist(), summary.target_rank.tolist()
    # "a" within the top-k: 1; "b" beyond k, exact: 27; "c" stated k+1 = 3: beyond k (-1);
    # the row after the last token (the generated token's top-k) has no target (0)
    assert ranks[1:] == [27, -1, 0] and logprobs[1:3] == [-6.0, -2.0]
    assert summary.top_ids.tolist()[1:] == [[97, 122]] * 3
    assert np.isnan(summary.entropy).all() and np.isnan(summary.logz).all()
    if bos:
        assert ranks[0] == 1 and logprobs[0] == -0.1 and summary.top_ids[0].tolist() == [97, 122]
    else:  # the first prompt token's entry is null: nothing known, nothing made up
        assert ranks[0] == -1 and math.isnan(logprobs[0]) and (summary.top_ids[0] == -1).all()
    guessed = model.logprobs_at(ids, [(1, ord("b")), (2, ord("q"))])
    assert guessed == [(-6.0, 27), (OTHER[0], OTHER[1])]  # "q": rank 500, from its own prompt
    body = _completions()[-1]
    assert body["prompt"] == [1] * bos + [97, 98, ord("q")] and "logit_bias" not in body
    # the probe, the document, the look-ups' own pass ("b" read off it), the guess
    assert len(_completions()) == 4


def _drop_prompt_logprobs(choice: dict) -> None:
    del choice["prompt_logprobs"]


@pytest.mark.parametrize("break_reply, message", [
    (_drop_prompt_logprobs, "returned prompt_logprobs with None for a prompt of 4 tokens"),
    (lambda choice: choice["prompt_logprobs"].pop(), "with 3 entries for a prompt of 4 tokens"),
    (lambda choice: choice["prompt_logprobs"][2].pop("98"),
     "at prompt token 2: no entry for the prompt token itself (98)"),
    (lambda choice: choice["prompt_logprobs"][1].update({"a": {"logprob": -1.0}}),
     "at prompt token 1: the key 'a' is not a token id"),
    (lambda choice: choice["prompt_logprobs"][3]["99"].pop("logprob"),
     "at prompt token 3: token 99 has no numeric logprob"),
    (lambda choice: choice["prompt_logprobs"][1]["97"].update(rank="1"),
     "at prompt token 1: token 97 has the rank '1'"),
    (lambda choice: choice["prompt_logprobs"].__setitem__(2, None),
     "at prompt token 2: None is not a dict of token ids"),
])
def test_a_malformed_prompt_logprobs_reply_is_a_clear_error(scripted, break_reply, message):
    def completion(body):
        reply = vllm_reply(body)
        if len(body["prompt"]) > 1:  # (the probe's reply is whole)
            break_reply(reply["choices"][0])
        return 200, reply

    Scripted.script = vllm_script(completion)
    model = OpenAIModel(f"openai:{scripted}/v1#{VLLM}")
    with pytest.raises(BackendError, match=re.escape(message)):
        model.score([97, 98, 99], top_k=2)


def test_more_log_probs_than_vllm_allows_says_how_to_start_it(scripted):
    """vLLM refuses more than --max-logprobs (20 by default) log-probs per position."""
    def completion(body):
        if body["prompt_logprobs"] > 20:
            return 400, {"object": "error", "type": "BadRequestError", "code": 400, "message":
                         f"Requested prompt logprobs of {body['prompt_logprobs']}, which is "
                         "greater than max allowed: 20"}
        return 200, vllm_reply(body)

    Scripted.script = vllm_script(completion)
    model = OpenAIModel(f"openai:{scripted}/v1#{VLLM}")
    assert model.score([97, 98], top_k=20).target_rank.tolist() == [1, 27]
    with pytest.raises(BackendError, match=r"max allowed: 20.*start it with --max-logprobs 64"):
        model.score([97, 98], top_k=64)


def test_a_malformed_vllm_reply_stores_nothing(app, scripted, tmp_path):
    """`humanlm score` on a vLLM whose prompt_logprobs hold a null after the first entry:
    exit 1 with the reason, no prediction and no document marked scored; with whole replies
    the predictions are stored with the ranks vLLM states, beyond the top-k too."""
    from webapp.extensions import db
    from webapp.models import Prediction, ScoredDocument

    whole = {"replies": False}

    def completion(body):
        reply = vllm_reply(body)
        if not whole["replies"] and len(body["prompt"]) > 1:
            reply["choices"][0]["prompt_logprobs"][-1] = None
        return 200, reply

    Scripted.script = vllm_script(completion)
    spec = f"openai:{scripted}/v1#{VLLM}"
    app.config["MODEL"] = spec
    runner = app.test_cli_runner()
    for i, text in enumerate(["abcab", "cabba"]):
        path = tmp_path / f"{i}.txt"
        path.write_text(text)
        assert runner.invoke(args=["corpus", "import", str(path)]).exit_code == 0
    result = runner.invoke(args=["score", "--model", spec, "--top-k", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "malformed prompt_logprobs at prompt token 5: None is not a dict" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count(Prediction.id))) == 0
        assert db.session.scalar(select(func.count(ScoredDocument.document_id))) == 0
    whole["replies"] = True
    result = runner.invoke(args=["score", "--model", spec, "--top-k", "2"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        predictions = db.session.scalars(select(Prediction)).all()
        assert len(predictions) == 10  # every position of both documents (BOS first)
        for p in predictions:
            logprob, rank = OWN[chr(p.item.token_id)]
            assert p.target_logprob == logprob and p.entropy is None and p.logz is None
            assert p.target_rank == (None if rank == 3 else rank)  # 3 = k+1: beyond k
            assert [t[0] for t in p.top_k] == [97, 122]


def test_documents_are_scored_ahead_with_bounded_concurrency(scripted, monkeypatch):
    monkeypatch.setenv("HUMANLM_OPENAI_CONCURRENCY", "3")
    Scripted.script = {
        "/extras/tokenize": [(200, {"tokens": [1]})],
        "/extras/detokenize": [(200, {"text": "ab"})],
        "/v1/models": [(200, {"data": [{"id": "m"}]})],
        "/v1/completions": [(200, ECHO)],
    }
    Scripted.delay = 0.3
    model = OpenAIModel(f"openai:{scripted}/v1#m")
    documents = [[5, 7], [5, 8], [5, 9], [6, 7], [6, 8], [6, 9], [7, 7], [7, 8]]
    model.score_ahead(documents, 2)
    for ids in documents:
        assert model.score(ids, top_k=2).target_logprob[1] == -0.5
    assert Scripted.hits["/v1/completions"] == len(documents)  # each once, none twice
    # Three requests were in flight together (the delay holds each open), never more: the
    # setting is honoured without timing anything (speed belongs in benchmarks/).
    assert Scripted.in_flight[1] == 3


def test_fill_guesses_through_the_server(app, server_url, gemma, tmp_path):
    """Imported answers get their first token's exact log-prob from the server (logit_bias
    look-ups); a rank beyond the top-k is stored as NULL, never made up."""
    from webapp.extensions import db
    from webapp.models import Guess

    path = tmp_path / "norms.csv"
    path.write_text("context,response,target\nThe capital of France is,London,Paris\n"
                    "The capital of France is,banana,Paris\n")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["import-responses", str(path), "--mode", "token", "--no-score"])
    assert result.exit_code == 0, result.output
    spec = f"openai:{server_url}#gemma-3-270m"
    result = runner.invoke(args=["score", "--model", spec, "--fill-guesses"])
    assert result.exit_code == 0, result.output
    assert "Filled exact model log-probs for 2 guesses" in result.output
    context = gemma.tokenize("The capital of France is")
    expected = gemma.next_token_logprobs(context)
    with app.app_context():
        guesses = db.session.scalars(select(Guess).order_by(Guess.id)).all()
        for guess in guesses:
            token = guess.first_token_id
            assert guess.model_logprob == pytest.approx(expected[token], abs=1e-3)
            rank = 1 + int(np.count_nonzero(expected > expected[token]))
            assert guess.model_rank == (rank if rank <= 64 else None)
        assert any(g.model_rank is None for g in guesses)  # " banana" is far outside the top 64


def test_a_server_that_drops_mid_run_stores_nothing_half_done(app, scripted, monkeypatch,
                                                              tmp_path):
    """Scoring stops with a clear error when the server goes away; every document marked
    scored has all its predictions, the others none; a re-run finishes the rest."""
    from webapp.extensions import db
    from webapp.models import Prediction, ScoredDocument

    monkeypatch.setenv("HUMANLM_OPENAI_RETRIES", "2")
    words = {"": [1], "b": [1, 7], "c": [1, 8]}
    Scripted.script = {
        "/extras/tokenize": lambda body: (200, {"tokens": words.get(body["input"], [1, 5, 7])}),
        "/extras/detokenize": [(200, {"text": "ab"})],
        "/v1/models": [(200, {"data": [{"id": "m"}]})],
        "/v1/completions": [(200, ECHO), (503, {"error": "gone"})],
    }
    spec = f"openai:{scripted}/v1#m"
    app.config["MODEL"] = spec
    runner = app.test_cli_runner()
    for i in range(4):
        path = tmp_path / f"{i}.txt"
        path.write_text(f"document number {i}")
        assert runner.invoke(args=["corpus", "import", str(path)]).exit_code == 0
    result = runner.invoke(args=["score", "--model", spec, "--top-k", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "HTTP 503" in result.output and "gave up after 2 attempts" in result.output

    def state():
        with app.app_context():
            scored = set(db.session.scalars(select(ScoredDocument.document_id)))
            predicted = {p.item.document_id for p in db.session.scalars(select(Prediction))}
            return scored, predicted

    scored, predicted = state()
    assert scored == predicted and len(scored) < 4
    Scripted.script["/v1/completions"] = [(200, ECHO)]
    result = runner.invoke(args=["score", "--model", spec, "--top-k", "2"])
    assert result.exit_code == 0, result.output
    scored, predicted = state()
    assert scored == predicted and len(scored) == 4
    with app.app_context():
        rows = db.session.scalars(select(Prediction)).all()
        assert len(rows) == 4  # position 1 of each; position 0 is absent from this server
        assert all(r.top_k[0][0] == 7 and r.target_rank == 1 and r.entropy is None for r in rows)


def test_a_server_without_a_tokenizer_uses_the_tiktoken_encoding_of_the_spec(scripted):
    """A hosted-style endpoint: no tokenize endpoint, token texts as keys, prompts as ids after
    <|endoftext|>; the tokenizer is tiktoken's (so corpora imported for an ngram: model of the
    same encoding are scored without re-tokenizing)."""
    from webapp.lm.tiktoken_vocab import TiktokenTokenizer

    cl100k = TiktokenTokenizer("cl100k_base")
    Scripted.script = {
        "/v1/models": [(200, {"data": [{"id": "davinci-002"}]})],
        "/v1/completions": [(200, {"choices": [{"text": "", "logprobs": {
            "tokens": ["<|endoftext|>", "The", " quick", " brown"],
            "token_logprobs": [None, -3.0, -8.0, -1.0],
            "top_logprobs": [None, {"The": -3.0, "A": -2.0},
                             {" quick": -8.0, " first": -1.0, " new": -2.0},
                             {" brown": -1.0, " fox": -2.0}],
            "text_offset": [0, 0, 3, 9]}}]})],
    }
    model = OpenAIModel(f"openai:{scripted}/v1#davinci-002;encoding=cl100k_base")
    assert model.tokenizer_id == cl100k.tokenizer_id and model.settings()["top_k_only"]
    ids = model.tokenize("The quick")
    assert ids == cl100k.tokenize("The quick")
    summary = model.score_continuations(ids, top_k=2, through_end=True).summary
    body = [s for s in Scripted.seen if s["path"] == "/v1/completions"][-1]["body"]
    assert body["prompt"] == [cl100k.eot, *ids] and "return_tokens_as_token_ids" not in body
    one = cl100k.tokenize
    assert summary.target_logprob.tolist()[:2] == [-3.0, -8.0]
    assert summary.target_rank.tolist() == [2, -1, 0]
    assert summary.top_ids.tolist() == [[one("A")[0], one("The")[0]],
                                        [one(" first")[0], one(" new")[0]],
                                        [one(" brown")[0], one(" fox")[0]]]
    assert not any(s["path"].endswith("tokenize") for s in Scripted.seen)


def test_a_lookup_after_a_prefix_the_server_tokenizes_differently_is_absent(scripted):
    """Text prompts (llama-cpp-python): when the server counts other prompt tokens than the
    prefix's ids (+ BOS), the guessed token's number is absent, not a number about another
    context."""
    forced = {"choices": [{"text": "b", "logprobs": {
        "tokens": ["b"], "token_logprobs": [-0.7], "top_logprobs": [{"b": -0.7}],
        "text_offset": [2]}}]}
    Scripted.script = {
        "/extras/tokenize": lambda body: (200, {"tokens": {"": [1], "b": [1, 7]}.get(
            body["input"], [1, 5, 6])}),
        "/extras/detokenize": [(200, {"text": "ab"})],
        "/v1/models": [(200, {"data": [{"id": "m"}]})],
        "/v1/completions": [(200, {**forced, "usage": {"prompt_tokens": 3}})],
    }
    model = OpenAIModel(f"openai:{scripted}/v1#m")
    assert model.logprobs_at([5, 6], [(2, 7)]) == [(-0.7, 1)]
    Scripted.script["/v1/completions"] = [(200, {**forced, "usage": {"prompt_tokens": 2}})]
    (logprob, rank), = model.logprobs_at([5, 6], [(2, 7)])
    assert math.isnan(logprob) and rank == -1
