"""Pairwise judgements and stated distributions in an export: the reader, the selection of
token answers beside them, the truth-draw term of the pairwise estimator, and the report's two
sections, on synthetic exports whose truth is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis import synthetic as syn
from analysis.reader import load


def _token_tables(n_items=12, players=6, seed=1):
    world = syn.make_world(n_items=n_items, vocab_size=40, top_k=5, seed=seed)
    answers = syn.simulate(world, [("sample", 1.0)] * players, items_per_player=8, seed=seed + 1,
                           skip_rate=0.1)
    return world, syn.export_tables(world, answers)


def test_an_older_export_without_the_judgement_column_still_loads(tmp_path):
    _, tables = _token_tables()
    for fmt in ("csv", "jsonl", "parquet"):
        folder = syn.write_export(tables, tmp_path / fmt, fmt)
        new = load(folder)
        # the same export as written before the column existed
        if fmt == "csv":
            df = pd.read_csv(folder / "guesses.csv", dtype=str, keep_default_na=False)
            df.drop(columns="judgement").to_csv(folder / "guesses.csv", index=False)
            items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
            items.drop(columns="model_alternatives").to_csv(folder / "items.csv", index=False)
        elif fmt == "jsonl":
            for name, column in (("guesses", "judgement"), ("items", "model_alternatives")):
                rows = [json.dumps({k: v for k, v in json.loads(r).items() if k != column})
                        for r in (folder / f"{name}.jsonl").read_text().splitlines()]
                (folder / f"{name}.jsonl").write_text("\n".join(rows) + "\n")
        else:
            import pyarrow.parquet as pq
            for name, column in (("guesses", "judgement"), ("items", "model_alternatives")):
                t = pq.read_table(folder / f"{name}.parquet")
                pq.write_table(t.drop_columns([column]), folder / f"{name}.parquet")
        for lean in (False, True):
            old = load(folder, lean=lean)
            assert old.warnings == [], fmt
            assert "judgement" in old.guesses.columns
            assert old.guesses["judgement"].map(lambda v: v is None).all(), fmt
            assert old.items["model_alternatives"].map(lambda v: v is None).all(), fmt
            pd.testing.assert_frame_equal(old.guesses, new.guesses[old.guesses.columns], obj=fmt)
