"""The same documents through the embedded backend and through llama-cpp-python's own
OpenAI-compatible server on the same GGUF, with 1, 2 and 4 requests in flight; tokens/s and
the ratio to the embedded backend, in one run. Also the n-gram baseline trained on the demo
corpus, for scale.

The server is started here (`python -m llama_cpp.server --logits_all true`) on a free port and
stopped at the end. Its echo + logprobs path sorts the full vocabulary in Python at every
prompt position, so expect it far below the embedded backend; that is the server's cost, which
is why the documents are few and short by default.

    .venv/bin/python benchmarks/score_backends.py [--docs N] [--max-tokens T] [--top-k K]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from webapp.corpus import demo_documents
from webapp.lm import load_model
from webapp.lm.llamacpp import resolve_model_path
from webapp.lm.ngram import train


def start_server(log) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model_path("gemma-3-270m")),
         "--logits_all", "true", "--n_ctx", "512", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("the llama-cpp-python server did not start")


def timed(model, documents, top_k: int, ahead: bool = False) -> float:
    started = time.perf_counter()
    if ahead:
        model.score_ahead(documents, top_k)
    for ids in documents:
        model.score(ids, top_k)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=24, help="tokens per document")
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args()

    embedded = load_model("llamacpp:gemma-3-270m", max_tokens=512, n_threads=2)
    texts = [d.text for d in demo_documents()]
    documents = [embedded.tokenize(t)[: args.max_tokens] for t in texts[: args.docs]]
    n_tokens = sum(map(len, documents))
    print(f"{len(documents)} documents, {n_tokens} tokens, top-k {args.top_k}")

    embedded.score(documents[0], args.top_k)  # warm-up (first evaluation, page faults)
    seconds = timed(embedded, documents, args.top_k)
    base = n_tokens / seconds
    print(f"embedded llamacpp:        {base:8.1f} tokens/s", flush=True)

    with tempfile.TemporaryFile() as log:
        process, url = start_server(log)
        try:
            for concurrency in (1, 2, 4):
                os.environ["HUMANLM_OPENAI_CONCURRENCY"] = str(concurrency)
                served = load_model(f"openai:{url}#gemma-3-270m")
                rate = n_tokens / timed(served, documents, args.top_k, ahead=True)
                print(f"openai: llama-cpp-python, {concurrency} in flight: {rate:8.2f} tokens/s  "
                      f"ratio: {rate / base:.3f}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=20)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "demo.ngram"
        train(texts, order=3, encoding="cl100k_base", output=path)
        ngram = load_model(f"ngram:{path}")
        ngram_docs = [ngram.tokenize(t)[: args.max_tokens] for t in texts[: args.docs]]
        n = sum(map(len, ngram_docs))
        rate = n / timed(ngram, ngram_docs, args.top_k)
        print(f"ngram: 3-gram cl100k_base: {rate:8.1f} tokens/s  ratio: {rate / base:.3f}")


if __name__ == "__main__":
    main()
