"""Read a humanlm export (folder or .zip; CSV, JSONL or Parquet) into checked pandas DataFrames.

Why a checking reader: a researcher gets an export by e-mail or from a repository, perhaps
re-saved by a spreadsheet or cut off while copying. Every table and column is compared with
`analysis.schema` (the same definition the exporter writes from), so a problem shows up as one
clear sentence naming the file, column and row, not as a wrong number three steps later.

Types after loading, the same for every format:
    int       -> int64 (nullable columns: pandas Int64, missing = <NA>)
    float     -> float64 (missing = NaN; CSV "-inf" is -inf)
    str       -> pandas string (missing = NaN; a non-nullable empty CSV cell is "")
    bool      -> bool (a nullable column with missing values: pandas boolean, missing = <NA>)
    json      -> Python lists / dicts (missing = None)
    datetime  -> datetime64[us, UTC] (missing = NaT)
Text such as "NA", "null" or "nan" typed by a participant stays text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .schema import EXPORT_TABLES, FORMATS, MODEL_TABLES, SCHEMA_VERSION, TABLES, Table


class AnalysisError(ValueError):
    """A problem with the data or the options of an analysis, explained for a researcher."""


class ExportFormatError(AnalysisError):
    """The files are not a readable humanlm export (missing file or column, wrong version, bad
    value). The message names the file, the column and, where it helps, the row."""


# Columns the metrics and the report use. `load(path, lean=True)` reads only these from the
# guesses table (the long text columns of a million answers cost memory and time, and the
# analysis does not need them); every column is still checked to be present.
ANALYSIS_COLUMNS: dict[str, list[str]] = {
    "guesses": [
        "guess_id", "participant_id", "source", "study_id", "room_id", "item_id", "document_id",
        "position", "mode", "target_token_id", "answer_text", "answer_first_token_id",
        "answer_first_token_text", "skipped", "is_correct", "match_rule", "answer_index",
        "reaction_ms", "judgement", "reported_probability", "model_id", "model_answer_logprob",
        "model_answer_rank", "model_target_logprob", "model_target_rank", "model_top1_id",
        "model_entropy", "pilot", "excluded", "external",
    ],
}

# Columns added to schema version 1 after its first exports (pairwise and distribution answers):
# an export written before them lacks the column and reads as if every value were empty, which
# is what it means (no such answers, no drawn alternatives). Any other missing column is an error.
ADDED_LATER: dict[str, tuple[str, ...]] = {
    "guesses": ("judgement",),
    "items": ("model_alternatives",),
    "item_models": ("logz",),
}

# Whole tables added to schema version 1 later (several models on the same human answers: one
# row per (answer, model) and per (item, model)). An export written before them has no such
# file, and it reads as the empty table it means: no model's per-answer numbers.
LATER_TABLES: tuple[str, ...] = tuple(MODEL_TABLES)

# Every table the reader knows: the five of every export, then the later ones.
ALL_TABLES: dict[str, Table] = EXPORT_TABLES


def empty_table(name: str) -> pd.DataFrame:
    """The table `name` with no rows, every column in the type the reader gives it."""
    table = ALL_TABLES[name]
    return _convert(pd.DataFrame({c: pd.Series([], dtype=object) for c in table.column_names}),
                    f"{name} (empty)", table)


@dataclass
class ExportData:
    """A loaded export: one DataFrame per table, the manifest, and what the reader noticed.

    Use `data.guesses`, `data["items"]`, ... The frames are plain pandas; `warnings` lists
    things that did not stop loading (extra columns, references to missing models)."""

    guesses: pd.DataFrame
    items: pd.DataFrame
    participants: pd.DataFrame
    studies: pd.DataFrame
    models: pd.DataFrame
    manifest: dict[str, Any]
    path: str = ""
    warnings: list[str] = field(default_factory=list)
    # Added later (LATER_TABLES): empty when the export has none.
    answer_models: pd.DataFrame = field(default_factory=lambda: empty_table("answer_models"))
    item_models: pd.DataFrame = field(default_factory=lambda: empty_table("item_models"))
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in ALL_TABLES:
            raise KeyError(f"no table {name!r}; tables: {', '.join(ALL_TABLES)}")
        return getattr(self, name)

    def keys(self):
        return ALL_TABLES.keys()

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return {name: getattr(self, name) for name in ALL_TABLES}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={len(getattr(self, n))}" for n in ALL_TABLES)
        return f"ExportData({self.path!r}: {sizes})"


# --------------------------------------------------------------------------------- entry point


def load(path: str | Path, *, lean: bool = False) -> ExportData:
    """Read the export at `path` (a folder, or a .zip of the same files) and check it.

    `lean=True` reads only the guesses columns the analysis uses (`ANALYSIS_COLUMNS`); all
    columns are still checked to be present. Raises ExportFormatError with a plain-language
    message for anything that is not a complete export of schema version 1.
    """
    path = Path(path)
    if not path.exists():
        raise ExportFormatError(f"{path} does not exist")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ExportFormatError(
                f"{path} is neither a folder nor a .zip file; give the export folder or its zip"
            )
        tmp = Path(tempfile.mkdtemp(prefix="humanlm-analysis-"))
        try:
            with zipfile.ZipFile(path) as zf:
                zf.extractall(tmp)
            return _load_folder(_export_root(tmp, path), str(path), lean)
        except zipfile.BadZipFile as exc:
            raise ExportFormatError(f"{path}: damaged zip file ({exc})") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_folder(_export_root(path, path), str(path), lean)


def _export_root(folder: Path, shown: Path) -> Path:
    """The folder holding manifest.json: the folder itself or its single subfolder (a zip made
    by zipping the export folder)."""
    if (folder / "manifest.json").is_file():
        return folder
    subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))]
    if len(subs) == 1 and (subs[0] / "manifest.json").is_file():
        return subs[0]
    raise ExportFormatError(
        f"{shown}: no manifest.json found; this does not look like a humanlm export "
        "(expected manifest.json, guesses.*, items.*, participants.*, studies.*, models.*)"
    )


def _read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportFormatError(f"manifest.json cannot be read: {exc}") from None
    if not isinstance(manifest, dict):
        raise ExportFormatError("manifest.json must hold a JSON object")
    version = manifest.get("schema_version")
    if version is None:
        raise ExportFormatError("manifest.json has no schema_version; is this a humanlm export?")
    if str(version) != SCHEMA_VERSION:
        raise ExportFormatError(
            f"this export uses schema version {version}, but this analysis reads version "
            f"{SCHEMA_VERSION}; use the humanlm version that wrote it, or re-export the data"
        )
    fmt = manifest.get("format")
    if fmt not in FORMATS:
        raise ExportFormatError(
            f"manifest.json: format {fmt!r} is not one of {', '.join(FORMATS)}"
        )
    if not isinstance(manifest.get("tables", {}), dict):
        raise ExportFormatError("manifest.json: 'tables' must be an object")
    return manifest


def _load_folder(root: Path, shown: str, lean: bool) -> ExportData:
    manifest = _read_manifest(root)
    fmt = manifest["format"]
    warnings: list[str] = []
    frames: dict[str, pd.DataFrame] = {}
    for name, table in ALL_TABLES.items():
        entry = manifest.get("tables", {}).get(name) or {}
        filename = entry.get("file") or f"{name}.{fmt}"
        file = root / filename
        if not file.is_file() and name in LATER_TABLES and not entry:
            frames[name] = empty_table(name)  # an export from before the table existed
            continue
        if not file.is_file():
            raise ExportFormatError(
                f"{filename} is missing from {shown} (the export must contain the tables "
                f"{', '.join(f'{t}.{fmt}' for t in TABLES)})"
            )
        wanted = ANALYSIS_COLUMNS.get(name) if lean else None
        df = _read_table(file, fmt, table, wanted, warnings,
                         unescape=fmt == "csv" and manifest.get("csv_text_escape") == "'")
        expected_rows = entry.get("rows")
        if expected_rows is not None and int(expected_rows) != len(df):
            raise ExportFormatError(
                f"{filename} has {len(df)} rows but manifest.json says {expected_rows}: the "
                "export is incomplete or was edited (was it cut off while copying?)"
            )
        frames[name] = df
    data = ExportData(**frames, manifest=manifest, path=shown, warnings=warnings)
    _check_references(data)
    return data


# ------------------------------------------------------------------------------- table readers


def _read_table(
    file: Path, fmt: str, table: Table, wanted: list[str] | None, warnings: list[str],
    unescape: bool = False,
) -> pd.DataFrame:
    try:
        if fmt == "csv":
            df = _read_csv(file, table, wanted, warnings)
        elif fmt == "jsonl":
            df = _read_jsonl(file, table, warnings)
        else:
            df = _read_parquet(file, table, wanted, warnings)
    except ExportFormatError:
        raise
    except UnicodeDecodeError:
        raise ExportFormatError(f"{file.name} is not UTF-8 text") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise ExportFormatError(f"{file.name} cannot be read as {fmt}: {exc}") from None
    columns = [c for c in table.column_names if wanted is None or c in wanted]
    for name in ADDED_LATER.get(table.name, ()):
        if name in columns and name not in df.columns:  # an older export: all empty
            df[name] = pd.Series([None] * len(df), index=df.index, dtype=object)
    df = df[columns]
    if unescape:
        df = _undo_formula_escape(df, table)
    return _convert(df, file.name, table)


def _undo_formula_escape(df: pd.DataFrame, table: Table) -> pd.DataFrame:
    """CSV exports that say so in manifest.json (csv_text_escape: "'") put one ' before every
    text cell starting with = + - @ tab, carriage return or ', so spreadsheets do not run it as
    a formula; take it off again: a text cell starting with ' loses its first character."""
    for c in table.columns:
        if c.type == "str" and c.name in df.columns:
            df[c.name] = df[c.name].str.removeprefix("'")
    return df


def _check_header(names: list[str], file: str, table: Table, warnings: list[str]) -> None:
    later = ADDED_LATER.get(table.name, ())
    missing = [c for c in table.column_names if c not in names and c not in later]
    if missing:
        raise ExportFormatError(
            f"{file} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(table {table.name} of schema {SCHEMA_VERSION}; see codebook.csv)"
        )
    extra = [c for c in names if c not in table.column_names]
    if extra:
        warnings.append(f"{file}: columns not in schema {SCHEMA_VERSION} were ignored: {', '.join(extra)}")


def _read_csv(file: Path, table: Table, wanted: list[str] | None, warnings: list[str]) -> pd.DataFrame:
    header = pd.read_csv(file, nrows=0, dtype=str, keep_default_na=False).columns.tolist()
    _check_header(header, file.name, table, warnings)
    cols = [c for c in table.columns if (wanted is None or c.name in wanted) and c.name in header]
    dtypes, na = {}, {}
    for c in cols:
        dtypes[c.name] = {"int": "Int64", "float": "float64"}.get(c.type, "str")
        # An empty cell is null, except in non-nullable text columns (an empty answer is "").
        if c.nullable or c.type in ("int", "float"):
            na[c.name] = [""]
        if c.type == "float":
            na[c.name] = ["", "nan", "NaN"]  # the exporter writes a non-finite float as nan/inf/-inf
    kwargs = {"usecols": [c.name for c in cols], "dtype": dtypes, "keep_default_na": False,
              "na_values": na, "encoding": "utf-8"}
    try:
        return pd.read_csv(file, **kwargs)
    except ValueError:
        pass
    # Find the offending column and row for the message.
    raw = pd.read_csv(file, usecols=[c.name for c in cols], dtype=str, keep_default_na=False)
    for c in cols:
        if c.type in ("int", "float"):
            values = raw[c.name]
            parsed = pd.to_numeric(values.where(values != ""), errors="coerce")
            bad = parsed.isna() & (values != "")
            if c.type == "int":
                bad |= parsed.notna() & (parsed != np.floor(parsed))
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise ExportFormatError(
                    f"{file.name}, column {c.name}, data row {row + 1}: {values.iloc[row]!r} is "
                    f"not {'an integer' if c.type == 'int' else 'a number'}"
                )
    raise ExportFormatError(f"{file.name} cannot be parsed as CSV")


def _read_jsonl(file: Path, table: Table, warnings: list[str]) -> pd.DataFrame:
    rows = []
    with open(file, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportFormatError(f"{file.name}, line {number}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ExportFormatError(f"{file.name}, line {number}: expected a JSON object")
            rows.append(obj)
    names = list(rows[0]) if rows else table.column_names
    seen = set(names)
    for obj in rows[1:50]:
        seen.update(obj)
    _check_header(sorted(seen, key=lambda n: (n not in names, n)), file.name, table, warnings)
    columns = {}
    for c in table.columns:
        columns[c.name] = [obj.get(c.name) for obj in rows]
    df = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})
    for c in table.columns:
        if c.type == "json":
            continue  # native JSON values are the result already
        if c.type == "str":
            df[c.name] = df[c.name].astype("str").where(df[c.name].notna())
    return df


def _read_parquet(
    file: Path, table: Table, wanted: list[str] | None, warnings: list[str]
) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportFormatError(
            "reading Parquet needs pyarrow: pip install 'humanlm[parquet]' (or export as CSV)"
        ) from None
    try:
        names = pq.read_schema(file).names
    except Exception as exc:  # noqa: BLE001 (pyarrow raises several types for damaged files)
        raise ExportFormatError(f"{file.name} is not a readable Parquet file: {exc}") from None
    _check_header(names, file.name, table, warnings)
    pt = pq.read_table(file, columns=[c for c in table.column_names
                                      if (wanted is None or c in wanted) and c in names])
    return pt.to_pandas()


# ---------------------------------------------------------------------------------- converting


def _bad(file: str, column: str, rows: np.ndarray, noun: str, why: str = "") -> ExportFormatError:
    n, first = len(rows), int(rows[0]) + 1
    return ExportFormatError(
        f"{file}, column {column}: {n} {noun}{'s' if n > 1 else ''} (first at data row {first})"
        + (f"; {why}" if why else "")
    )


def _convert(df: pd.DataFrame, file: str, table: Table) -> pd.DataFrame:
    """Bring every column to the documented type; nulls only where the schema allows them."""
    out = {}
    for c in table.columns:
        if c.name not in df.columns:
            continue
        s = df[c.name]
        if c.type == "int":
            num = pd.to_numeric(s, errors="coerce") if s.dtype == object else s
            if s.dtype == object:
                bad = num.isna() & s.notna()
                if bad.any():
                    raise _bad(file, c.name, np.flatnonzero(bad.to_numpy()), "value that is not an integer")
            num = num.astype("Float64") if num.dtype == object else num
            try:
                s = num.astype("Int64")
            except (TypeError, ValueError):
                raise _bad(file, c.name, np.flatnonzero(
                    (num.notna() & (num.astype(float) % 1 != 0)).to_numpy()), "value that is not an integer"
                ) from None
        elif c.type == "float":
            s = pd.to_numeric(s, errors="coerce").astype("float64") if s.dtype == object else s.astype("float64")
        elif c.type == "bool":
            s = _to_bool(s, file, c.name, c.nullable)
        elif c.type == "str":
            s = s.astype("str").where(s.notna()) if s.dtype != "str" else s
        elif c.type == "json":
            s = _to_json(s, file, c.name)
        elif c.type == "datetime":
            if not isinstance(s.dtype, pd.DatetimeTZDtype):
                try:
                    s = pd.to_datetime(s, utc=True, format="ISO8601")
                except (ValueError, TypeError) as exc:
                    raise ExportFormatError(
                        f"{file}, column {c.name}: not an ISO 8601 date-time ({exc})"
                    ) from None
            s = s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        nulls = s.isna() if c.type != "json" else s.map(lambda v: v is None)
        if not c.nullable and bool(nulls.any()):
            raise _bad(file, c.name, np.flatnonzero(nulls.to_numpy()), "empty value",
                       "this column may not be empty")
        if c.type == "int" and not c.nullable:
            s = s.astype("int64")
        out[c.name] = s
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _to_bool(s: pd.Series, file: str, column: str, nullable: bool = False) -> pd.Series:
    if nullable and s.dtype != bool:
        missing = s.isna().to_numpy()
        if missing.any():  # e.g. is_correct of an answer to a stem: pandas boolean with <NA>
            filled = s.fillna(False) if s.dtype == "boolean" else s.astype(object).where(~missing, "false")
            values = _to_bool(filled, file, column)
            return pd.Series(values.to_numpy(), index=s.index, dtype="boolean").mask(missing)
    if s.dtype == bool:
        return s
    if s.dtype == "boolean":
        if s.isna().any():
            raise _bad(file, column, np.flatnonzero(s.isna().to_numpy()), "empty value",
                       "this column may not be empty")
        return s.astype(bool)
    text = s.astype("str")
    true = text.isin(["true", "True", "1"]).to_numpy()
    false = text.isin(["false", "False", "0"]).to_numpy()
    bad = ~(true | false) | s.isna().to_numpy()
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ExportFormatError(
            f"{file}, column {column}: {s.iloc[rows[0]]!r} at data row {rows[0] + 1} is not "
            "true/false"
        )
    return pd.Series(true, index=s.index)


def _to_json(s: pd.Series, file: str, column: str) -> pd.Series:
    values = s.tolist()
    out = []
    for row, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(None)
        elif isinstance(v, str):
            if v == "":
                out.append(None)
                continue
            try:
                out.append(json.loads(v))
            except json.JSONDecodeError:
                raise ExportFormatError(
                    f"{file}, column {column}, data row {row + 1}: not valid JSON: {v[:60]!r}"
                ) from None
        elif isinstance(v, np.ndarray):
            out.append(v.tolist())
        else:
            out.append(v)
    return pd.Series(out, index=s.index, dtype=object)


# --------------------------------------------------------------------------- cross-table checks


def _check_references(data: ExportData) -> None:
    g, items, models = data.guesses, data.items, data.models
    if "item_id" in g and len(g):
        known = pd.Index(items["item_id"])
        missing = ~g["item_id"].isin(known)
        if missing.any():
            ids = g.loc[missing, "item_id"].unique()[:5].tolist()
            raise ExportFormatError(
                f"{int(missing.sum())} answers refer to items not in the items table "
                f"(e.g. item_id {', '.join(map(str, ids))}); was the items file edited?"
            )
    if items["item_id"].duplicated().any():
        dup = items.loc[items["item_id"].duplicated(), "item_id"].iloc[0]
        raise ExportFormatError(f"items table lists item_id {dup} more than once")
    if models["model_id"].duplicated().any():
        raise ExportFormatError("models table lists a model_id more than once")
    model_ids = set(models["model_id"].tolist())
    used = set(items["model_id"].dropna().astype(int).tolist())
    if "model_id" in g:
        used |= set(g["model_id"].dropna().astype(int).tolist())
    for name, key, parent, parent_name in (("answer_models", "guess_id", g, "guesses"),
                                           ("item_models", "item_id", items, "items")):
        long = data[name]
        if not len(long):
            continue
        used |= set(long["model_id"].astype(int).tolist())
        dup = long.duplicated([key, "model_id"])
        if dup.any():
            r = long.loc[dup].iloc[0]
            raise ExportFormatError(
                f"{name} lists {key} {r[key]} with model {r['model_id']} more than once")
        if key in parent:
            unknown = ~long[key].isin(pd.Index(parent[key]))
            if unknown.any():
                ids = long.loc[unknown, key].unique()[:5].tolist()
                raise ExportFormatError(
                    f"{int(unknown.sum())} rows of {name} refer to {parent_name} not in the "
                    f"{parent_name} table (e.g. {key} {', '.join(map(str, ids))}); was a file edited?")
    unknown = sorted(used - model_ids)
    if unknown:
        data.warnings.append(
            f"model ids {unknown} are used but missing from the models table; their model "
            "numbers cannot be interpreted and are left out of the analysis"
        )
    for _, m in models.iterrows():
        temps = m["temperatures"]
        if not isinstance(temps, list) or not all(isinstance(t, (int, float)) for t in temps):
            raise ExportFormatError(
                f"models table, model {m['model_id']}: temperatures must be a list of numbers"
            )
    # model_logz must match the temperature grid of the item's model.
    grid = {int(m["model_id"]): len(m["temperatures"]) for _, m in models.iterrows()}
    for row in items[["item_id", "model_id", "model_logz", "model_top_k"]].itertuples(index=False):
        if row.model_logz is None or pd.isna(row.model_id):
            continue
        n = grid.get(int(row.model_id))
        if n is not None and (not isinstance(row.model_logz, list) or len(row.model_logz) != n):
            raise ExportFormatError(
                f"items table, item {row.item_id}: model_logz has "
                f"{len(row.model_logz) if isinstance(row.model_logz, list) else 'no'} values but "
                f"model {int(row.model_id)} has {n} temperatures"
            )
        if row.model_top_k is not None and not isinstance(row.model_top_k, list):
            raise ExportFormatError(f"items table, item {row.item_id}: model_top_k must be a list")
