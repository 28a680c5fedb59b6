"""webapp.lm.stats.summarize_logits against a plain float64 reference (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from webapp.lm.stats import TEMPERATURES, log_softmax_row, summarize_logits

TOL = 1e-4


def _logsumexp(x: np.ndarray) -> float:
    m = x.max()
    return float(m + np.log(np.exp(x - m).sum()))


def reference(logits: np.ndarray, targets: np.ndarray, top_k: int) -> dict:
    """The obvious float64 computation of everything summarize_logits promises."""
    logits = np.asarray(logits, dtype=np.float32).astype(np.float64)
    out = {"target_logprob": [], "target_rank": [], "entropy": [], "top_ids": [],
           "top_logprobs": [], "logz": [], "logprobs": []}
    for row, target in zip(logits, targets):
        logprob = row - _logsumexp(row)
        p = np.exp(logprob)
        out["logprobs"].append(logprob)
        out["target_logprob"].append(logprob[target])
        out["target_rank"].append(1 + int(np.count_nonzero(row > row[target])))
        out["entropy"].append(float(-(p * logprob).sum()))
        order = np.lexsort((np.arange(row.size), -row))[:top_k]  # best first, ties by lower id
        out["top_ids"].append(order)
        out["top_logprobs"].append(logprob[order])
        out["logz"].append([_logsumexp(logprob / t) for t in TEMPERATURES])
    return {k: np.array(v) for k, v in out.items()}


def make_logits(vocab: int, seed: int = 0) -> np.ndarray:
    """Rows: typical, sharper, very peaked (one token ~60 nats ahead), a few near-ties, flat."""
    rng = np.random.default_rng(seed)
    typical = rng.normal(0, 2.5, vocab)
    sharp = rng.normal(0, 6.0, vocab)
    peaked = rng.normal(0, 1.0, vocab)
    peaked[vocab // 3] += 60.0
    few = rng.normal(-30, 1.0, vocab)  # only a handful of tokens near the best
    few[[5, 17, 41]] = [0.0, -1.0, -2.5]
    flat = np.zeros(vocab)
    return np.stack([typical, sharp, peaked, few, flat]).astype(np.float32)


@pytest.fixture(params=[1000, 4999], ids=["vocab1000", "vocab4999"])
def case(request):
    vocab = request.param
    logits = make_logits(vocab, seed=vocab)
    rng = np.random.default_rng(vocab + 1)
    targets = rng.integers(0, vocab, size=len(logits))
    targets[2] = vocab // 3  # the peaked row's favourite: rank 1
    top_k = 64
    return logits, targets, top_k, summarize_logits(logits, targets, top_k), reference(logits, targets, top_k)


def test_target_logprob_and_rank(case):
    _logits, _targets, _k, got, ref = case
    np.testing.assert_allclose(got.target_logprob, ref["target_logprob"], atol=TOL, rtol=0)
    np.testing.assert_array_equal(got.target_rank, ref["target_rank"])
    assert got.target_rank[2] == 1 and got.target_logprob[2] > -1e-6  # peaked row: p ~ 1
    assert got.target_rank[4] == 1  # flat row: nothing is strictly more likely


def test_entropy(case):
    logits, _targets, _k, got, ref = case
    np.testing.assert_allclose(got.entropy, ref["entropy"], atol=TOL, rtol=0)
    assert got.entropy[4] == pytest.approx(np.log(logits.shape[1]), abs=TOL)  # uniform
    assert got.entropy[2] == pytest.approx(0.0, abs=TOL)  # one token has all the mass


def test_top_k_ids_and_order(case):
    _logits, _targets, k, got, ref = case
    assert got.top_ids.shape == (5, k) and got.top_logprobs.shape == (5, k)
    # rows 0-3 have no ties; the flat row (all ties) is checked in the next test
    np.testing.assert_array_equal(got.top_ids[:4], ref["top_ids"][:4])
    np.testing.assert_allclose(got.top_logprobs, ref["top_logprobs"], atol=TOL, rtol=0)
    assert np.all(np.diff(got.top_logprobs, axis=1) <= 0)  # most likely first
    assert got.top_ids[2, 0] == _logits.shape[1] // 3
    assert got.top_ids[3, :3].tolist() == [5, 17, 41]


def test_top_k_ties_broken_by_lower_id():
    """Documented rule (_top_indices): ties by lower id, also at the k-th place.

    Regression: argpartition picks an arbitrary subset of tied tokens at the
    k boundary, so a flat row gives ids 1..64 instead of 0..63.
    """
    vocab, k = 1000, 64
    flat = np.zeros((1, vocab), dtype=np.float32)
    got = summarize_logits(flat, [0], top_k=k)
    assert got.top_ids[0].tolist() == list(range(k))
    # three clear winners, then a tie among all the rest straddling the k boundary
    row = np.full((1, vocab), -1.0, dtype=np.float32)
    row[0, [900, 500, 700]] = [3.0, 2.0, 1.0]
    got = summarize_logits(row, [0], top_k=k)
    assert got.top_ids[0].tolist() == [900, 500, 700, *range(k - 3)]


def test_logz_every_temperature(case):
    _logits, _targets, _k, got, ref = case
    assert got.logz.shape == (5, len(TEMPERATURES))
    np.testing.assert_allclose(got.logz, ref["logz"], atol=TOL, rtol=0)
    log_v = np.log(_logits.shape[1])  # flat row: logsumexp(-log V / T) = log V (1 - 1/T)
    np.testing.assert_allclose(got.logz[4], [log_v * (1 - 1 / t) for t in TEMPERATURES], atol=TOL)


def test_logz_at_t1_is_zero(case):
    *_, got, _ref = case
    j = TEMPERATURES.index(1.0)
    np.testing.assert_allclose(got.logz[:, j], 0.0, atol=TOL)  # log-probs are normalised


def test_retempering_identity_sums_to_one(case):
    """p_T(token) = exp(logprob / T - logz_T) is a distribution over the full vocabulary."""
    *_, got, ref = case
    for i, logprob in enumerate(ref["logprobs"]):
        for j, t in enumerate(TEMPERATURES):
            total = np.exp(logprob / t - got.logz[i, j]).sum()
            assert total == pytest.approx(1.0, abs=TOL), (i, t)


def test_temperature_grid():
    assert len(TEMPERATURES) == len(set(TEMPERATURES))
    assert min(TEMPERATURES) == 0.25 and max(TEMPERATURES) == 4.0 and 1.0 in TEMPERATURES


def test_top_k_larger_than_vocab_is_clipped():
    logits = make_logits(50, seed=3)
    got = summarize_logits(logits, np.zeros(len(logits), dtype=int), top_k=200)
    assert got.top_ids.shape == (len(logits), 50)
    for row in got.top_ids:
        assert sorted(row.tolist()) == list(range(50))  # every token exactly once


def test_targets_shape_is_validated():
    logits = make_logits(100)
    with pytest.raises(ValueError, match="targets has shape"):
        summarize_logits(logits, [0, 1], top_k=5)
    with pytest.raises(ValueError):
        summarize_logits(logits, np.zeros((len(logits), 1), dtype=int), top_k=5)


def test_log_softmax_row():
    row = make_logits(2000, seed=7)[0]
    got = log_softmax_row(row)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, row.astype(np.float64) - _logsumexp(row.astype(np.float64)), atol=1e-9)
    assert np.exp(got).sum() == pytest.approx(1.0, abs=1e-9)


def test_masked_tokens_with_minus_inf_logits():
    """A backend may mask tokens with -inf logits (p = 0); 0 * log 0 counts as 0 in the entropy.

    Regression: dot(e, shifted) computes 0 * -inf = nan, so entropy is nan.
    """
    logits = make_logits(1000, seed=11)[:2].copy()
    logits[:, :10] = -np.inf
    targets = np.array([50, 60])
    got = summarize_logits(logits, targets, top_k=16)
    finite = logits[:, 10:]
    ref = reference(finite, targets - 10, 16)
    np.testing.assert_allclose(got.target_logprob, ref["target_logprob"], atol=TOL)
    np.testing.assert_allclose(got.logz, ref["logz"], atol=TOL)
    np.testing.assert_array_equal(got.top_ids, ref["top_ids"] + 10)
    assert np.all(np.isfinite(got.entropy))
    np.testing.assert_allclose(got.entropy, ref["entropy"], atol=TOL)


@pytest.mark.parametrize("vocab, k", [(70_000, 16), (262_144, 64)])
def test_wide_vocabulary_uses_block_bounds_and_stays_exact(vocab, k):
    """A vocabulary of many 512-token blocks takes the fast path (top-k and ranks found from
    block maxima); it must agree with the plain computation, also for a row whose k-th and
    (k+1)-th best tie across blocks, deep targets and masked tokens."""
    rng = np.random.default_rng(vocab)
    rows = rng.normal(0, 3.0, (4, vocab)).astype(np.float32)
    rows[1, rng.choice(vocab, 3 * k, replace=False)] = 20.0  # ties straddle the k boundary
    rows[2, : vocab // 3] = -np.inf  # masked tokens
    rows[3, vocab - 1] = 40.0  # the best token in the short last block
    targets = np.array([int(np.argmax(rows[0])), int(rng.integers(vocab)), vocab - 7, vocab - 1])
    got = summarize_logits(rows, targets, k)
    finite = [np.where(np.isfinite(r), r, -1e30) for r in rows.astype(np.float64)]
    for i, row in enumerate(finite):
        order = np.lexsort((np.arange(vocab), -row))[:k]
        assert got.top_ids[i].tolist() == order.tolist(), i
        assert got.target_rank[i] == 1 + np.count_nonzero(row > row[targets[i]]), i
        logprob = row - _logsumexp(row)
        np.testing.assert_allclose(got.top_logprobs[i], logprob[order], atol=TOL)
        assert got.target_logprob[i] == pytest.approx(logprob[targets[i]], abs=TOL)
    assert got.top_ids[3, 0] == vocab - 1 and got.target_rank[3] == 1


def test_rank_counted_in_the_blocks_above_the_target():
    """A target below the top-k bound whose rank is counted only in the blocks that beat it."""
    vocab = 262_144
    row = np.random.default_rng(5).normal(0, 1.0, vocab).astype(np.float32)
    row[np.arange(64) * 512 + 7] = 30.0  # one clear winner in each of the first 64 blocks
    row[100 * 512 + 3] = 29.0
    got = summarize_logits(row[None, :], [100 * 512 + 3], 64)
    assert got.target_rank[0] == 65
    assert got.top_ids[0].tolist() == (np.arange(64) * 512 + 7).tolist()
