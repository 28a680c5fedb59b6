"""Speed and memory of the full analysis report on a large export.

Writes a synthetic export (analysis.synthetic: exact distributions over a synthetic vocabulary,
players sampling from the model) of N answers over M items as CSV and as Parquet, then, in a
fresh process per format:
  1. baseline: read the five tables with plain pandas (no checks, no JSON parsing);
  2. the full report: analysis.load (checked) + every metric + the HTML report with figures.
It prints the times, their ratio, and the process's peak RSS after each step.

    .venv/bin/python benchmarks/analysis_speed.py [--answers 1000000] [--items 20000]
        [--formats csv parquet] [--keep DIR]
Goal (issue 6): the full report of 1,000,000 answers over 20,000 items in < 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss it is not inherited from
    the parent across fork/exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_export(folder: Path, n_answers: int, n_items: int, formats: list[str], seed: int = 0) -> dict:
    import numpy as np

    from analysis import synthetic as syn

    started = time.perf_counter()
    world = syn.make_world(n_items=n_items, vocab_size=2000, top_k=64, seed=seed,
                           items_per_document=100)
    per_player = 200
    n_players = n_answers // per_player
    rng = np.random.default_rng(seed)
    temps = rng.choice([0.8, 1.0, 1.2, 1.5], size=n_players)
    strategies = [("sample", float(t)) for t in temps]
    answers = syn.simulate(world, strategies, items_per_player=per_player, seed=seed + 1,
                           skip_rate=0.03)
    asks = np.isin(answers.participant, np.arange(0, n_players, 3))  # a third give probabilities
    p_true = np.exp(world.logprobs[answers.item, np.maximum(answers.token, 0)])
    answers.reported_probability = np.where(
        asks, np.clip(p_true + rng.normal(0, 0.1, len(answers)), 0.01, 0.99), np.nan)
    tables = syn.export_tables(world, answers, unfilled=0.05,
                               excluded=set(range(0, n_players, 97)))
    made = time.perf_counter() - started
    out = {}
    for fmt in formats:
        t = time.perf_counter()
        path = syn.write_export(tables, folder / f"export-{fmt}", fmt)
        size = sum(f.stat().st_size for f in path.iterdir())
        out[fmt] = (path, time.perf_counter() - t, size)
    print(f"synthetic data: {len(answers):,} answers, {n_items:,} items, {n_players:,} players "
          f"({made:.1f} s to simulate)")
    for fmt, (path, secs, size) in out.items():
        print(f"  {fmt}: written in {secs:.1f} s, {size / 1e6:,.0f} MB")
    return {fmt: str(v[0]) for fmt, v in out.items()}


def measure(path: str, fmt: str, report_dir: str, queue) -> None:
    """In a fresh process: baseline read, then the full report."""
    import gc

    import pandas as pd

    t = time.perf_counter()
    frames = {}
    for name in ("guesses", "items", "participants", "studies", "models"):
        file = Path(path) / f"{name}.{fmt}"
        frames[name] = pd.read_csv(file) if fmt == "csv" else pd.read_parquet(file)
    baseline = time.perf_counter() - t
    rss_baseline = peak_rss_mb()
    del frames
    gc.collect()

    import analysis
    from analysis.report import write_report

    t = time.perf_counter()
    data = analysis.load(path, lean=True)
    loaded = time.perf_counter() - t
    out = Path(report_dir) / f"report-{fmt}.html"
    write_report(data, out)
    total = time.perf_counter() - t
    queue.put({"format": fmt, "baseline_s": baseline, "load_s": loaded, "report_s": total,
               "rss_baseline_mb": rss_baseline, "rss_peak_mb": peak_rss_mb(),
               "html_kb": out.stat().st_size / 1024})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--formats", nargs="+", default=["csv", "parquet"])
    ap.add_argument("--keep", help="write the exports and reports here and keep them (exports "
                    "already there from an earlier run with --keep are reused)")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="humanlm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        existing = {fmt: work / f"export-{fmt}" for fmt in args.formats}
        if args.keep and all((p / "manifest.json").exists() for p in existing.values()):
            paths = {fmt: str(p) for fmt, p in existing.items()}
            print(f"reusing the exports in {work}")
        else:
            paths = make_export(work, args.answers, args.items, args.formats)
        ctx = mp.get_context("spawn")
        results = []
        for fmt, path in paths.items():
            queue = ctx.Queue()
            proc = ctx.Process(target=measure, args=(path, fmt, str(work), queue))
            proc.start()
            results.append(queue.get())
            proc.join()
        print()
        print(f"{'format':8} {'pandas read':>12} {'analysis.load':>14} {'full report':>12} "
              f"{'ratio':>6} {'RSS read':>9} {'RSS peak':>9}")
        for r in results:
            print(f"{r['format']:8} {r['baseline_s']:11.1f}s {r['load_s']:13.1f}s "
                  f"{r['report_s']:11.1f}s {r['report_s'] / r['baseline_s']:5.1f}x "
                  f"{r['rss_baseline_mb'] / 1024:8.2f}G {r['rss_peak_mb'] / 1024:8.2f}G")
        print("\nratio = full report (load with checks + all metrics + HTML) / plain pandas read of "
              "the same files; RSS = peak resident memory of the measuring process.")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
