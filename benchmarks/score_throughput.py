"""Throughput of `humanlm score` against raw llama-cpp-python eval on the same token sequences.

Both run in this process, on the same model object, side by side: the documents are cut into
small groups and each group is evaluated raw, then scored by humanlm (a corpus of its own in the
same database), group after group, so a change in machine load hits both; the ratio is what to
read. `humanlm score` here is the real code path (webapp.predictions.score_corpus) writing to a
temporary SQLite database. `--short` uses ~6-token documents instead of the demo passages (where
per-document overhead would show).

    .venv/bin/python benchmarks/score_throughput.py [--docs N] [--rounds R] [--group G] [--short]
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
from webapp.corpus import RawDocument, demo_documents, get_or_create_corpus, import_documents
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


def short_documents(n: int) -> list[RawDocument]:
    """Distinct snippets of five words (about six tokens) cut from the demo passages."""
    docs, seen = [], set()
    for passage in demo_documents():
        words = passage.text.split()
        for i in range(0, len(words) - 4, 5):
            text = " ".join(words[i : i + 5])
            if text not in seen:
                seen.add(text)
                docs.append(RawDocument(text=text, title=f"s{len(docs)}"))
    return docs[:n]


def run_round(model, groups, workdir: Path, round_no: int) -> tuple[float, float]:
    """(raw seconds, humanlm score seconds) over all groups, alternating group by group."""
    url = f"sqlite:///{workdir / f'bench{round_no}.db'}"
    upgrade_database(url)
    session = db.new_session()
    for g, (docs, _seqs) in enumerate(groups):  # import is not timed
        import_documents(session, get_or_create_corpus(session, f"g{g}"), docs, model, max_tokens=512)
    session.commit()
    raw = score = 0.0
    for g, (_docs, seqs) in enumerate(groups):
        raw += raw_eval(model, seqs)
        started = time.perf_counter()
        score_corpus(session, model, top_k=64, corpus=f"g{g}")
        score += time.perf_counter() - started
    session.close()
    db.dispose()
    return raw, score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=None,
                        help="documents to use (default: the 45 demo passages, or 1,187 short ones)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the whole comparison")
    parser.add_argument("--group", type=int, default=None,
                        help="documents per group (default 3, or 100 with --short)")
    parser.add_argument("--short", action="store_true", help="~6-token documents")
    args = parser.parse_args()

    model = load_model(SPEC, max_tokens=512)
    docs = short_documents(args.docs or 1187) if args.short else demo_documents()[: args.docs or 45]
    size = args.group or (100 if args.short else 3)
    groups = []
    for i in range(0, len(docs), size):
        chunk = docs[i : i + size]
        groups.append((chunk, [model.tokenize(d.text.strip()) for d in chunk]))
    n_tokens = sum(len(s) for _, seqs in groups for s in seqs)
    print(f"{len(docs)} documents, {n_tokens} tokens, model {model.name}, threads {model.n_threads}")
    raw_eval(model, groups[0][1][:2])  # warm-up

    raw_times, score_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            raw, score = run_round(model, groups, Path(tmp), round_no)
            raw_times.append(raw)
            score_times.append(score)
            print(f"round {round_no + 1}: raw {n_tokens / raw:.1f} tok/s, "
                  f"humanlm score {n_tokens / score:.1f} tok/s, ratio {raw / score:.3f}")
    ratios = [raw / score for raw, score in zip(raw_times, score_times)]
    print(f"raw llama-cpp eval (logits_all=True): {n_tokens / statistics.median(raw_times):.1f} tokens/s (median)")
    print(f"humanlm score:                       {n_tokens / statistics.median(score_times):.1f} tokens/s (median)")
    print(f"ratio humanlm/raw: {statistics.median(ratios):.3f} (median of rounds; "
          f"{', '.join(f'{r:.3f}' for r in ratios)})   goal >= 0.90")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
