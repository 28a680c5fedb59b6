"""The `humanlm` command line: database, corpus import, scoring, set-up and serving.

Every command that can fail on user input prints one clear line to stderr and exits non-zero;
every import or scoring step commits only complete units (a whole import; one whole document).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext
from sqlalchemy import Integer, cast, func, select
from tqdm import tqdm

from .config import asset_dir
from .extensions import db

MIGRATIONS_DIR = asset_dir("migrations")


def _fail(message: str) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    sys.exit(1)


# ------------------------------------------------------------------------------------ database


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


class MigrationRefused(RuntimeError):
    """A migration found data it must not change silently; its message says what to do."""


def upgrade_database(url: str, revision: str = "head") -> None:
    """Apply Alembic migrations (creates the SQLite file on first use). A migration that refuses
    to run becomes a clear CLI error (exit 1), with the database left at the last revision."""
    from alembic import command

    db.configure(url)
    try:
        command.upgrade(alembic_config(url), revision)
    except MigrationRefused as refused:
        raise click.ClickException(str(refused)) from None


@click.group("db", help="Create or migrate the database (Alembic).")
def db_group() -> None:
    pass


@db_group.command("upgrade", help="Apply all migrations up to REVISION (default: head).")
@click.argument("revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    upgrade_database(current_app.config["DATABASE_URL"], revision)
    click.echo(f"Database at {_safe_url()} is at revision {revision}.")


@db_group.command("current", help="Show the database's current revision.")
@with_appcontext
def db_current() -> None:
    from alembic import command

    command.current(alembic_config(current_app.config["DATABASE_URL"]))


@db_group.command("revision", help="Write a new migration from model changes (developers).")
@click.option("-m", "--message", required=True, help="Descriptive name, e.g. 'add rooms'.")
@with_appcontext
def db_revision(message: str) -> None:
    from alembic import command

    command.revision(
        alembic_config(current_app.config["DATABASE_URL"]), message=message, autogenerate=True
    )


def _safe_url() -> str:
    from sqlalchemy.engine import make_url

    return make_url(current_app.config["DATABASE_URL"]).render_as_string(hide_password=True)


# -------------------------------------------------------------------------------------- corpus


@click.group("corpus", help="Import and list text corpora.")
def corpus_group() -> None:
    pass


def _tokenizer_or_fail():
    from .lm import ModelSpecError, load_tokenizer

    try:
        return load_tokenizer(current_app.config["MODEL"])
    except ModelSpecError as exc:
        _fail(str(exc))


def _import(name: str, raw_docs, min_prefix_tokens: int | None,
            pairwise_alternatives: int | None = None) -> None:
    from .corpus import CorpusImportError, get_or_create_corpus, import_documents

    tokenizer = _tokenizer_or_fail()
    session = db.session
    try:
        corpus = get_or_create_corpus(
            session, name,
            min_prefix_tokens=min_prefix_tokens
            if min_prefix_tokens is not None else current_app.config["MIN_PREFIX_TOKENS"],
            pairwise_alternatives=pairwise_alternatives,
        )
        report = import_documents(
            session, corpus, raw_docs, tokenizer,
            max_tokens=current_app.config["MAX_DOCUMENT_TOKENS"],
        )
        session.commit()
    except CorpusImportError as exc:
        session.rollback()
        _fail(str(exc))
    except BaseException:
        session.rollback()
        raise
    click.echo(
        f"Corpus '{report.corpus}': added {report.added} documents "
        f"({report.items} token positions, {report.playable} playable), "
        f"skipped {report.duplicates} already imported"
        + (f", cut {report.cut} long texts at sentence boundaries" if report.cut else "")
        + "."
    )


@corpus_group.command(
    "import",
    help="Import .txt/.jsonl/.csv files (a file or a folder) into a corpus. A folder's symbolic "
    "links to files outside it, and links to folders, are skipped with a line saying so.",
)
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--corpus", "name", default="default", show_default=True, help="Corpus name.")
@click.option("--text-field", default="text", show_default=True, help="Text field in .jsonl/.csv.")
@click.option(
    "--split", type=click.Choice(["file", "blank-line"]), default="file", show_default=True,
    help=".txt files: one document per file, or one per blank-line-separated block.",
)
@click.option("--min-prefix-tokens", type=int, default=None,
              help="Playability rule for a NEW corpus: skip the first N positions.")
@click.option("--pairwise-alternatives", type=int, default=None, metavar="N",
              help="For a NEW corpus: when it is scored, draw N tokens per position from the "
              "model's full distribution (the pairwise game's alternatives; 0-16, default 0).")
@with_appcontext
def corpus_import(path: Path, name: str, text_field: str, split: str, min_prefix_tokens: int | None,
                  pairwise_alternatives: int | None) -> None:
    from .corpus import CorpusImportError, read_path

    try:
        raw_docs = read_path(
            path, text_field=text_field, split=split,
            max_bytes=current_app.config["MAX_IMPORT_BYTES"],
            on_skip=lambda line: click.echo(line, err=True),  # links out of the folder, pipes
        )
    except CorpusImportError as exc:
        _fail(str(exc))
    _import(name, raw_docs, min_prefix_tokens, pairwise_alternatives)


DEMO_PAIRWISE_ALTERNATIVES = 8


@corpus_group.command("import-demo", help="Import the built-in demo corpus (45 passages), with "
                      f"{DEMO_PAIRWISE_ALTERNATIVES} pairwise alternatives per position when new.")
@with_appcontext
def corpus_import_demo() -> None:
    from .corpus import demo_documents
    from .models import Corpus

    name = current_app.config["DEMO_CORPUS"]
    new = db.session.scalar(select(Corpus.id).where(Corpus.name == name)) is None
    # A new demo corpus can be played in every mode; an older one keeps how it was scored.
    _import(name, demo_documents(), None, DEMO_PAIRWISE_ALTERNATIVES if new else None)


@corpus_group.command("list", help="List corpora with document, item and scoring counts.")
@with_appcontext
def corpus_list() -> None:
    from .models import Corpus, Document, Item, ScoredDocument

    rows = db.session.execute(
        select(Corpus.name, func.count(func.distinct(Document.id)), func.count(Item.id),
               func.sum(cast(Item.playable, Integer)))
        .join(Document, Document.corpus_id == Corpus.id, isouter=True)
        .join(Item, Item.document_id == Document.id, isouter=True)
        .group_by(Corpus.name).order_by(Corpus.name)
    ).all()
    if not rows:
        click.echo("No corpora yet. Try `humanlm corpus import-demo`.")
    for name, n_docs, n_items, n_playable in rows:
        scored = db.session.scalar(
            select(func.count(func.distinct(ScoredDocument.document_id)))
            .join(Document, Document.id == ScoredDocument.document_id)
            .join(Corpus).where(Corpus.name == name)
        )
        click.echo(f"{name}: {n_docs} documents, {n_items} positions "
                   f"({n_playable or 0} playable), {scored} scored")


# ------------------------------------------------------------------------------------- scoring


def _bar(description: str):
    """A progress bar on stderr with rate and ETA, for work that can take more than a second."""

    def make(total: int, unit: str):
        return tqdm(total=total, unit=unit, desc=description, disable=not total,
                    dynamic_ncols=True, file=sys.stderr)

    return make


@click.command("score", help="Score documents with the model (one forward pass per document), "
                             "and every answer's and answered item's probability under it.")
@click.option("--corpus", default=None, help="Only this corpus (default: all).")
@click.option("--model", "spec", default=None, help="Model spec (default: HUMANLM_MODEL).")
@click.option("--top-k", type=click.IntRange(1, 1000), default=None, help="Default: HUMANLM_TOP_K.")
@click.option("--fill-guesses", is_flag=True,
              help="Instead: fill exact model log-probs of guesses outside the stored top-k "
                   "and of word-mode answers.")
@click.option("--answers", "answers_only", is_flag=True,
              help="Instead: only each answer's and answered item's log-probs under the model's "
                   "OWN tokens (any tokenizer; exported as answer_models and item_models), no "
                   "per-position predictions.")
@click.option("--text-logprobs", "text_csv", default=None, type=click.Path(path_type=Path),
              help="Instead: each document's log-probability under the model's OWN tokens "
                   "(any tokenizer; nothing stored), written to this CSV, with totals printed.")
@with_appcontext
def score_command(corpus: str | None, spec: str | None, top_k: int | None, fill_guesses: bool,
                  text_csv: Path | None = None, answers_only: bool = False) -> None:
    from .lm import BackendError, ModelSpecError, load_model
    from .models import Corpus
    from .predictions import TokenizerMismatch, run_model_work

    cfg = current_app.config
    spec = spec or cfg["MODEL"]
    top_k = top_k or cfg["TOP_K"]
    if sum((fill_guesses, answers_only, text_csv is not None)) > 1:
        _fail("choose one of --fill-guesses, --answers and --text-logprobs")
    if corpus is not None and db.session.scalar(select(Corpus).where(Corpus.name == corpus)) is None:
        _fail(f"unknown corpus '{corpus}' (see `humanlm corpus list`)")
    try:
        model = load_model(spec, max_tokens=cfg["MAX_DOCUMENT_TOKENS"], n_threads=cfg["N_THREADS"])
    except (ModelSpecError, BackendError) as exc:
        _fail(str(exc))
    if text_csv is not None:
        _text_logprobs(model, corpus, text_csv)
        return
    try:
        if fill_guesses:
            report = run_model_work(db.session, model, top_k=top_k, predictions=False,
                                    guesses=True, words=True, progress=_bar("Filling answers"))
            click.echo(f"Filled exact model log-probs for {report.guesses} guesses and "
                       f"{report.words} word answers.")
            if report.unscorable:
                click.echo(f"{report.unscorable} word answers could not be scored (no tokens, "
                           "or no room left in the model's context after their prefix).")
            return
        if not answers_only:
            report = run_model_work(db.session, model, top_k=top_k, corpus=corpus,
                                    skip_other_tokenizers=True,
                                    progress=_bar(f"Scoring with {model.name}"))
            _say_scored(report, spec, model)
        _fill_model_scores(model, top_k, corpus)
    except TokenizerMismatch as exc:  # (documents of another tokenizer are left out above)
        db.session.rollback()
        _fail(str(exc))
    except BackendError as exc:
        db.session.rollback()  # documents finished before the failure are kept (committed)
        _fail(str(exc))


def _say_scored(report, spec: str, model) -> None:
    """What `humanlm score` did with the per-position predictions."""
    if report.documents:
        click.echo(
            f"Scored {report.documents} documents ({report.tokens} tokens, "
            f"{report.tokens_per_second:.0f} tokens/s); {report.already_scored} were already scored."
        )
    elif not report.other_tokenizer:
        click.echo(f"Nothing to score: all {report.already_scored} documents are already scored.")
    if report.other_tokenizer:
        others = ", ".join(sorted(report.other_tokenizer_ids))
        click.echo(
            f"{report.other_tokenizer} documents were tokenized with {others}, not with "
            f"{spec}'s tokenizer {model.tokenizer_id}: per-position predictions need the corpus's "
            f"tokenizer, so they have none from {spec} (to play them against it, import the texts "
            f"again with HUMANLM_MODEL={spec}). Their answers and answered items are scored "
            f"under {spec}'s own tokens below."
        )


def _fill_model_scores(model, top_k: int, corpus: str | None) -> None:
    """Every answer's and answered item's numbers under the model's own tokens."""
    from .predictions import fill_model_scores

    report = fill_model_scores(db.session, model, top_k=top_k, corpus=corpus,
                               progress=_bar(f"Answers under {model.name}"))
    if not report.answers and not report.items:
        click.echo(f"Answers under {model.spec}: nothing to fill ({report.already} answers "
                   "already have their log-probs).")
        return
    line = (f"Answers under {model.spec} (its own tokens): {report.answers} answers and "
            f"{report.items} items filled in {report.documents} documents ({report.passes} "
            f"forward passes, {report.seconds:.1f} s); {report.already} answers had them already.")
    if report.answers_unknown:
        line += (f" {report.answers_unknown} answers have no log-prob (no tokens, no room in the "
                 "model's context, or a number this backend cannot give).")
    click.echo(line)


def _text_logprobs(model, corpus: str | None, out: Path) -> None:
    """`humanlm score --text-logprobs`: per document ln p(text) under the model's own tokens."""
    import csv

    from .lm import BackendError
    from .lm.base import score_text
    from .models import Corpus, Document

    query = select(Document.id, Corpus.name, Document.text).join(Corpus).order_by(Document.id)
    if corpus is not None:
        query = query.where(Corpus.name == corpus)
    rows = db.session.execute(query).all()
    if not rows:
        _fail("no documents to score (see `humanlm corpus list`)")
    totals = {"tokens": 0, "bytes": 0, "logprob": 0.0, "unknown": 0}
    too_long = 0
    tmp = out.with_name(out.name + ".partial")
    try:
        with tmp.open("w", newline="") as fh, tqdm(
            total=len(rows), unit="doc", desc=f"Text log-probs with {model.name}",
            dynamic_ncols=True, file=sys.stderr,
        ) as bar:
            writer = csv.writer(fh)
            writer.writerow(["document_id", "corpus", "model", "tokenizer", "n_tokens", "n_bytes",
                             "logprob", "bits_per_byte", "unknown_tokens"])
            for doc_id, corpus_name, text in rows:
                try:
                    got = score_text(model, text)
                except ValueError:  # longer than the model's context in its own tokens
                    too_long += 1
                    writer.writerow([doc_id, corpus_name, model.spec, model.tokenizer_id, "",
                                     len(text.encode("utf-8")), "", "", ""])
                    bar.update(1)
                    continue
                writer.writerow([doc_id, corpus_name, model.spec, model.tokenizer_id, got.n_tokens,
                                 got.n_bytes, "" if got.logprob is None else f"{got.logprob:.6f}",
                                 "" if got.bits_per_byte is None else f"{got.bits_per_byte:.6f}",
                                 got.unknown])
                totals["tokens"] += got.n_tokens
                totals["bytes"] += got.n_bytes
                totals["unknown"] += got.unknown
                if got.logprob is not None:
                    totals["logprob"] += got.logprob
                bar.update(1)
    except (OSError, BackendError) as exc:
        tmp.unlink(missing_ok=True)
        _fail(str(exc))
    tmp.replace(out)
    line = f"Wrote {out}: {len(rows)} documents, {totals['tokens']} {model.spec} tokens"
    if too_long:
        line += (f" ({too_long} documents longer than the model's context in its tokens are "
                 "left empty and out of the totals)")
    if totals["unknown"] or not totals["tokens"]:
        click.echo(f"{line}; {totals['unknown']} token log-probs are not known to this model "
                   "(top-k only), so those documents have no total.")
    else:
        bpb = -totals["logprob"] / math.log(2) / max(totals["bytes"], 1)
        click.echo(f"{line}; ln p = {totals['logprob']:.1f} nats, "
                   f"{-totals['logprob'] / max(totals['tokens'], 1):.3f} nats/token, "
                   f"{bpb:.3f} bits/byte.")


@click.command("models", help="List the language models that scored documents: spec, tokenizer, "
                              "what each can compute, the corpora each scored, and how many "
                              "answers and items have its log-probs.")
@with_appcontext
def models_command() -> None:
    from .models import (
        AnswerModelScore,
        Corpus,
        Document,
        ItemModelScore,
        LanguageModel,
        Prediction,
        ScoredDocument,
    )

    models = db.session.scalars(select(LanguageModel).order_by(LanguageModel.id)).all()
    if not models:
        click.echo("No models yet: `humanlm score` scores documents with HUMANLM_MODEL.")
    for model in models:
        settings = model.settings or {}
        can = ("top-k log-probs only: no entropy or log Z, ranks beyond k absent"
               if settings.get("top_k_only") else
               "full distribution: entropy, log Z(T), exact ranks")
        scored = db.session.execute(
            select(Corpus.name, func.count(ScoredDocument.id))
            .join(Document, Document.id == ScoredDocument.document_id)
            .join(Corpus, Corpus.id == Document.corpus_id)
            .where(ScoredDocument.model_id == model.id)
            .group_by(Corpus.name).order_by(Corpus.name)
        ).all()
        n_predictions = db.session.scalar(
            select(func.count(Prediction.id)).where(Prediction.model_id == model.id))
        corpora = ", ".join(f"{name} ({n} documents)" for name, n in scored) or "none"
        n_answers, n_known = db.session.execute(
            select(func.count(AnswerModelScore.id), func.count(AnswerModelScore.logprob))
            .where(AnswerModelScore.model_id == model.id)).one()
        n_items = db.session.scalar(
            select(func.count(ItemModelScore.id)).where(ItemModelScore.model_id == model.id))
        click.echo(f"[{model.id}] {model.spec}  (top-k {model.top_k})\n"
                   f"    name: {model.name}; tokenizer: {model.tokenizer}\n"
                   f"    computes: {can}\n"
                   f"    corpora scored: {corpora}; {n_predictions} predictions\n"
                   f"    answers under its own tokens: {n_answers} ({n_known} with a log-prob); "
                   f"items: {n_items}")


@click.group("ngram", help="n-gram baselines over tiktoken tokens (spec ngram:FILE.ngram).")
def ngram_group() -> None:
    pass


@ngram_group.command(
    "train",
    help="Build an interpolated Kneser-Ney n-gram model from corpora in the database (--corpus) "
    "and/or text files or folders (.txt/.jsonl/.csv, one document per file or row). Score with "
    "`humanlm score --model ngram:FILE.ngram`.",
)
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--corpus", "corpora", multiple=True, help="A corpus in the database (repeatable).")
@click.option("--order", type=click.IntRange(1, 8), default=3, show_default=True,
              help="N: the longest n-gram (context of N-1 tokens).")
@click.option("--encoding", default="cl100k_base", show_default=True,
              help="tiktoken encoding: cl100k_base (works offline) or gpt2 (needs tiktoken's "
                   "download once).")
@click.option("--output", "-o", required=True, type=click.Path(path_type=Path),
              help="The model file to write (e.g. wiki-3gram.ngram).")
@click.option("--text-field", default="text", show_default=True, help="Text field in .jsonl/.csv.")
@with_appcontext
def ngram_train(files: tuple[Path, ...], corpora: tuple[str, ...], order: int, encoding: str,
                output: Path, text_field: str) -> None:
    from .corpus import CorpusImportError, read_path
    from .lm import ModelSpecError
    from .lm.ngram import NgramTrainError, train
    from .lm.tiktoken_vocab import TiktokenTokenizer
    from .models import Corpus, Document

    if not files and not corpora:
        _fail("name the training text: --corpus NAME and/or FILES")
    if output.is_dir() or not output.parent.is_dir():
        _fail(f"cannot write the model to {output} (give a file in an existing folder)")
    try:
        TiktokenTokenizer(encoding)  # fails early, before any reading, if unavailable
    except ModelSpecError as exc:
        _fail(str(exc))
    texts: list[str] = []
    sources: list[str] = []
    for name in corpora:
        corpus = db.session.scalar(select(Corpus).where(Corpus.name == name))
        if corpus is None:
            _fail(f"unknown corpus '{name}' (see `humanlm corpus list`)")
        texts.extend(db.session.scalars(
            select(Document.text).where(Document.corpus_id == corpus.id).order_by(Document.id)
        ))
        sources.append(f"corpus:{name}")
    for path in files:
        try:
            docs = read_path(path, text_field=text_field, max_bytes=1 << 40,
                             on_skip=lambda line: click.echo(line, err=True))
        except CorpusImportError as exc:
            _fail(str(exc))
        texts.extend(doc.text for doc in docs)
        sources.append(f"file:{path.name}")
    total = sum(len(t) for t in texts)
    with tqdm(total=total, unit="char", unit_scale=True, desc="Counting n-grams",
              disable=not total, dynamic_ncols=True, file=sys.stderr) as bar:
        def read(texts=texts):
            for text in texts:
                yield text
                bar.update(len(text))

        try:
            header = train(read(), order=order, encoding=encoding, output=output, sources=sources)
        except NgramTrainError as exc:
            _fail(str(exc))
    sizes = ", ".join(f"{n} {k}-grams" for k, n in enumerate(header["ngrams"], start=1))
    click.echo(f"Wrote {output}: {order}-gram {encoding} model of {header['documents']} documents "
               f"({header['tokens']} tokens; {sizes}). Spec: ngram:{output}")


# ----------------------------------------------------------------------- research data in/out


@click.command("export", help="Export answers, items, participants, studies and models, with a codebook.")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), default="csv",
              show_default=True, help="File format of every table (parquet needs pyarrow).")
@click.option("--zip", "as_zip", is_flag=True, help="Write OUT as one .zip file instead of a folder.")
@click.option("--study", "study_id", type=int, default=None, help="Only this study (id).")
@click.option("--room", "room", default=None, help="Only this classroom room (join code or id).")
@click.option("--since", default=None, help="Only answers received on/after this UTC date(-time).")
@click.option("--until", default=None, help="Only answers received before this UTC date(-time).")
@click.option("--include-pilot", is_flag=True, help="Also export pilot answers (left out by default).")
@click.option("--drop-excluded", is_flag=True,
              help="Leave out participants flagged excluded (kept, flagged, by default).")
@click.option("--no-external", is_flag=True, help="Leave out responses imported with import-responses.")
@with_appcontext
def export_command(out: Path, fmt: str, as_zip: bool, study_id: int | None, room: str | None,
                   since: str | None, until: str | None, include_pilot: bool,
                   drop_excluded: bool, no_external: bool) -> None:
    from .export import ExportError, ExportFilters, parse_datetime, write_export
    from .models import Room

    try:
        room_id = None
        if room is not None:
            found = db.session.scalar(select(Room).where(Room.code == room.strip().upper()))
            if found is None and room.isdigit():
                found = db.session.get(Room, int(room))
            if found is None:
                raise ExportError(f"there is no room {room!r} (give its join code or id)")
            room_id = found.id
        filters = ExportFilters(
            study_id=study_id, room_id=room_id,
            since=parse_datetime(since, "--since") if since else None,
            until=parse_datetime(until, "--until") if until else None,
            include_pilot=include_pilot, include_excluded=not drop_excluded,
            include_external=not no_external,
        )
        summary = write_export(db.session, out, fmt, filters, as_zip=as_zip)
    except ExportError as exc:
        _fail(str(exc))
    counts = ", ".join(f"{n} {name}" for name, n in summary.rows.items())
    click.echo(f"Exported {counts} to {summary.path} ({fmt}).")


@click.command("import-responses",
               help="Import human responses collected elsewhere (CSV: context,response[,target,count,participant,item_id]; "
                    "rows without a target are stems, completions with no true next word).")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="Name of this data set (default: the file name).")
@click.option("--mode", type=click.Choice(["word", "token"]), default="word", show_default=True,
              help="word: responses are whole words; token: scored by their first token.")
@click.option("--no-score", is_flag=True, help="Only store; score later with `humanlm score`.")
@with_appcontext
def import_responses_command(path: Path, name: str | None, mode: str, no_score: bool) -> None:
    from .lm import load_model, load_tokenizer
    from .predictions import run_model_work
    from .responses import ResponsesImportError, import_responses, read_rows

    cfg = current_app.config
    name = name or path.stem
    try:
        rows = read_rows(path, cfg["MAX_IMPORT_BYTES"])
        summary = import_responses(
            db.session, rows, load_tokenizer(cfg["MODEL"]), name=name, mode=mode,
            max_tokens=cfg["MAX_DOCUMENT_TOKENS"],
        )
        db.session.commit()
    except ResponsesImportError as exc:
        db.session.rollback()
        _fail(str(exc))
    click.echo(
        f"Imported {summary.responses} responses ({summary.rows} rows) on {summary.items} items "
        f"into corpus {summary.corpus!r}."
        + (f" {summary.stems} of the items are stems without a true continuation (no target: no "
           "correctness, no target log-prob)." if summary.stems else "")
    )
    if no_score:
        click.echo("Not scored yet: run `humanlm score` and `humanlm score --fill-guesses`.")
        return
    model = load_model(cfg["MODEL"], max_tokens=cfg["MAX_DOCUMENT_TOKENS"], n_threads=cfg["N_THREADS"])
    # One pass per context: its Predictions, every answer's first token, and each distinct
    # word continued from the context's cache.
    report = run_model_work(
        db.session, model, top_k=cfg["TOP_K"], corpus=summary.corpus, guesses=True,
        words=mode == "word", progress=_bar(f"Scoring with {model.name}"),
    )
    click.echo(f"Scored with {model.name}: {report.guesses} first-token and {report.words} word "
               f"log-probs filled ({report.word_scores} distinct words).")


@click.command(
    "analyze", context_settings={"ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
    help="Analyse an export: humans vs crowd vs model (see `humanlm analyze --help`).",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def analyze_command(args: tuple[str, ...]) -> None:
    """`humanlm analyze EXPORT -o report.html [--format json] ...`: analysis/cli.py does the work
    (it reads only the exported files, so the same command runs on a laptop without the app)."""
    from analysis.cli import main as analysis_main

    sys.exit(analysis_main(list(args), prog="humanlm analyze"))


# -------------------------------------------------------------------------------- setup, serve


@click.command("setup", help="Migrate the database, import the demo corpus and score it (idempotent).")
@click.pass_context
@with_appcontext
def setup_command(ctx: click.Context) -> None:
    ctx.invoke(db_upgrade)
    ctx.invoke(corpus_import_demo)
    ctx.invoke(score_command, corpus=current_app.config["DEMO_CORPUS"])


@click.command("serve", help="Serve the game on HUMANLM_HOST:HUMANLM_PORT (gunicorn, production-ready).")
@click.option("--host", default=None, help="Default: HUMANLM_HOST.")
@click.option("--port", type=int, default=None, help="Default: HUMANLM_PORT.")
@click.option("--debug", is_flag=True,
              help="Development server instead: reload on code changes, show the debugger.")
@with_appcontext
def serve_command(host: str | None, port: int | None, debug: bool) -> None:
    from .extensions import socketio

    app = current_app._get_current_object()
    host = host or app.config["HOST"]
    port = port or app.config["PORT"]
    click.echo(f"humanlm is running: http://{host}:{port}  (Ctrl+C to stop)")
    if debug:
        os.environ.pop("FLASK_RUN_FROM_CLI", None)  # Flask refuses app.run() inside its CLI otherwise
        if app.config["SERVE_JOBS"] and os.environ.get("WERKZEUG_RUN_MAIN") == "true":
            from .jobs import start_in_thread  # in the reloader's serving child only

            start_in_thread(app)
        socketio.run(app, host=host, port=port, debug=True, allow_unsafe_werkzeug=True)
        return
    from .green import patched
    from .launch import GREEN_WORKERS, WORKERS
    from .server import serve

    worker = str(app.config["SERVER_WORKER"]).strip().lower()
    if worker not in WORKERS:
        _fail(f"HUMANLM_SERVER_WORKER must be one of {', '.join(WORKERS)} (got {worker!r})")
    if worker in GREEN_WORKERS and not patched():
        _fail("the gevent server must be started by the `humanlm` command (webapp.launch), which "
              "patches the standard library first; or set HUMANLM_SERVER_WORKER=gthread")
    # The background jobs (webapp/jobs.py) run in a `humanlm worker` process that the server
    # starts and stops (server.py), unless HUMANLM_SERVE_JOBS=false: then run it yourself.
    serve(app, host, port, app.config["SERVER_THREADS"], worker)



@click.command("worker", help="Run the background jobs (model numbers of new answers, scoring "
                              "uploaded passages) until Ctrl+C or SIGTERM.")
@with_appcontext
def worker_command() -> None:
    import logging

    from .jobs import describe_queue, run_consumer

    app = current_app._get_current_object()
    nice = app.config["WORKER_NICE"]
    if not 0 <= nice <= 19:
        _fail(f"HUMANLM_WORKER_NICE must be between 0 and 19 (got {nice})")
    if nice and hasattr(os, "nice"):
        os.nice(nice)  # model work yields the CPU to the web server's live answers
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("huey").setLevel(logging.INFO)
    click.echo(f"Running background jobs from the {describe_queue(app)} (Ctrl+C to stop).")
    run_consumer(app)


def register_commands(app: Flask) -> None:
    for command in (db_group, corpus_group, score_command, models_command, ngram_group,
                    export_command,
                    import_responses_command, analyze_command, setup_command, serve_command,
                    worker_command):
        app.cli.add_command(command)
    from .research.cli import register as register_research_commands  # researcher, study

    register_research_commands(app)


def _verbose_option() -> click.Option:
    """--verbose: also show llama.cpp's own log lines (dropped by default)."""

    def apply(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        from .lm import set_verbose

        set_verbose(value)

    return click.Option(["--verbose"], is_flag=True, expose_value=False, is_eager=True,
                        callback=apply, help="Also show llama.cpp's own log lines.")


def main() -> None:
    from .app import create_app

    cli = FlaskGroup(create_app=lambda: create_app(), add_default_commands=False,
                     help="humanlm: be the language model.", params=[_verbose_option()])
    cli.main(prog_name="humanlm")
