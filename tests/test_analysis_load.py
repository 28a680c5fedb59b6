"""analysis.load: every format reads to the same checked frames; damaged exports fail clearly."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest

from analysis import synthetic as syn
from analysis.reader import ExportFormatError, load
from analysis.schema import TABLES


@pytest.fixture(scope="module")
def tables():
    world = syn.make_world(n_items=12, vocab_size=40, top_k=5, seed=1)
    answers = syn.simulate(world, [("sample", 1.0)] * 6, items_per_player=8, seed=2, skip_rate=0.1)
    answers.reported_probability = np.where(np.arange(len(answers)) % 2 == 0, 0.25, np.nan)
    return syn.export_tables(world, answers, unfilled=1.0, excluded={2})


@pytest.fixture
def csv_export(tables, tmp_path):
    return syn.write_export(tables, tmp_path / "exp", "csv")


def test_all_formats_read_to_the_same_frames(tables, tmp_path):
    loaded = {}
    for fmt in ("csv", "jsonl", "parquet"):
        loaded[fmt] = load(syn.write_export(tables, tmp_path / fmt, fmt))
        loaded[fmt + ".zip"] = load(syn.write_export(tables, tmp_path / f"{fmt}.zip", fmt, as_zip=True))
    ref = loaded["csv"]
    for name, data in loaded.items():
        assert data.warnings == [], name
        for table in TABLES:
            pd.testing.assert_frame_equal(data[table], ref[table], check_exact=False, rtol=1e-12,
                                          obj=f"{name}:{table}")


def test_types_and_nulls_follow_the_schema(csv_export, tables):
    d = load(csv_export)
    g = d.guesses
    assert list(g.columns) == TABLES["guesses"].column_names
    assert g["skipped"].dtype == bool and g["excluded"].dtype == bool
    assert g["guess_id"].dtype == np.int64
    assert str(g["room_id"].dtype) == "Int64" and g["room_id"].isna().all()
    assert str(g["server_received_at"].dtype) == "datetime64[us, UTC]"
    # Skips: empty answer text stays "", first token is null, token ids an empty list.
    skips = g[g["skipped"]]
    assert len(skips) > 0
    assert (skips["answer_text"] == "").all()
    assert skips["answer_first_token_id"].isna().all()
    assert all(v == [] for v in skips["answer_token_ids"])
    # unfilled=1.0: every answer outside the top-k has an empty log-prob; inside it is exact.
    lp = g["model_answer_logprob"]
    assert lp.isna().sum() > len(skips)
    exp_lp = pd.Series([np.nan if v is None else v for v in tables["guesses"]["model_answer_logprob"]])
    np.testing.assert_allclose(lp.to_numpy(), exp_lp.to_numpy(), rtol=1e-15)
    assert np.isnan(g["reported_probability"]).sum() == len(g) // 2
    items = d.items
    top = items["model_top_k"].iloc[0]
    assert isinstance(top, list) and len(top) == 5 and isinstance(top[0][2], str)
    assert isinstance(items["answer_counts"].iloc[0], dict)
    assert d.models["temperatures"].iloc[0] == list(syn.GRID)
    assert d.participants["exclusion_reason"].notna().sum() == 1


HAND_GUESSES = (
    "guess_id,participant_id,source,study_id,room_id,item_id,document_id,corpus,position,mode,"
    "prefix_text,target_text,target_token_id,answer_text,answer_token_ids,answer_first_token_id,"
    "answer_first_token_text,skipped,is_correct,match_rule,answer_index,reaction_ms,"
    "server_received_at,stored_at,reported_probability,model_id,model_answer_logprob,"
    "model_answer_rank,model_target_logprob,model_target_rank,model_top1_id,model_top1_text,"
    "model_entropy,pilot,excluded,external\n"
    '1,NA,game,,,7,1,c,3,token,"Once, upon",NA,5,NA,[9],9,NA,false,false,none,1,812.5,'
    "2026-01-02T03:04:05.123456+00:00,2026-01-02T03:04:05.200000+00:00,,1,-inf,,-0.5,1,5,x,1.25,"
    "false,false,false\n"
    '2,null,game,,,7,1,c,3,token,"Once, upon",NA,5,,[],,,true,false,skip,1,,'
    "2026-01-02T03:04:06+00:00,2026-01-02T03:04:06+00:00,0.5,1,nan,,-0.5,1,5,x,1.25,"
    "false,false,false\n"
)


def _hand_export(folder, guesses=HAND_GUESSES, version="1"):
    folder.mkdir()
    (folder / "guesses.csv").write_text(guesses, encoding="utf-8")
    (folder / "items.csv").write_text(
        ",".join(TABLES["items"].column_names) + "\n"
        '7,1,c,3,"Once, upon",5,NA,,1,-0.5,1,5,1.25,"[[5,-0.5,""NA"",false],[9,-1.5,""x"",false]]",'
        '"[0,0,0,0,0,0,0,0,0,0,0,0,0]",,2,"{""9"":1}"\n', encoding="utf-8")
    (folder / "participants.csv").write_text(
        ",".join(TABLES["participants"].column_names) + "\n"
        "NA,game,,,,,,1,false,false,\nnull,game,,,,,,1,false,false,\n", encoding="utf-8")
    (folder / "studies.csv").write_text(",".join(TABLES["studies"].column_names) + "\n")
    (folder / "models.csv").write_text(
        ",".join(TABLES["models"].column_names) + "\n"
        '1,k,synthetic,m,t,10,2,"[0.25,0.33,0.4,0.5,0.67,0.8,0.89,1,1.33,1.6,2,2.67,4]","{}"\n')
    rows = {"guesses": guesses.count("\n") - 1, "items": 1, "participants": 2, "studies": 0, "models": 1}
    (folder / "manifest.json").write_text(json.dumps({
        "schema_version": version, "humanlm_version": "x", "exported_at": "2026-01-02T00:00:00+00:00",
        "format": "csv", "filters": {},
        "tables": {t: {"file": f"{t}.csv", "rows": rows[t]} for t in TABLES}}))
    return folder


def test_hand_written_csv_conventions(tmp_path):
    """Written by hand from the documented conventions (not by our writer): text that looks like
    a null stays text, empty = null, -inf is a float, true/false, compact JSON, ISO UTC."""
    d = load(_hand_export(tmp_path / "hand"))
    g = d.guesses
    assert g["participant_id"].tolist() == ["NA", "null"]
    assert g["answer_text"].tolist() == ["NA", ""]
    assert g["target_text"].iloc[0] == "NA"
    assert g["answer_first_token_text"].iloc[0] == "NA" and pd.isna(g["answer_first_token_text"].iloc[1])
    assert g["model_answer_logprob"].iloc[0] == -np.inf and np.isnan(g["model_answer_logprob"].iloc[1])
    assert g["reaction_ms"].iloc[0] == 812.5 and np.isnan(g["reaction_ms"].iloc[1])
    assert g["skipped"].tolist() == [False, True]
    assert g["answer_token_ids"].tolist() == [[9], []]
    assert g["server_received_at"].iloc[0] == pd.Timestamp("2026-01-02T03:04:05.123456Z")
    assert d.items["model_top_k"].iloc[0][0] == [5, -0.5, "NA", False]
    assert d.items["answer_counts"].iloc[0] == {"9": 1}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "items.csv").unlink(), "items.csv is missing"),
        (lambda f: (f / "manifest.json").unlink(), "no manifest.json"),
        (lambda f: _edit(f / "manifest.json", '"schema_version": "1"', '"schema_version": "2"'),
         "schema version 2"),
        (lambda f: _edit(f / "guesses.csv", "model_entropy,pilot", "entropy,pilot"),
         "lacks the column model_entropy"),
        (lambda f: _edit(f / "guesses.csv", "\n2,null,game,,,7", "\n2,null,game,,,seven"),
         "column item_id, data row 2: 'seven' is not an integer"),
        (lambda f: _edit(f / "guesses.csv", "\n2,null,game,,,7", "\n2,null,game,,,"),
         "column item_id: 1 empty value (first at data row 2); this column may not be empty"),
        (lambda f: _edit(f / "guesses.csv", "false,false,false\n2,", "maybe,false,false\n2,"),
         "'maybe' at data row 1 is not true/false"),
        (lambda f: _edit(f / "manifest.json", '"rows": 2', '"rows": 3'),
         "has 2 rows but manifest.json says 3"),
        (lambda f: _edit(f / "guesses.csv", "\n2,null,game,,,7", "\n2,null,game,,,8"),
         "refer to items not in the items table"),
        (lambda f: _edit(f / "items.csv", '"[0,0,0,0,0,0,0,0,0,0,0,0,0]"', '"[0,0]"'),
         "model_logz has 2 values but model 1 has 13 temperatures"),
        (lambda f: _edit(f / "items.csv", '"{""9"":1}"', '"{""9"":1"'), "not valid JSON"),
    ],
)
def test_damaged_exports_fail_with_a_clear_message(tmp_path, damage, message):
    folder = _hand_export(tmp_path / "hand")
    damage(folder)
    with pytest.raises(ExportFormatError) as err:
        load(folder)
    assert message in str(err.value)


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_extra_columns_are_ignored_with_a_warning(tmp_path):
    folder = _hand_export(tmp_path / "hand")
    text = (folder / "participants.csv").read_text().splitlines()
    text = [text[0] + ",shoe_size"] + [line + ",42" for line in text[1:]]
    (folder / "participants.csv").write_text("\n".join(text) + "\n")
    d = load(folder)
    assert "shoe_size" not in d.participants
    assert any("shoe_size" in w for w in d.warnings)


def test_zip_of_the_export_folder_and_lean_reading(csv_export, tmp_path):
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in csv_export.iterdir():
            zf.write(f, arcname=f"my-export/{f.name}")
    d = load(z, lean=True)
    assert "prefix_text" not in d.guesses and "is_correct" in d.guesses
    assert len(d.guesses) == len(load(csv_export).guesses)


def test_not_an_export(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ExportFormatError, match="neither a folder nor a .zip"):
        load(tmp_path / "notes.txt")
    with pytest.raises(ExportFormatError, match="does not exist"):
        load(tmp_path / "nothing")
    shutil.copy(tmp_path / "notes.txt", tmp_path / "fake.zip")
    with pytest.raises(ExportFormatError):
        load(tmp_path / "fake.zip")
