"""The n-gram baseline (webapp/lm/ngram.py): interpolated Kneser-Ney over tiktoken tokens.

Expected probabilities are computed here independently of the module: by hand for a bigram model
of a three-sentence corpus, and by a plain dictionary implementation of the textbook formulas
(Chen & Goodman's interpolated Kneser-Ney, raw counts for grams at the document start) for a
trigram model, compared over every seen token and a sample of unseen ones at every position.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from fractions import Fraction

import numpy as np
import pytest

from webapp.lm import ModelSpecError, load_model, load_tokenizer
from webapp.lm.ngram import NgramModel, count_ngrams, read_header, train
from webapp.lm.stats import TEMPERATURES
from webapp.lm.tiktoken_vocab import TiktokenTokenizer

TINY = ["the cat sat", "the cat ran", "the dog sat"]
RICHER = [
    "the cat sat on the mat. the dog sat on the log.",
    "a cat and a dog sat on a mat",
    "the mat was red and the log was brown",
    "on the mat the cat sat and sat",
]


@pytest.fixture(scope="module")
def cl100k():
    return TiktokenTokenizer("cl100k_base")


@pytest.fixture(scope="module")
def bigram(tmp_path_factory):
    path = tmp_path_factory.mktemp("ngram") / "tiny.ngram"
    train(TINY, order=2, encoding="cl100k_base", output=path)
    return NgramModel(f"ngram:{path}")


@pytest.fixture(scope="module")
def trigram(tmp_path_factory):
    path = tmp_path_factory.mktemp("ngram") / "richer.ngram"
    train(RICHER, order=3, encoding="cl100k_base", output=path)
    return NgramModel(f"ngram:{path}")


def vocabulary_size(tok: TiktokenTokenizer) -> int:
    """|V|: the BPE tokens plus <|endoftext|> (other special tokens and id holes excluded)."""
    return sum(1 for i in range(tok.n_vocab) if tok.exists(i) and not tok.is_control(i)) + 1


# ------------------------------------------------------------------------ hand-checked bigram


def test_bigram_probabilities_by_hand(bigram, cl100k):
    """Corpus: <e> the cat sat <e> / <e> the cat ran <e> / <e> the dog sat <e>  (<e> = endoftext).

    Bigram counts: (<e>,the)=3 (the,cat)=2 (sat,<e>)=2, and 1 for (the,dog) (cat,sat) (cat,ran)
    (dog,sat) (ran,<e>): n1=5, n2=2, D2 = 5/9.
    Unigram continuation counts: the 1 (<e>), cat 1, dog 1, ran 1, sat 2 (cat, dog), <e> 2
    (sat, ran): total 8, 6 types, n1=4, n2=2, D1 = 1/2.
    P1(w) = max(a(w) - 1/2, 0)/8 + (1/2)(6/8)/|V|.
    """
    the, cat, sat, ran, dog = (cl100k.tokenize(w)[0] for w in ("the", " cat", " sat", " ran", " dog"))
    assert cl100k.tokenize("the cat sat") == [the, cat, sat]
    eot = cl100k.eot
    V = vocabulary_size(cl100k)
    assert V == 100257
    assert bigram.discounts == pytest.approx([0.5, 5 / 9])

    def p1(a):
        return max(Fraction(a) - Fraction(1, 2), 0) / 8 + Fraction(1, 2) * Fraction(6, 8) / V

    expected = {
        # P(sat | cat) = (1 - 5/9)/2 + (5/9)(2/2) P1(sat)
        (cat, sat): Fraction(4, 9) / 2 + Fraction(5, 9) * p1(2),
        # P(ran | cat) = (1 - 5/9)/2 + (5/9) P1(ran)
        (cat, ran): Fraction(4, 9) / 2 + Fraction(5, 9) * p1(1),
        # P(dog | cat): unseen after cat, (5/9) P1(dog)
        (cat, dog): Fraction(5, 9) * p1(1),
        # P(<e> | sat) = (2 - 5/9)/2 + (5/9)(1/2) P1(<e>)
        (sat, eot): Fraction(13, 9) / 2 + Fraction(5, 18) * p1(2),
        # an unseen token after cat: (5/9) (1/2)(6/8)/|V|
        (cat, cl100k.tokenize(" zebra")[0]): Fraction(5, 9) * p1(0),
    }
    for (context, word), p in expected.items():
        got = np.exp(bigram.next_token_logprobs([the, context])[word])
        assert got == pytest.approx(float(p), rel=1e-9), (context, word)
    # at the document start: P(the | <e>) = (3 - 5/9)/3 + (5/9)(1/3) P1(the)
    first = np.exp(bigram.next_token_logprobs([])[the])
    assert first == pytest.approx(float(Fraction(22, 27) + Fraction(5, 27) * p1(1)), rel=1e-9)


def test_unseen_context_backs_off_to_the_unigram(bigram, cl100k):
    zebra = cl100k.tokenize(" zebra")[0]
    sat = cl100k.tokenize(" sat")[0]
    after_zebra = bigram.next_token_logprobs(cl100k.tokenize("the zebra"))
    with np.errstate(divide="ignore"):
        unigram = np.log(bigram._unigram)
    np.testing.assert_allclose(after_zebra, unigram)
    V = vocabulary_size(cl100k)
    assert np.exp(after_zebra[sat]) == pytest.approx(1.5 / 8 + 0.375 / V, rel=1e-9)
    assert np.exp(after_zebra[zebra]) == pytest.approx(0.375 / V, rel=1e-9)


# ------------------------------------------------------------- trigram against a reference


def reference_kn(docs: list[list[int]], order: int, bos: int, V: int):
    """Textbook interpolated Kneser-Ney with plain dictionaries (independent of webapp)."""
    raw, start_raw, left = Counter(), Counter(), defaultdict(set)
    for doc in docs:
        s = [bos, *doc, bos]
        for k in range(1, order + 1):
            for i in range(len(s) - k + 1):
                if i + k - 1 == 0:
                    continue  # the BOS itself is never predicted
                g = tuple(s[i : i + k])
                if k == order:
                    raw[g] += 1
                elif i == 0:
                    start_raw[g] += 1
                else:
                    left[g].add(s[i - 1])
    adjusted = {k: {} for k in range(1, order + 1)}
    for g, c in raw.items():
        adjusted[order][g] = c
    for g, lefts in left.items():
        adjusted[len(g)][g] = len(lefts)
    for g, c in start_raw.items():
        adjusted[len(g)][g] = adjusted[len(g)].get(g, 0) + c
    discounts = {}
    for k, table in adjusted.items():
        n1 = sum(1 for c in table.values() if c == 1)
        n2 = sum(1 for c in table.values() if c == 2)
        discounts[k] = n1 / (n1 + 2 * n2) if n1 else 0.5

    def prob(w: int, h: tuple[int, ...]) -> float:
        if not h:
            table, d = adjusted[1], discounts[1]
            total = sum(table.values())
            return max(table.get((w,), 0) - d, 0) / total + d * len(table) / total / V
        k = len(h) + 1
        followers = {g[-1]: c for g, c in adjusted[k].items() if g[:-1] == h}
        if not followers:
            return prob(w, h[1:])
        total, d = sum(followers.values()), discounts[k]
        return max(followers.get(w, 0) - d, 0) / total + d * len(followers) / total * prob(w, h[1:])

    return prob, discounts


def test_trigram_matches_the_textbook_formulas_everywhere(trigram, cl100k):
    docs = [cl100k.tokenize(t) for t in RICHER]
    V = vocabulary_size(cl100k)
    prob, discounts = reference_kn(docs, 3, cl100k.eot, V)
    assert trigram.discounts == pytest.approx([discounts[1], discounts[2], discounts[3]])
    seen = sorted({t for d in docs for t in d} | {cl100k.eot})
    unseen = [cl100k.tokenize(w)[0] for w in (" zebra", " quantum", "!")]
    texts = [*RICHER, "the cat sat on the log was red", "zebra mat the"]
    checked = 0
    for text in texts:
        ids = cl100k.tokenize(text)
        history = [cl100k.eot, *ids]
        for i in range(len(ids) + 1):
            got = np.exp(trigram.next_token_logprobs(ids[:i]))
            h = tuple(history[max(0, i + 1 - 2) : i + 1])
            for w in [*seen, *unseen]:
                assert got[w] == pytest.approx(prob(w, h), rel=1e-9), (text, i, w)
                checked += 1
    assert checked > 1000


@pytest.mark.parametrize("order", [1, 2, 4])
def test_other_orders_match_the_textbook_formulas(order, cl100k, tmp_path):
    path = tmp_path / f"{order}.ngram"
    train(RICHER, order=order, encoding="cl100k_base", output=path)
    model = NgramModel(f"ngram:{path}")
    docs = [cl100k.tokenize(t) for t in RICHER]
    prob, _discounts = reference_kn(docs, order, cl100k.eot, vocabulary_size(cl100k))
    seen = sorted({t for d in docs for t in d} | {cl100k.eot})
    for text in ("the cat sat on the mat and the log", "a mat was red"):
        ids = cl100k.tokenize(text)
        history = [cl100k.eot, *ids]
        for i in range(len(ids) + 1):
            got = np.exp(model.next_token_logprobs(ids[:i]))
            h = tuple(history[max(0, i + 2 - order) : i + 1]) if order > 1 else ()
            for w in seen:
                assert got[w] == pytest.approx(prob(w, h), rel=1e-9), (order, text, i, w)
            assert got.sum() == pytest.approx(1.0, abs=1e-12)


def test_every_distribution_sums_to_one_over_the_vocabulary(trigram, cl100k):
    ids = cl100k.tokenize("the cat sat on the zebra and a mat. Unseen words: quantum chromodynamics")
    history = [cl100k.eot, *ids]
    for i in range(len(ids) + 1):
        p = trigram.distribution(history[: i + 1])
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert (p >= 0).all()
        # only real tokens get mass: the id holes and the unused special tokens get none
        assert p[100256] == 0 and p[cl100k.encoding.encode_single_token("<|fim_prefix|>")] == 0
        assert p[cl100k.eot] > 0
    summary = trigram.score(ids, top_k=10)
    t1 = TEMPERATURES.index(1.0)
    np.testing.assert_allclose(summary.logz[:, t1], 0.0, atol=1e-5)  # log sum p = 0
    assert np.isfinite(summary.logz).all() and np.isfinite(summary.entropy).all()
    assert (summary.entropy > 0).all() and (summary.entropy < np.log(100257) + 1e-6).all()
    # the summary's numbers are those of the exact distribution
    for i in range(len(ids)):
        with np.errstate(divide="ignore"):
            logp = np.log(trigram.distribution(history[: i + 1]))
        assert summary.target_logprob[i] == pytest.approx(logp[ids[i]], abs=1e-5)
        p = np.exp(logp)
        entropy = -(p[p > 0] * logp[p > 0]).sum()
        assert summary.entropy[i] == pytest.approx(entropy, abs=1e-4)
        order = np.argsort(-logp, kind="stable")
        assert summary.top_logprobs[i][0] == pytest.approx(logp[order[0]], abs=1e-5)
        assert summary.target_rank[i] == 1 + np.count_nonzero(
            logp.astype(np.float32) > np.float32(logp[ids[i]])
        )


def test_lookups_and_continuations_agree_with_the_summary(trigram, cl100k):
    ids = cl100k.tokenize("the cat sat on the mat")
    cat = cl100k.tokenize(" cat")[0]
    word = cl100k.tokenize(" dog sat")
    end_set = np.zeros(trigram.n_vocab, dtype=bool)
    end_set[cl100k.tokenize(" on")[0]] = True
    scored = trigram.score_continuations(
        ids, {1: [ids[1:3], word]}, top_k=5, end_set=end_set, lookups=[(1, cat), (4, cat)]
    )
    summary = scored.summary
    assert scored.lookups[(1, cat)] == (
        pytest.approx(summary.target_logprob[1], abs=1e-5), int(summary.target_rank[1])
    )
    own, other = scored.continuations[1]
    assert own.token_logprobs[0] == pytest.approx(summary.target_logprob[1], abs=1e-5)
    assert own.token_logprobs[1] == pytest.approx(summary.target_logprob[2], abs=1e-5)
    history = [cl100k.eot, ids[0]]
    expected = np.log(trigram.distribution(history)[word[0]]) + np.log(
        trigram.distribution([*history, word[0]])[word[1]]
    )
    assert other.logprob == pytest.approx(expected, abs=1e-12)
    assert other.end_logprob == pytest.approx(
        np.log(trigram.distribution([*history, *word])[end_set].sum())
    )
    assert trigram.logprobs_at(ids, [(4, cat)]) == [scored.lookups[(4, cat)]]


def test_spec_settings_and_tokenizer(trigram, tmp_path):
    spec = trigram.spec
    model = load_model(spec)
    assert isinstance(model, NgramModel)
    settings = model.settings()
    assert settings["backend"] == "ngram" and settings["order"] == 3
    assert settings["encoding"] == "cl100k_base"
    assert len(settings["file_sha256_prefix"]) == 16
    assert settings["smoothing"] == "interpolated Kneser-Ney"
    tok = load_tokenizer(spec)
    assert tok.tokenizer_id == "tiktoken:cl100k_base:100277" == model.tokenizer_id
    assert tok.is_control(tok.eot) and tok.is_control(100256) and not tok.is_control(791)
    assert tok.token_bytes(791) == b"The" and tok.token_bytes(100256) == b""
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(f"ngram:{tmp_path / 'missing.ngram'}")
    bad = tmp_path / "bad.ngram"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelSpecError, match="not a humanlm n-gram model"):
        load_model(f"ngram:{bad}")
    with pytest.raises(ModelSpecError, match="unknown model backend"):
        load_model("kenlm:/x")


def test_file_is_an_npz_without_pickles(trigram):
    with np.load(trigram.path, allow_pickle=False) as archive:
        names = set(archive.files)
        assert {"header", "counts1", "keys2", "counts2", "keys3", "counts3"} == names
        assert all(archive[n].dtype != object for n in names)
    header = read_header(trigram.path)
    assert header["order"] == 3 and header["documents"] == len(RICHER)
    assert json.loads(json.dumps(header)) == header


def test_count_ngrams_rejects_empty_input():
    from webapp.lm.ngram import NgramTrainError

    with pytest.raises(NgramTrainError, match="no text"):
        count_ngrams([[], []], order=2, n_vocab=10, bos=0)
    with pytest.raises(NgramTrainError, match="order"):
        count_ngrams([[1]], order=0, n_vocab=10, bos=0)


# ------------------------------------------------------------------------------------- CLI


def run(runner, *args):
    return runner.invoke(args=[str(a) for a in args])


def test_train_cli_from_files_and_a_corpus(app, tmp_path):
    runner = app.test_cli_runner()
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(RICHER[0])
    (folder / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in RICHER[1:]))
    out = tmp_path / "model.ngram"
    result = run(runner, "ngram", "train", "--order", "2", "--encoding", "cl100k_base",
                 "--output", out, folder)
    assert result.exit_code == 0, result.output
    assert f"Spec: ngram:{out}" in result.output
    header = read_header(out)
    assert header["documents"] == 4 and header["order"] == 2
    assert header["sources"] == ["file:texts"]

    imported = tmp_path / "corpus.txt"
    imported.write_text(RICHER[2])
    assert run(runner, "corpus", "import", imported, "--corpus", "mine").exit_code == 0
    out2 = tmp_path / "both.ngram"
    result = run(runner, "ngram", "train", "--corpus", "mine", "--output", out2, folder / "a.txt")
    assert result.exit_code == 0, result.output
    header = read_header(out2)
    assert header["documents"] == 2 and header["order"] == 3
    assert header["sources"] == ["corpus:mine", "file:a.txt"]
    assert NgramModel(f"ngram:{out2}").distribution([100257]).sum() == pytest.approx(1.0)


def assert_failed(result, *needles):
    assert result.exit_code != 0, result.output
    assert "Error:" in result.output and "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output


def test_train_cli_errors(app, tmp_path):
    runner = app.test_cli_runner()
    good = tmp_path / "good.txt"
    good.write_text("some text")
    out = tmp_path / "m.ngram"
    assert_failed(run(runner, "ngram", "train", "--output", out), "--corpus NAME and/or FILES")
    assert_failed(run(runner, "ngram", "train", "--corpus", "nope", "--output", out),
                  "unknown corpus 'nope'")
    assert_failed(run(runner, "ngram", "train", "--output", out, tmp_path / "missing.txt"),
                  "no such file")
    assert_failed(run(runner, "ngram", "train", "--encoding", "klingon", "--output", out, good),
                  "unknown tiktoken encoding 'klingon'")
    assert_failed(run(runner, "ngram", "train", "--output", tmp_path / "no" / "m.ngram", good),
                  "cannot write the model")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run(runner, "ngram", "train", "--output", out, empty)
    assert result.exit_code != 0 and "Traceback" not in result.output
    bad_order = run(runner, "ngram", "train", "--order", "0", "--output", out, good)
    assert bad_order.exit_code != 0 and "Traceback" not in bad_order.output
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_score_a_corpus_with_the_ngram_model(app, tmp_path):
    """Import with the n-gram model's tokenizer, score through `humanlm score --model`: exact
    Predictions (entropy, log Z, ranks) like a neural model's."""
    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import LanguageModel, Prediction

    runner = app.test_cli_runner()
    model_path = tmp_path / "m.ngram"
    train(RICHER, order=3, encoding="cl100k_base", output=model_path)
    spec = f"ngram:{model_path}"
    text = tmp_path / "play.txt"
    text.write_text("the cat sat on the log. a dog sat on the mat and the cat ran.")
    app.config["MODEL"] = spec
    assert run(runner, "corpus", "import", text, "--corpus", "play").exit_code == 0
    result = run(runner, "score", "--model", spec, "--corpus", "play", "--top-k", "5")
    assert result.exit_code == 0, result.output
    assert "Scored 1 documents" in result.output
    model = NgramModel(spec)
    with app.app_context():
        row = db.session.scalar(select(LanguageModel).where(LanguageModel.spec == spec))
        assert row.tokenizer == "tiktoken:cl100k_base:100277"
        assert row.settings["backend"] == "ngram" and row.settings["order"] == 3
        predictions = db.session.scalars(
            select(Prediction).where(Prediction.model_id == row.id)
        ).all()
        ids = model.tokenize(text.read_text())
        assert len(predictions) == len(ids)
        for prediction in predictions:
            position = prediction.item.position
            logp = model.next_token_logprobs(ids[:position])
            assert prediction.target_logprob == pytest.approx(logp[ids[position]], abs=1e-5)
            assert prediction.entropy is not None and len(prediction.logz) == len(TEMPERATURES)
            assert prediction.target_rank >= 1 and len(prediction.top_k) == 5
    other = run(runner, "score", "--model", spec, "--corpus", "play", "--top-k", "5")
    assert "Nothing to score" in other.output
    listed = run(runner, "models")
    assert listed.exit_code == 0, listed.output
    assert f"{spec}  (top-k 5)" in listed.output
    assert "tokenizer: tiktoken:cl100k_base:100277" in listed.output
    assert "computes: full distribution" in listed.output
    assert f"corpora scored: play (1 documents); {len(ids)} predictions" in listed.output


def test_a_model_with_another_tokenizer(app, tmp_path):
    """A corpus imported with Gemma's tokenizer: the n-gram model gives it no per-position
    predictions and says why and what to do (its answers, if any, are scored under its own
    tokens: tests/test_answer_models.py); --text-logprobs gives per-text log-probs under the
    n-gram model's own tokens."""
    import csv

    runner = app.test_cli_runner()
    model_path = tmp_path / "m.ngram"
    train(RICHER, order=2, encoding="cl100k_base", output=model_path)
    spec = f"ngram:{model_path}"
    texts = ["the cat sat on the log.", "a dog ran to the mat"]
    for i, text in enumerate(texts):
        (tmp_path / f"{i}.txt").write_text(text)
    assert run(runner, "corpus", "import", tmp_path / "0.txt", "--corpus", "g").exit_code == 0
    assert run(runner, "corpus", "import", tmp_path / "1.txt", "--corpus", "g").exit_code == 0
    result = run(runner, "score", "--model", spec, "--corpus", "g")
    assert result.exit_code == 0, result.output
    for needle in ("2 documents were tokenized with",
                   "per-position predictions need the corpus's tokenizer",
                   f"HUMANLM_MODEL={spec}", f"Answers under {spec}: nothing to fill"):
        assert needle in result.output, result.output
    out = tmp_path / "texts.csv"
    result = run(runner, "score", "--model", spec, "--corpus", "g", "--text-logprobs", out)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    model = NgramModel(spec)
    total = 0.0
    for row, text in zip(rows, texts):
        ids = model.tokenize(text)
        expected = sum(model.next_token_logprobs(ids[:i])[t] for i, t in enumerate(ids))
        assert int(row["n_tokens"]) == len(ids) and row["tokenizer"] == model.tokenizer_id
        assert float(row["logprob"]) == pytest.approx(expected, abs=1e-4)
        assert float(row["bits_per_byte"]) == pytest.approx(
            -expected / np.log(2) / len(text.encode()), abs=1e-5)
        total += expected
    assert f"ln p = {total:.1f} nats" in result.output
    bad = run(runner, "score", "--model", spec, "--corpus", "nope", "--text-logprobs", out)
    assert_failed(bad, "unknown corpus")
