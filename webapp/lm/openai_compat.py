"""Any OpenAI-compatible completions server that returns prompt log-probabilities.

Spec: `openai:<base-url>#<model>[;encoding=<tiktoken encoding>]`, for example
`openai:http://gpu-box:8000/v1#meta-llama/Llama-3.1-8B` (vLLM) or
`openai:http://127.0.0.1:8001/v1#gemma` (llama-cpp-python's server on a model opened with
`--logits_all true`). The API key, when the server wants one, comes from HUMANLM_OPENAI_API_KEY
(sent as a Bearer token, never stored); requests in flight are bounded by
HUMANLM_OPENAI_CONCURRENCY and retried with exponential backoff on 429, 5xx and dropped
connections (HUMANLM_OPENAI_RETRIES attempts in all).

Tokens. The server's own tokenize endpoint gives the token ids: `/extras/tokenize`
(llama-cpp-python) or `/tokenize` (vLLM), found at start. A server without one (a hosted
endpoint serving a GPT-family model) needs the tiktoken encoding named in the spec
(`;encoding=cl100k_base`); its BOS is <|endoftext|>.

How numbers are read, and the traps:
- A document is ONE request to /v1/completions with `echo: true`, `logprobs: k`,
  `max_tokens: 1` (llama-cpp-python's `max_tokens: 0` means "no limit") and temperature 0: the
  log-prob of every prompt token and the top-k at every position; the one generated token is
  ignored, except that its top-k is the distribution after the last token (a stem's row).
  k is the top-k asked for, at least HUMANLM_TOP_K on llama-cpp-python (it sorts the whole
  distribution of every position whatever k is, so ranks up to it cost nothing).
- vLLM (0.5.5 and later; probed once at start with a one-token prompt) is asked for its own
  `prompt_logprobs: k` instead of the echo: per prompt token after the first (whose entry is
  null) a dict {token id: {logprob, rank, decoded_token}} holding the prompt token itself,
  with its rank in the whole vocabulary, and the top-k. So every rank of a token in a prompt
  is exact, beyond k too, and a guessed token is looked up as the last token of a prompt (the
  prefix + it) rather than through logit_bias. A stated rank of exactly k+1 is read as "beyond
  k" (early vLLM V1 engines stated k+1 for every prompt token outside the top-k). A reply
  that is not of that shape (an entry missing, not a dict of token ids, without the prompt
  token itself, a non-numeric log-prob) is a BackendError. vLLM refuses more than
  `--max-logprobs` (20 by default) log-probs per position: the error says so.
- vLLM takes the prompt as token ids ([BOS] + the document), so the numbers are about exactly
  those tokens; llama-cpp-python's server takes text only (it rejects id lists), so the
  document is sent as the server's own detokenization of its ids and the echoed token count is
  checked.
- The first prompt entry is null (the OpenAI format has no prediction for the first token).
  vLLM echoes the BOS there, so the first document token is the second entry; llama-cpp-python
  drops the BOS and nulls the first document token's numbers although it computed them: there
  the first position is absent (no Prediction is stored for it), never guessed.
- A top-logprobs dict can hold k+1 entries (the actual token is added when it is not among
  the k), and llama-cpp-python keys it by the token's text, so tokens with the same text (byte
  pieces that decode to "") collapse into one entry. Texts are mapped to ids through the
  server's tokenizer; an entry that is not exactly one token is left out of the stored top-k
  (it still counts for ranks). vLLM is asked for `return_tokens_as_token_ids` (keys
  "token_id:123").
- Only the top-k is known: entropy and log Z(T) are absent (NaN in the summary, NULL when
  stored) and the model's settings say `top_k_only`. A target's log-prob is exact (the echo gives
  it); its rank is exact when the server states it (vLLM's prompt_logprobs) or it is within the
  k asked for, else absent ("beyond k", rank -1 in the summary, NULL when stored). Nothing is
  renormalised or estimated.
- A token outside the document (a guess) is looked up, where prompt_logprobs is not used, by
  one request with the prefix as prompt and `logit_bias` {token: +100}, which makes the server
  generate that token; llama.cpp and vLLM report its log-prob from the unbiased logits (checked
  against the echo); its rank is known within the k asked for.
- llama-cpp-python's server reuses its cache for the prefix a prompt shares with the previous
  request and evaluates the rest as a batch of its own; llama.cpp's numbers depend on the batch
  shape, so a document's numbers can move by up to ~0.08 nats (measured) with what was asked
  just before it. Numbers from a prompt that shares only the BOS with the previous one, or
  repeats it, equal the embedded backend's (to 3e-7 nats).
- A word's end term (the probability that the next token ends the word) needs the full
  distribution, so word log-probs cannot be computed through this backend (None: the answers
  stay unscored and the report counts them).
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .base import (
    BackendError,
    Continuation,
    DocumentScores,
    LookupsInOnePass,
    ModelSpec,
    ModelSpecError,
    check_branches,
)
from .stats import TEMPERATURES, DistributionSummary

_MARKER = re.compile(r"</?[a-z]+(?:_[a-z]+)+>|\[[a-z_]+\]|</?s>|<\|[a-z_]+\|>|<[a-z]+>")
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
RETRY_WAIT_SECONDS = (0.5, 8.0)  # first wait, longest wait (exponential, with jitter)


@dataclass(frozen=True)
class OpenAITarget:
    base_url: str  # .../v1
    model: str
    encoding: str | None = None

    @property
    def root(self) -> str:
        """The server's root URL (where /extras/tokenize and /tokenize live)."""
        return self.base_url.removesuffix("/v1")


def parse_target(target: str) -> OpenAITarget:
    """`http://host:port/v1#model[;encoding=NAME]` -> its parts; ModelSpecError says what is
    wrong."""
    example = "openai:http://127.0.0.1:8000/v1#model-name[;encoding=cl100k_base]"
    url, sep, rest = target.partition("#")
    if not sep or not rest.split(";")[0].strip():
        raise ModelSpecError(f"an openai: spec names the model after '#': {example}")
    if not re.fullmatch(r"https?://[^\s/#]+(/[^\s#]*)?", url):
        raise ModelSpecError(f"{url!r} is not an http(s) URL of a server: {example}")
    model, *options = rest.split(";")
    encoding = None
    for option in options:
        key, eq, value = option.partition("=")
        if key.strip() == "encoding" and eq and value.strip():
            encoding = value.strip()
        else:
            raise ModelSpecError(f"unknown option {option!r} in the openai: spec (known: "
                                 f"encoding=NAME): {example}")
    return OpenAITarget(url.rstrip("/"), model.strip(), encoding)


def _setting(name: str):
    """A setting from the environment through webapp.config's table (one place for defaults)."""
    from ..config import SETTINGS

    setting = next(s for s in SETTINGS if s.key == name)
    raw = os.environ.get(setting.env)
    return setting.parse(raw) if raw not in (None, "") else setting.default


class _Refused(BackendError):
    """The server refused a request (HTTP 4xx other than the retried ones)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Retryable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Client:
    """JSON over HTTP with bounded concurrency and retries (httpx + tenacity)."""

    def __init__(self, target: OpenAITarget, *, concurrency: int, attempts: int,
                 api_key: str | None, timeout: float = 300.0) -> None:
        import httpx

        self.target = target
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = max(1, concurrency)
        self.attempts = max(1, attempts)
        self.http = httpx.Client(
            headers=headers, timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="openai")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.http.close()

    def _once(self, method: str, url: str, payload: dict | None) -> dict:
        import httpx

        try:
            response = self.http.request(method, url, json=payload)
        except httpx.TransportError as exc:
            raise _Retryable(f"cannot reach {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code in RETRY_STATUS:
            raise _Retryable(f"{url} answered HTTP {response.status_code}: {_excerpt(response)}")
        if response.status_code >= 400:
            raise _Refused(f"{url} answered HTTP {response.status_code}: {_excerpt(response)}",
                           response.status_code)
        try:
            return response.json()
        except json.JSONDecodeError:
            raise BackendError(f"{url} did not answer JSON: {_excerpt(response)}") from None

    def request(self, method: str, path: str, payload: dict | None = None, *,
                root: bool = False, attempts: int | None = None) -> dict:
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            wait_random_exponential,
        )

        url = (self.target.root if root else self.target.base_url) + path
        retrying = Retrying(
            stop=stop_after_attempt(attempts or self.attempts),
            wait=wait_random_exponential(multiplier=RETRY_WAIT_SECONDS[0],
                                         max=RETRY_WAIT_SECONDS[1]),
            retry=retry_if_exception_type(_Retryable),
        )
        try:
            return retrying(self._once, method, url, payload)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            message = last.message if isinstance(last, _Retryable) else str(last)
            raise BackendError(
                f"{message} (gave up after {attempts or self.attempts} attempts)"
            ) from None

    def map(self, fn, items):
        """fn over items with at most `concurrency` requests in flight; results in order."""
        items = list(items)
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self.pool.map(fn, items))


def _excerpt(response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:300] + ("..." if len(text) > 300 else "")


class OpenAITokenizer:
    """The tokenizer of an openai: model: the server's tokenize endpoint, or a tiktoken encoding
    named in the spec."""

    def __init__(self, spec: str, *, client: _Client | None = None) -> None:
        parsed = ModelSpec.parse(spec)
        self.spec = str(parsed)
        self.target = parse_target(parsed.target)
        self._own_client = client is None
        self.client = client or _Client(
            self.target, concurrency=_setting("OPENAI_CONCURRENCY"),
            attempts=_setting("OPENAI_RETRIES"), api_key=_setting("OPENAI_API_KEY"),
        )
        self._lock = threading.Lock()
        self._pieces: dict[int, bytes] = {}
        self._ids_of_text: dict[str, int | None] = {}
        self.tiktoken = None
        if self.target.encoding:
            from .tiktoken_vocab import TiktokenTokenizer

            self.tiktoken = TiktokenTokenizer(self.target.encoding)
            self.server = "openai"
            self.n_vocab = self.tiktoken.n_vocab
            self.bos = self.tiktoken.eot
            self.tokenizer_id = self.tiktoken.tokenizer_id
            return
        self.server, self._tokenize_path = self._find_tokenizer()
        with_bos = self._server_tokenize("")
        self.bos = with_bos[0] if with_bos else None
        # The vocabulary size is not part of the OpenAI API: 0 = unknown (the model's numbers
        # never need it: only the top-k is known).
        self.n_vocab = 0
        self.tokenizer_id = f"openai-server:{self.target.model}"

    def _find_tokenizer(self) -> tuple[str, str]:
        """Which server this is, by its tokenize endpoint (probed once, no retries)."""
        for server, path, payload in (("llama-cpp-python", "/extras/tokenize", {"input": "a"}),
                                      ("vllm", "/tokenize", {"prompt": "a",
                                                             "model": self.target.model})):
            try:
                self.client.request("POST", path, payload, root=True, attempts=1)
                return server, path
            except BackendError as exc:
                if "cannot reach" in str(exc):
                    raise BackendError(
                        f"cannot reach the OpenAI-compatible server at {self.target.base_url} "
                        f"({exc})"
                    ) from None
        raise ModelSpecError(
            f"the server at {self.target.root} has no tokenize endpoint (/extras/tokenize of "
            "llama-cpp-python, /tokenize of vLLM): name a tiktoken encoding in the spec, e.g. "
            f"openai:{self.target.base_url}#{self.target.model};encoding=cl100k_base"
        )

    def _server_tokenize(self, text: str) -> list[int]:
        if self.server == "vllm":
            got = self.client.request("POST", "/tokenize", {"prompt": text,
                                                            "model": self.target.model}, root=True)
        else:
            got = self.client.request("POST", "/extras/tokenize", {"input": text}, root=True)
        tokens = got.get("tokens")
        if not isinstance(tokens, list):
            raise BackendError(f"the server's tokenize endpoint answered {got!r}")
        return [int(t) for t in tokens]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of text as a continuation (no BOS)."""
        if not text:
            return []
        if self.tiktoken is not None:
            return self.tiktoken.tokenize(text)
        ids = self._server_tokenize(text)
        return ids[1:] if ids and ids[0] == self.bos else ids

    def detokenize(self, ids: Sequence[int]) -> str:
        if self.tiktoken is not None:
            return self.tiktoken.encoding.decode(list(ids))
        if not ids:
            return ""
        if self.server == "vllm":
            got = self.client.request("POST", "/detokenize",
                                      {"tokens": list(ids), "model": self.target.model}, root=True)
            return got["prompt"]
        return self.client.request("POST", "/extras/detokenize", {"tokens": list(ids)},
                                   root=True)["text"]

    def token_bytes(self, token_id: int) -> bytes:
        if self.tiktoken is not None:
            return self.tiktoken.token_bytes(token_id)
        piece = self._pieces.get(token_id)
        if piece is None:
            try:
                piece = self.detokenize([token_id]).encode("utf-8")
            except BackendError:  # a piece of a UTF-8 character (the server decodes strictly)
                piece = b""
            self._pieces[token_id] = piece
        return piece

    def is_control(self, token_id: int) -> bool:
        if self.tiktoken is not None:
            return self.tiktoken.is_control(token_id)
        if token_id == self.bos:
            return True
        return bool(_MARKER.fullmatch(self.token_bytes(token_id).decode("utf-8", "replace")))

    def id_of_text(self, text: str) -> int | None:
        """The one token whose text this is, or None (not exactly one token, or ambiguous)."""
        if text.startswith("token_id:"):  # vLLM's return_tokens_as_token_ids
            return int(text.split(":", 1)[1])
        with self._lock:
            if text in self._ids_of_text:
                return self._ids_of_text[text]
        if not text:
            found = None
        elif self.tiktoken is not None:
            try:
                found = self.tiktoken.encoding.encode_single_token(text.encode("utf-8"))
            except KeyError:
                found = None
        else:
            ids = self.tokenize(text)
            found = ids[0] if len(ids) == 1 else None
        with self._lock:
            self._ids_of_text[text] = found
            if found is not None:
                self._pieces.setdefault(found, text.encode("utf-8"))
        return found

    def _learn(self, text: str, token_id: int) -> None:
        """A token's text as the server showed it (echoed prompt tokens)."""
        with self._lock:
            self._ids_of_text.setdefault(text, token_id)
            if text:
                self._pieces.setdefault(token_id, text.encode("utf-8"))


@dataclass
class _Position:
    """What the server said about one position: the actual token's log-prob (None: not
    given), the top-k dict (None: not given) and the actual token's rank in the whole
    vocabulary when the server states it (vLLM's prompt_logprobs; None: not stated)."""

    logprob: float | None
    top: dict[str, float] | None
    rank: int | None = None


class _Ahead:
    """Documents scored ahead of the caller: key -> future, in a bounded window."""

    def __init__(self, planned: list, window: int) -> None:
        self.pending = {key: None for key in planned}  # key -> future once submitted
        self.window = threading.BoundedSemaphore(window)
        self.ready = threading.Condition()

    def put(self, key, future) -> None:
        with self.ready:
            self.pending[key] = future
            self.ready.notify_all()

    def forget(self, keys) -> None:
        with self.ready:
            for key in keys:
                if self.pending.get(key, 0) is None:
                    del self.pending[key]
            self.ready.notify_all()

    def take(self, key):
        """The future of a planned document (waiting for the feeder to submit it), or None
        for a document that was not planned."""
        with self.ready:
            if key not in self.pending:
                return None
            self.ready.wait_for(lambda: self.pending.get(key, 0) is not None)
            return self.pending.pop(key, None)


class OpenAIModel(LookupsInOnePass, OpenAITokenizer):
    """An OpenAI-compatible server behind the LanguageModelBackend interface (top-k only)."""

    def __init__(self, spec: str) -> None:
        super().__init__(spec)
        self.name = self.target.model
        self.prompt_as_ids = self.server != "llama-cpp-python"
        self._check_models()
        self.prompt_logprobs = self.server == "vllm" and self._has_prompt_logprobs()

    def _request_k(self, top_k: int | None) -> int:
        """How many log-probs per position a pass asks for: its top_k; without one, the most
        a rank needs (HUMANLM_TOP_K), or 1 where prompt_logprobs states every rank anyway.
        llama-cpp-python sorts the whole distribution of every position whatever k is, so
        there k is at least HUMANLM_TOP_K: ranks of looked-up tokens up to it for free."""
        if self.prompt_logprobs:
            return top_k or 1
        if self.server == "llama-cpp-python":
            return max(top_k or 0, _setting("TOP_K"))
        return top_k or _setting("TOP_K")

    def score_ahead(self, documents: Iterable[Sequence[int]], top_k: int) -> None:
        """Start scoring these documents (in this order) in the background, at most
        2 x HUMANLM_OPENAI_CONCURRENCY ahead of the caller: score_continuations of one of them
        then waits for its request instead of sending one, so a corpus is scored with
        requests in flight while the previous documents are stored."""
        k = self._request_k(top_k)
        planned = list(dict.fromkeys((tuple(int(t) for t in ids), k)
                                     for ids in documents if len(ids)))
        ahead = self._ahead = _Ahead(planned, 2 * self.client.concurrency)

        def feed() -> None:
            done = 0
            try:
                for key in planned:
                    if not ahead.window.acquire(timeout=600):  # the caller stopped taking them
                        break
                    ahead.put(key, self.client.pool.submit(self._echo, list(key[0]), k))
                    done += 1
            finally:  # the rest (if any) are scored when asked, not waited for
                ahead.forget(planned[done:])

        threading.Thread(target=feed, name="openai-ahead", daemon=True).start()

    def _echo_or_ahead(self, ids: list[int], k: int):
        ahead = getattr(self, "_ahead", None)
        future = ahead.take((tuple(ids), k)) if ahead is not None else None
        if future is None:
            return self._echo(ids, k)
        try:
            return future.result()
        finally:
            ahead.window.release()

    def _check_models(self) -> None:
        try:
            listed = self.client.request("GET", "/models", attempts=1)
        except BackendError as exc:
            raise BackendError(
                f"the OpenAI-compatible server at {self.target.base_url} does not answer "
                f"/models ({exc})"
            ) from None
        self.served = [m.get("id") for m in listed.get("data", []) if isinstance(m, dict)]

    def _has_prompt_logprobs(self) -> bool:
        """Whether this vLLM returns `prompt_logprobs` (vLLM 0.5.5 and later): one request
        with a one-token prompt. An older one refuses the field (HTTP 400) or ignores it: then
        documents are scored with echo + logprobs, as on other servers."""
        prompt = [self.bos] if self.bos is not None else self._server_tokenize("a")[:1]
        try:
            got = self.client.request("POST", "/completions", {
                "model": self.target.model, "prompt": prompt, "max_tokens": 1,
                "temperature": 0, "prompt_logprobs": 1})
        except _Refused:
            return False
        choices = got.get("choices") if isinstance(got, dict) else None
        return bool(choices) and isinstance(choices[0], dict) and \
            isinstance(choices[0].get("prompt_logprobs"), list)

    def settings(self) -> dict:
        return {
            "backend": "openai",
            "base_url": self.target.base_url,
            "model": self.target.model,
            "server": self.server,
            "tokenizer": f"tiktoken:{self.target.encoding}" if self.tiktoken is not None
            else f"server {self._tokenize_path}",
            "prompt": "token ids" if self.prompt_as_ids else "text (detokenized ids)",
            "request": "prompt_logprobs (exact ranks)" if self.prompt_logprobs
            else "echo + logprobs",
            "top_k_only": True,
            "absent": "entropy, logz, "
                      + ("" if self.prompt_logprobs else "ranks beyond the top-k, ")
                      + "word end terms, "
                      + ("nothing else" if self.prompt_as_ids else "the first position"),
            "bos": self.bos is not None,
            "logprob_base": "e",
        }

    # ------------------------------------------------------------------------------ requests

    def _complete(self, ids: Sequence[int], k: int, *, echo: bool,
                  logit_bias: dict[int, float] | None = None,
                  prompt_logprobs: bool = False) -> dict:
        """One /v1/completions request for the prompt BOS + ids; returns choices[0]."""
        payload: dict = {
            "model": self.target.model,
            "max_tokens": 1,  # never 0: llama-cpp-python reads 0 as "no limit"
            "temperature": 0,
            "echo": echo,
            "logprobs": k,
        }
        if prompt_logprobs:
            payload["prompt_logprobs"] = k
        if self.prompt_as_ids:
            payload["prompt"] = ([self.bos] if self.bos is not None else []) + list(ids)
        else:
            payload["prompt"] = self.detokenize(ids)
        if self.server == "vllm":
            payload["return_tokens_as_token_ids"] = True
        if logit_bias:
            payload["logit_bias"] = {str(k): v for k, v in logit_bias.items()}
        try:
            got = self.client.request("POST", "/completions", payload)
        except _Refused as exc:
            if self.server == "vllm" and "max allowed" in str(exc):
                raise BackendError(
                    f"{exc} (vLLM returns at most --max-logprobs log-probs per position, 20 "
                    f"unless started with more: start it with --max-logprobs {k} or more, or "
                    "score with a smaller --top-k)"
                ) from None
            raise
        try:
            choice = dict(got["choices"][0])
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"the server's completion has no choices: {str(got)[:300]}") from None
        choice["usage"] = got.get("usage") or {}
        logprobs = choice.get("logprobs")
        if not logprobs or logprobs.get("top_logprobs") is None:
            raise BackendError(
                f"the server at {self.target.base_url} returned no log-probabilities for "
                f"{self.target.model} (it must support echo + logprobs on /v1/completions; "
                "llama-cpp-python's server needs --logits_all true)"
            )
        return choice

    def _echo(self, ids: Sequence[int], k: int) -> tuple[list[_Position], _Position | None]:
        """Per document token i, what the server said about predicting ids[i]; and the
        position after the last token (from the generated token), if any."""
        if self.prompt_logprobs:
            return self._prompt_logprobs(ids, k)
        n = len(ids)
        logprobs = self._complete(ids, k, echo=True)["logprobs"]
        tokens, lps, tops = logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"]
        offset = 1 if self.prompt_as_ids and self.bos is not None else 0  # the echoed BOS
        if len(tokens) < n + offset or len(tokens) > n + offset + 1:
            raise BackendError(
                f"the server echoed {len(tokens) - offset} tokens for a prompt of {n}: it "
                "tokenized the text differently from the document's ids; score this corpus with "
                "the tokenizer it was imported with"
            )
        positions = []
        for i in range(n):
            e = i + offset
            if tokens[e] and not tokens[e].startswith("token_id:"):
                self._learn(tokens[e], int(ids[i]))
            positions.append(_Position(lps[e], tops[e]))
        after = None
        if len(tokens) == n + offset + 1 and tops[-1] is not None:
            after = _Position(None, tops[-1])
        return positions, after

    def _prompt_logprobs(self, ids: Sequence[int],
                         k: int) -> tuple[list[_Position], _Position | None]:
        """_echo through vLLM's `prompt_logprobs`: per prompt token (after the first, whose
        entry is null) a dict {token id: {logprob, rank, decoded_token}} holding the prompt
        token itself, with its rank in the whole vocabulary, and the top-k; the generated
        token's top-k (`logprobs`) is the position after the last token. Anything else is a
        BackendError (nothing of the document is used)."""
        choice = self._complete(ids, k, echo=False, prompt_logprobs=True)
        prompt = ([self.bos] if self.bos is not None else []) + [int(t) for t in ids]
        entries = choice.get("prompt_logprobs")
        if not isinstance(entries, list) or len(entries) != len(prompt):
            got = f"{len(entries)} entries" if isinstance(entries, list) else repr(entries)[:100]
            raise BackendError(
                f"the vLLM server at {self.target.base_url} returned prompt_logprobs with "
                f"{got} for a prompt of {len(prompt)} tokens (one entry per prompt token, the "
                "first null)"
            )
        offset = len(prompt) - len(ids)
        positions = [_Position(None, None) if i + offset == 0  # the first prompt token
                     else self._prompt_entry(entries[i + offset], int(token), i + offset)
                     for i, token in enumerate(ids)]
        tops = choice["logprobs"]["top_logprobs"]
        after = _Position(None, tops[0]) if tops and isinstance(tops[0], dict) else None
        return positions, after

    def _prompt_entry(self, entry, token: int, at: int) -> _Position:
        """One entry of prompt_logprobs, checked: the prompt token's log-prob and stated rank,
        and every entry keyed "token_id:N" (as the top-logprobs dicts of vLLM are here)."""

        def malformed(why: str) -> BackendError:
            return BackendError(
                f"the vLLM server at {self.target.base_url} returned malformed prompt_logprobs "
                f"at prompt token {at}: {why} (expected {{token id: {{logprob, rank, "
                "decoded_token}}, holding the prompt token itself and the top-k)"
            )

        if not isinstance(entry, dict) or not entry:
            raise malformed(f"{str(entry)[:100]} is not a dict of token ids")
        top: dict[str, float] = {}
        own = None
        for key, value in entry.items():
            try:
                token_id = int(key)
            except (TypeError, ValueError):
                raise malformed(f"the key {str(key)[:40]!r} is not a token id") from None
            logprob = value.get("logprob") if isinstance(value, dict) else None
            rank = value.get("rank") if isinstance(value, dict) else None
            if isinstance(logprob, bool) or not isinstance(logprob, int | float) or \
                    math.isnan(logprob):
                raise malformed(f"token {token_id} has no numeric logprob: {str(value)[:100]}")
            if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int)
                                     or rank < 1):
                raise malformed(f"token {token_id} has the rank {rank!r}")
            top[f"token_id:{token_id}"] = float(logprob)
            if token_id == token:
                own = float(logprob), rank
        if own is None:
            raise malformed(f"no entry for the prompt token itself ({token})")
        return _Position(own[0], top, own[1])

    def _forced(self, prefix: Sequence[int], token: int, top_k: int) -> _Position:
        """The log-prob of `token` after the prefix: generated under logit_bias +100 (the
        server reports the unbiased log-prob), with the top-k at that position."""
        if not prefix and not self.prompt_as_ids:
            return _Position(None, None)  # llama-cpp-python: no numbers at the first position
        choice = self._complete(prefix, top_k, echo=False, logit_bias={int(token): 100})
        logprobs = choice["logprobs"]
        counted = choice["usage"].get("prompt_tokens")
        if not self.prompt_as_ids and counted is not None and counted != len(prefix) + 1:
            return _Position(None, None)  # the server tokenized the prefix's text differently
        if not logprobs["tokens"]:
            return _Position(None, None)
        text = logprobs["tokens"][0]
        if self.id_of_text(text) != int(token):
            return _Position(None, logprobs["top_logprobs"][0])  # the bias did not hold
        return _Position(logprobs["token_logprobs"][0], logprobs["top_logprobs"][0])

    # ------------------------------------------------------------------------------- numbers

    def _top(self, top: dict[str, float], k: int) -> list[tuple[int, float]]:
        """The k most likely (id, logprob) entries with a known id, most likely first (texts
        already resolved by _resolve)."""
        ranked = sorted(top.items(), key=lambda kv: -kv[1])[:k]
        ids = [self.id_of_text(text) for text, _ in ranked]
        return [(i, float(lp)) for i, (_text, lp) in zip(ids, ranked) if i is not None]

    def _resolve(self, tops: Iterable[dict[str, float] | None], k: int) -> None:
        """Map every new text among the k most likely entries of these dicts (those _top
        keeps) to its id, concurrently (one tokenize request each, cached for the process)."""
        texts = {t for top in tops if top
                 for t, _lp in sorted(top.items(), key=lambda kv: -kv[1])[:k]}
        with self._lock:
            new = [t for t in texts if t not in self._ids_of_text]
        self.client.map(self.id_of_text, new)

    def _key(self, token_id: int) -> str | None:
        """How the server's top-logprobs dicts name a token: "token_id:N" (vLLM, asked for
        return_tokens_as_token_ids) or its text (None when unknown)."""
        if self.server == "vllm":
            return f"token_id:{token_id}"
        piece = self.token_bytes(token_id) if self.tiktoken is not None else \
            self._pieces.get(token_id)
        return None if piece is None else piece.decode("utf-8", "replace")

    @staticmethod
    def _rank(position: _Position, key: str | None, k: int) -> int:
        """The rank the server states (vLLM's prompt_logprobs), else 1 + entries strictly more
        likely when the token is within the k asked for; else -1 ("beyond k").

        llama-cpp-python and vLLM add the actual token to the k entries when it is not among
        them (k+1 entries): then it is beyond the top-k. A stated rank of exactly k+1 is read
        as "beyond k" too: early vLLM V1 engines stated k+1 for every prompt token outside
        the top-k instead of its rank."""
        if position.top is None or position.logprob is None:
            return -1
        if position.rank is not None:
            return position.rank if position.rank != k + 1 else -1
        top, lp = position.top, float(position.logprob)
        if key is not None and key in top:
            if len(top) > k:
                return -1
            above = sum(1 for t, v in top.items() if t != key and v > lp)
        else:
            above = sum(1 for v in top.values() if v > lp)
        return 1 + above if above < k else -1

    def _summary(self, positions: list[_Position], targets: list[int], k: int,
                 asked: int) -> DistributionSummary:
        """Rows of these positions: the k most likely tokens of the `asked` (>= k) the server
        gave, the target's log-prob, and its rank wherever the server's numbers give it."""
        n = len(positions)
        out = DistributionSummary(
            target_logprob=np.full(n, np.nan),
            target_rank=np.full(n, -1, dtype=np.int64),
            entropy=np.full(n, np.nan),
            top_ids=np.full((n, k), -1, dtype=np.int64),
            top_logprobs=np.full((n, k), np.nan),
            logz=np.full((n, len(TEMPERATURES)), np.nan),
        )
        self._resolve((pos.top for pos in positions), k)
        tops = [self._top(pos.top, k) if pos.top else [] for pos in positions]
        for i, (position, target, top) in enumerate(zip(positions, targets, tops)):
            for j, (token_id, lp) in enumerate(top):
                out.top_ids[i, j], out.top_logprobs[i, j] = token_id, lp
            if target < 0:  # no actual next token (a stem's row)
                out.target_rank[i] = 0
                continue
            if position.logprob is not None:
                out.target_logprob[i] = float(position.logprob)
                out.target_rank[i] = self._rank(position, self._key(target), asked)
        return out

    def score(self, token_ids: Sequence[int], top_k: int) -> DistributionSummary:
        return self.score_continuations(token_ids, top_k=top_k).summary

    def score_continuations(
        self,
        token_ids: Sequence[int],
        continuations: Mapping[int, Sequence[Sequence[int]]] | None = None,
        *,
        top_k: int | None = None,
        end_set: np.ndarray | None = None,
        lookups: Iterable[tuple[int, int]] = (),
        through_end: bool = False,
        summary_rows: Sequence[int] | None = None,
    ) -> DocumentScores:
        """Numbers a top-k-only server can give exactly (module docstring). Lookups are
        (logprob, rank) with logprob NaN when absent and rank -1 beyond the top-k; a
        continuation is None when it cannot be computed (any end_set: the word's end term)."""
        ids = [int(t) for t in token_ids]
        n = len(ids)
        continuations = continuations or {}
        lookups = [(int(p), int(t)) for p, t in lookups]
        check_branches(n, (*continuations, *(p for p, _ in lookups), *(summary_rows or ())))
        k = self._request_k(top_k)
        need_pass = bool(top_k) or any(p < n and ids[p] == t for p, t in lookups)
        positions, after = self._echo_or_ahead(ids, k) if need_pass and n else ([], None)
        summary = None
        if top_k and summary_rows is not None:  # only these positions (n: after the end)
            every = positions + [after or _Position(None, None)]  # n + 1 rows
            chosen = [int(r) for r in summary_rows]
            padded = [*ids, -1]
            summary = self._summary([every[r] for r in chosen], [padded[r] for r in chosen],
                                    top_k, k)
        elif top_k:
            rows = positions + ([after or _Position(None, None)] if through_end else [])
            summary = self._summary(rows, [*ids, -1][: len(rows)], top_k, k)
        result = DocumentScores(summary, {p: [None] * len(c) for p, c in continuations.items()})

        def lookup(query: tuple[int, int]) -> tuple[float, int]:
            p, token = query
            if p < n and ids[p] == token and positions:
                position = positions[p]
            elif self.prompt_logprobs:  # the token as the prompt's last: its rank is stated
                position = self._echo([*ids[:p], token], k)[0][p]
            else:
                position = self._forced(ids[:p], token, k)
            if position.logprob is None:
                return float("nan"), -1
            return float(position.logprob), self._rank(position, self._key(token), k)

        distinct = list(dict.fromkeys(lookups))
        for query, found in zip(distinct, self.client.map(lookup, distinct)):
            result.lookups[query] = found

        if end_set is None:  # with an end_set every continuation stays None (see above)
            asked = [(p, j, [int(t) for t in c]) for p, cs in continuations.items()
                     for j, c in enumerate(cs)]
            if any(not c for _p, _j, c in asked):
                raise ValueError("an empty continuation has no probability")

            def continuation(entry) -> Continuation | None:
                p, _j, cont = entry
                if positions and ids[p : p + len(cont)] == cont:  # the document's own tokens
                    got = positions
                else:
                    got, _after = self._echo([*ids[:p], *cont], k)
                steps = [got[p + i] for i in range(len(cont))]
                if any(step.logprob is None for step in steps):
                    return None
                return Continuation(
                    tuple(float(step.logprob) for step in steps),
                    tuple(self._rank(step, self._key(t), k) for step, t in zip(steps, cont)),
                )

            for (p, j, _c), found in zip(asked, self.client.map(continuation, asked)):
                result.continuations[p][j] = found
        return result

    def next_token_logprobs(self, prefix_ids: Sequence[int]) -> np.ndarray:
        raise BackendError(
            f"{self.spec} gives only the top-k log-probs, not the full next-token distribution"
        )
