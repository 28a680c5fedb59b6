"""The real Gemma 3 270M base model through llama-cpp-python: tokenizer and scoring."""

from __future__ import annotations

import numpy as np
import pytest

from webapp.lm import (
    TEMPERATURES,
    ModelSpec,
    ModelSpecError,
    display_text,
    load_model,
    load_tokenizer,
)

pytestmark = pytest.mark.model

FOX = "The quick brown fox jumps"


@pytest.mark.parametrize(
    "text",
    [" over", "over", FOX, "  two spaces\n\nand\ttabs", "naïve café 日本 🙂 𝔘", "<b>bold</b>"],
)
def test_tokenize_token_bytes_round_trip(tokenizer, text):
    ids = tokenizer.tokenize(text)
    assert ids and all(0 <= i < tokenizer.n_vocab for i in ids)
    assert b"".join(tokenizer.token_bytes(i) for i in ids) == text.encode("utf-8")


def test_leading_space_is_part_of_the_token(tokenizer):
    with_space, without = tokenizer.tokenize(" over"), tokenizer.tokenize("over")
    assert len(with_space) == 1 and len(without) == 1
    assert with_space != without
    assert tokenizer.token_bytes(with_space[0]) == b" over"
    assert tokenizer.token_bytes(without[0]) == b"over"


def test_tokenize_empty_and_no_bos(tokenizer, gemma):
    assert tokenizer.tokenize("") == []
    assert tokenizer.tokenize("Hi")[0] != gemma._bos
    assert gemma.tokenize(FOX) == tokenizer.tokenize(FOX)  # model and vocab-only agree
    assert gemma.tokenizer_id == tokenizer.tokenizer_id
    assert gemma.n_vocab == tokenizer.n_vocab == 262144  # Gemma 3's vocabulary


def test_token_bytes_rejects_out_of_range(tokenizer):
    with pytest.raises(ValueError):
        tokenizer.token_bytes(tokenizer.n_vocab)
    with pytest.raises(ValueError):
        tokenizer.token_bytes(-1)


def test_is_control(tokenizer):
    assert tokenizer.token_bytes(1) == b"<eos>" and tokenizer.is_control(1)
    image = next(
        i for i in range(tokenizer.n_vocab - 1, -1, -1)
        if tokenizer.token_bytes(i) == b"<start_of_image>"
    )
    assert tokenizer.is_control(image)
    for text in (" over", "The", "  ", "\n\n", "<b>", "</table>", "🙂"):
        for i in tokenizer.tokenize(text):
            assert not tokenizer.is_control(i), (text, tokenizer.token_bytes(i))


def test_display_text():
    assert display_text(b" over") == " over"
    assert display_text("é".encode()) == "é"
    assert display_text(b"\xf0\x9d") == "<0xF0><0x9D>"


@pytest.fixture(scope="module")
def fox(gemma):
    """One score() and one logprobs_at() pass over the fox sentence, shared by the tests below."""
    ids = gemma.tokenize(FOX + " over the lazy dog")
    n = len(gemma.tokenize(FOX))
    over, banana = gemma.tokenize(" over")[0], gemma.tokenize(" banana")[0]
    summary = gemma.score(ids, 64)
    queries = [(i, t) for i, t in enumerate(ids)] + [(n, over), (n, banana)]
    exact = gemma.logprobs_at(ids, queries)
    return {"ids": ids, "n": n, "over": over, "banana": banana, "summary": summary, "exact": exact}


def test_score_fox_jumps_over(gemma, fox):
    ids, n, over, summary = fox["ids"], fox["n"], fox["over"], fox["summary"]
    assert ids[n] == over
    assert summary.target_logprob.shape == (len(ids),)
    assert summary.top_ids.shape == (len(ids), 64)
    assert summary.logz.shape == (len(ids), len(TEMPERATURES))
    assert summary.target_rank[n] == 1
    assert np.exp(summary.target_logprob[n]) > 0.5
    assert summary.top_ids[n, 0] == over
    assert np.all(np.diff(summary.top_logprobs, axis=1) <= 0)  # top ids sorted, best first
    assert np.all(summary.target_logprob <= summary.top_logprobs[:, 0] + 1e-6)
    assert np.all(summary.target_rank >= 1)
    assert np.all(summary.entropy >= 0) and np.all(summary.entropy <= np.log(gemma.n_vocab))
    # rows whose target is in the top-k store the same log-prob there
    for i, (target, row) in enumerate(zip(ids, summary.top_ids)):
        if target in row:
            j = list(row).index(target)
            assert summary.target_rank[i] == j + 1
            assert summary.top_logprobs[i, j] == pytest.approx(summary.target_logprob[i], abs=1e-4)
    # re-tempering: p_T of the stored top-k never sums past 1 at any temperature
    for i in range(len(ids)):
        for j, t in enumerate(TEMPERATURES):
            assert np.exp(summary.top_logprobs[i] / t - summary.logz[i, j]).sum() <= 1 + 1e-4


def test_logprobs_at_agrees_with_score(fox):
    summary = fox["summary"]
    for i, (logprob, rank) in enumerate(fox["exact"][: len(fox["ids"])]):
        assert logprob == pytest.approx(summary.target_logprob[i], abs=1e-3)
        assert rank == summary.target_rank[i]


def test_logprobs_at_arbitrary_token(fox):
    n, banana, summary = fox["n"], fox["banana"], fox["summary"]
    (lp_over, rank_over), (lp_banana, rank_banana) = fox["exact"][-2:]
    assert rank_over == 1 and lp_over > np.log(0.5)
    assert rank_banana > 1 and lp_banana < lp_over
    if banana in summary.top_ids[n]:
        j = list(summary.top_ids[n]).index(banana)
        assert rank_banana == j + 1
        assert lp_banana == pytest.approx(summary.top_logprobs[n, j], abs=1e-3)
    else:
        assert rank_banana > 64 and lp_banana < summary.top_logprobs[n, -1]


def test_next_token_logprobs(gemma):
    ids = gemma.tokenize(FOX)
    lp = gemma.next_token_logprobs(ids)
    assert lp.shape == (gemma.n_vocab,) and lp.dtype == np.float64
    assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-6)
    assert int(lp.argmax()) == gemma.tokenize(" over")[0]
    assert np.exp(lp.max()) > 0.5


def test_context_limit(gemma):
    too_long = [gemma.tokenize(" word")[0]] * gemma.n_ctx
    with pytest.raises(ValueError, match="do not fit"):
        gemma.score(too_long, 4)


def test_vocab_only_cannot_score(tokenizer):
    with pytest.raises(RuntimeError, match="vocab_only"):
        tokenizer.next_token_logprobs(tokenizer.tokenize(FOX))


def test_settings_name_the_weights(gemma):
    settings = gemma.settings()
    assert settings["backend"] == "llamacpp"
    assert settings["file"].endswith(".gguf")
    assert len(settings["file_sha256_prefix"]) == 16
    assert settings["n_ctx"] == gemma.n_ctx


def test_model_spec_parse():
    spec = ModelSpec.parse("llamacpp:gemma-3-270m")
    assert (spec.backend, spec.target, str(spec)) == ("llamacpp", "gemma-3-270m", "llamacpp:gemma-3-270m")
    assert ModelSpec.parse("llamacpp:/a/b:c.gguf").target == "/a/b:c.gguf"
    with pytest.raises(ModelSpecError):
        ModelSpec.parse(":x")
    for bad in ("gemma", "llamacpp:", ""):
        with pytest.raises(ModelSpecError, match="must look like"):
            ModelSpec.parse(bad)
    with pytest.raises(ModelSpecError, match="unknown model backend 'kenlm'"):
        ModelSpec.parse("kenlm:/models/5gram.arpa")
    with pytest.raises(ModelSpecError, match="names the model after '#'"):
        ModelSpec.parse("openai:gpt-4")  # a known backend now, but this is not its spec


def test_model_spec_errors_on_load(tmp_path):
    with pytest.raises(ModelSpecError, match="unknown model backend"):
        load_model("transformers:gpt2")
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model(f"llamacpp:{tmp_path / 'missing.gguf'}")
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 16)
    with pytest.raises(ModelSpecError, match="not a .gguf file"):
        load_tokenizer(f"llamacpp:{not_gguf}")


def _by_hand(gemma, doc, p, cont):
    """The continuation procedure written out with llama-cpp-python itself: one pass over BOS +
    the document, the cache cut after position p, the continuation's tokens evaluated; every
    row's log-softmax in float64."""
    from webapp.lm.stats import log_softmax_row

    llm = gemma._llm
    llm.reset()
    llm.eval([gemma._bos, *doc])
    first = log_softmax_row(llm.scores[p])
    llm.n_tokens = p + 1
    llm.eval(cont)
    rows = [first, *(log_softmax_row(llm.scores[p + i]) for i in range(1, len(cont) + 1))]
    return [float(rows[i][t]) for i, t in enumerate(cont)], rows[-1]


def test_continuations_continue_from_the_document_pass(gemma):
    doc = gemma.tokenize("The capital of France is Paris, and the capital of Spain is Madrid.")
    p = len(gemma.tokenize("The capital of France is"))
    words = [gemma.tokenize(w) for w in (" Quetzalcoatl", " Lyon", " a big old city")]
    end_set = np.zeros(gemma.n_vocab, dtype=bool)
    end_set[gemma.tokenize(",")[0]] = True
    end_set[gemma.tokenize(".")[0]] = True
    got = gemma.score_continuations(doc, {p: words, p + 3: [words[1]]}, end_set=end_set)
    assert got.summary is None and set(got.continuations) == {p, p + 3}
    for cont, result in zip(words, got.continuations[p]):
        logprobs, after = _by_hand(gemma, doc, p, cont)
        np.testing.assert_allclose(result.token_logprobs, logprobs, atol=1e-6, rtol=0)
        assert result.end_logprob == pytest.approx(float(np.logaddexp.reduce(after[end_set])), abs=1e-6)
        assert result.logprob == pytest.approx(sum(logprobs), abs=1e-6)
        assert all(rank >= 1 for rank in result.token_ranks)
    # the same continuation asked alone, or beside others, gives the same numbers to the bit
    alone = gemma.score_continuations(doc, {p: [words[2]]}, end_set=end_set).continuations[p][0]
    assert alone == got.continuations[p][2]
    deeper = gemma.score_continuations(doc, {p + 3: [words[1]]}, end_set=end_set)
    assert deeper.continuations[p + 3][0] == got.continuations[p + 3][0]


def test_the_documents_own_tokens_and_lookups_come_from_its_pass(gemma):
    doc = gemma.tokenize(FOX + " over the lazy dog")
    n = len(gemma.tokenize(FOX))
    over, banana = gemma.tokenize(" over")[0], gemma.tokenize(" banana")[0]
    got = gemma.score_continuations(
        doc, {n: [doc[n:n + 2], [banana]]}, top_k=64, lookups=[(n, over), (n, banana), (n, over)]
    )
    summary = got.summary
    assert summary.top_ids.shape == (len(doc), 64)
    own, single = got.continuations[n]
    # " over the" read off the pass: its first token's log-prob is the stored prediction's
    assert own.token_logprobs[0] == pytest.approx(summary.target_logprob[n], abs=1e-5)
    assert own.token_logprobs[1] == pytest.approx(summary.target_logprob[n + 1], abs=1e-5)
    assert own.token_ranks == (summary.target_rank[n], summary.target_rank[n + 1])
    assert got.lookups[(n, over)] == (own.token_logprobs[0], own.token_ranks[0])
    assert got.lookups[(n, banana)] == (single.token_logprobs[0], single.token_ranks[0])
    assert own.end_logprob is None and len(got.lookups) == 2


def test_a_continuation_past_the_context_is_none(gemma):
    doc = [gemma.tokenize(" word")[0]] * (gemma.n_ctx - 2)  # BOS + doc fill all but one cell
    end_set = np.ones(gemma.n_vocab, dtype=bool)
    got = gemma.score_continuations(doc, {len(doc): [gemma.tokenize(" a b c")]}, end_set=end_set)
    assert got.continuations[len(doc)] == [None]
    with pytest.raises(ValueError, match="outside the document"):
        gemma.score_continuations(doc, {len(doc) + 1: [[5]]})
    with pytest.raises(ValueError, match="empty continuation"):
        gemma.score_continuations(doc, {0: [[]]})
