"""Throughput of `humanlm score` against raw llama-cpp-python eval on the same token sequences.

Both run in this process, on the same model object, alternating (raw, score, raw, score, ...),
so machine noise hits both; the ratio is what to read. `humanlm score` here is the real code
path (webapp.predictions.score_corpus) writing to a temporary SQLite database.

    .venv/bin/python benchmarks/score_throughput.py [--docs N] [--rounds R]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webapp.cli import upgrade_database
from webapp.config import DEFAULT_MODEL
from webapp.corpus import demo_documents, get_or_create_corpus, import_documents
from webapp.extensions import db
from webapp.lm import load_model
from webapp.predictions import score_corpus

SPEC = DEFAULT_MODEL


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_eval(model, sequences) -> float:
    """Baseline: Llama.eval with logits_all=True over BOS + tokens, nothing else."""
    llm = model._llm
    started = time.perf_counter()
    for seq in sequences:
        llm.reset()
        llm.eval([llm.token_bos(), *seq])
    return time.perf_counter() - started


def humanlm_score(model, docs, workdir: Path, round_no: int) -> float:
    """The real scoring path into a fresh database (import is not timed)."""
    url = f"sqlite:///{workdir / f'bench{round_no}.db'}"
    upgrade_database(url)
    session = db.new_session()
    corpus = get_or_create_corpus(session, "bench")
    import_documents(session, corpus, docs, model, max_tokens=512)
    session.commit()
    started = time.perf_counter()
    score_corpus(session, model, top_k=64)
    seconds = time.perf_counter() - started
    session.close()
    db.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=45, help="demo passages to use (max 45)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each")
    args = parser.parse_args()

    model = load_model(SPEC, max_tokens=512)
    docs = demo_documents()[: args.docs]
    sequences = [model.tokenize(d.text.strip()) for d in docs]
    n_tokens = sum(len(s) for s in sequences)
    print(f"{len(docs)} documents, {n_tokens} tokens, model {model.name}, threads {model.n_threads}")
    raw_eval(model, sequences[:2])  # warm-up

    raw_times, score_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            raw_times.append(raw_eval(model, sequences))
            score_times.append(humanlm_score(model, docs, Path(tmp), round_no))
            print(f"round {round_no + 1}: raw {n_tokens / raw_times[-1]:.1f} tok/s, "
                  f"humanlm score {n_tokens / score_times[-1]:.1f} tok/s")
    raw_rate = n_tokens / statistics.median(raw_times)
    score_rate = n_tokens / statistics.median(score_times)
    print(f"raw llama-cpp eval (logits_all=True): {raw_rate:.1f} tokens/s (median)")
    print(f"humanlm score:                       {score_rate:.1f} tokens/s (median)")
    print(f"ratio humanlm/raw: {score_rate / raw_rate:.3f}   (goal >= 0.90)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
