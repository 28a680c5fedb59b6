"""Command line: `python -m analysis EXPORT -o report.html [--format json]`.

The app exposes the same entry as `humanlm analyze`. Errors a user can cause (a path that is
not an export, a wrong schema version, an option that selects no answers) end with one line on
stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def build_parser(prog: str = "python -m analysis") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Analyse a humanlm export: humans vs crowd vs model accuracy, simulator fit, "
                    "distribution distances, temperature, learning and calibration, with "
                    "two-way clustered confidence intervals.",
    )
    p.add_argument("export", help="export folder or .zip (written by `humanlm export`)")
    p.add_argument("-o", "--output", help="report file (default: report.html or report.json)")
    p.add_argument("--format", choices=("html", "json"), default=None,
                   help="html (self-contained page, default) or json (for machines)")
    p.add_argument("--mode", choices=("token", "word"), help="answers to analyse (default: the most common)")
    p.add_argument("--model", type=int, dest="model_id", help="model id (default: the one with most answers)")
    p.add_argument("--study", type=int, dest="study_id", help="only answers of this study")
    p.add_argument("--source", choices=("game", "room", "study", "external"), help="only answers from this source")
    p.add_argument("--include-pilot", action="store_true", help="keep answers of pilot runs")
    p.add_argument("--include-excluded", action="store_true",
                   help="keep participants flagged for exclusion")
    p.add_argument("--missing", choices=("bound", "exclude"), default="bound",
                   help="answers with unknown model log-prob: k-th log-prob bound (default) or exclude")
    p.add_argument("--min-answers", type=int, default=10,
                   help="answers an item needs for distribution distances (default 10)")
    p.add_argument("--min-crowd", type=int, default=3,
                   help="answers an item needs for a crowd plurality (default 3)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--bootstrap", type=int, default=1000, dest="n_boot",
                   help="bootstrap resamples per factor (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--debug", action="store_true", help="show a traceback on unexpected errors")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m analysis") -> int:
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage message
        return int(exc.code or 0)
    fmt = args.format
    out = Path(args.output) if args.output else None
    if fmt is None:
        fmt = "json" if out is not None and out.suffix.lower() == ".json" else "html"
    if out is None:
        out = Path(f"report.{fmt}")
    if not 0 < args.level < 1:
        print("error: --level must be between 0 and 1, e.g. 0.95", file=sys.stderr)
        return 2
    if args.n_boot < 50:
        print("error: --bootstrap must be at least 50", file=sys.stderr)
        return 2
    try:
        from .reader import AnalysisError, load
        from .report import write_report
    except ImportError as exc:
        print(f"error: the analysis needs pandas and matplotlib: pip install 'humanlm[analysis]' ({exc})",
              file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        data = load(args.export, lean=True)
        write_report(
            data, out, format=fmt, mode=args.mode, model_id=args.model_id, study_id=args.study_id,
            source=args.source, include_pilot=args.include_pilot,
            include_excluded=args.include_excluded, missing=args.missing,
            min_answers=args.min_answers, min_crowd=args.min_crowd, level=args.level,
            n_boot=args.n_boot, seed=args.seed,
        )
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except MemoryError:
        print("error: not enough memory for this export", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: say so in one line (use --debug for the traceback)
        if args.debug:
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (rerun with --debug and report it)",
              file=sys.stderr)
        return 1
    for w in data.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {out} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
