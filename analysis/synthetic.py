"""Synthetic exports whose truth is known: for validating the analysis and for benchmarks.

A synthetic "world" is a set of items, each with a FULL next-token distribution over a small
vocabulary (so log Z(T), the top-k, ranks, entropies and every log-prob are exact and
consistent), and synthetic players whose answers follow known rules: sample from the model at
temperature T, always give the model's top-1, answer uniformly at random, or give fixed answers.
`write_export` writes the tables in the export layout (analysis/schema.py, the same files
webapp/export.py writes): csv, jsonl or parquet, in a folder or a zip, with manifest.json,
codebook.csv and README.md.

It is independent of the reader (analysis.reader) on purpose: the tests check the reader
against files written here, byte for byte in the documented conventions.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import EXPORT_TABLES, MODEL_TABLES, SCHEMA_VERSION, codebook_rows

GRID = (0.25, 0.33, 0.4, 0.5, 0.67, 0.8, 0.89, 1.0, 1.33, 1.6, 2.0, 2.67, 4.0)
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    mx = np.max(x, axis=axis, keepdims=True)
    return (mx + np.log(np.sum(np.exp(x - mx), axis=axis, keepdims=True))).squeeze(axis)


def make_vocab(size: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Token texts of several classes (id 0 is the control token <eos>)."""
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    texts, seen = ["<eos>"], {"<eos>"}
    punct = [",", ".", "!", "?", ";", ":", "(", ")", "\"", "-", "—", "'", "…", "/"]
    kinds = rng.choice(["start", "cont", "punct", "num"], p=[0.6, 0.2, 0.1, 0.1], size=size * 3)
    for kind in kinds:
        if len(texts) >= size:
            break
        if kind == "start":
            t = " " + "".join(rng.choice(letters, size=rng.integers(1, 7)))
        elif kind == "cont":
            t = "".join(rng.choice(letters, size=rng.integers(1, 4)))
        elif kind == "punct":
            t = punct[int(rng.integers(len(punct)))] if rng.random() < 0.8 else \
                " " + punct[int(rng.integers(len(punct)))]
        else:
            t = (" " if rng.random() < 0.7 else "") + str(int(rng.integers(0, 2000)))
        if t not in seen:
            seen.add(t)
            texts.append(t)
    while len(texts) < size:
        t = " w" + str(len(texts))
        seen.add(t)
        texts.append(t)
    control = np.zeros(size, dtype=bool)
    control[0] = True
    return texts, control


@dataclass
class World:
    """Items with known full distributions. logprobs[i, v] = ln p_model(v | item i) at T = 1."""

    logprobs: np.ndarray
    vocab: list[str]
    control: np.ndarray
    targets: np.ndarray
    top_k: int
    temperatures: tuple[float, ...]
    document: np.ndarray
    position: np.ndarray
    prefix: list[str]
    first_item_id: int = 1001

    @property
    def n_items(self) -> int:
        return self.logprobs.shape[0]

    @property
    def item_ids(self) -> np.ndarray:
        return self.first_item_id + np.arange(self.n_items)

    def probs(self, T: float = 1.0) -> np.ndarray:
        z = self.logprobs / T
        return np.exp(z - _logsumexp(z)[:, None])

    def logz(self, temperatures=None) -> np.ndarray:
        temps = self.temperatures if temperatures is None else temperatures
        return np.stack([_logsumexp(self.logprobs / t) for t in temps], axis=1)

    def entropy(self, T: float = 1.0) -> np.ndarray:
        p = self.probs(T)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)

    def order(self) -> np.ndarray:
        """Token ids by decreasing probability, per item (ties by id)."""
        return np.argsort(-self.logprobs, axis=1, kind="stable")

    def ranks(self, tokens: np.ndarray, items: np.ndarray) -> np.ndarray:
        """1 + number of tokens with strictly higher probability (as humanlm defines rank;
        the synthetic log-probs are continuous, so there are no ties)."""
        if not hasattr(self, "_rank"):
            order = self.order()
            rank = np.empty(order.shape, dtype=np.int32)
            np.put_along_axis(rank, order, np.arange(1, order.shape[1] + 1, dtype=np.int32)[None, :]
                              .repeat(order.shape[0], axis=0), axis=1)
            self._rank = rank
        return self._rank[items, tokens].astype(np.int64)


def make_world(
    n_items: int = 200, vocab_size: int = 120, top_k: int = 16, seed: int = 0,
    items_per_document: int = 20, temperatures=GRID, spread: tuple[float, float] = (0.6, 2.5),
) -> World:
    """A world of n_items items. Each item's logits are a shared Zipf-like popularity plus
    item-specific noise, scaled by a random sharpness in `spread` (peaked and flat items mix).
    The true next token of each item is drawn from the model's own distribution."""
    rng = np.random.default_rng(seed)
    vocab, control = make_vocab(vocab_size, seed)
    base = -np.log(np.arange(1, vocab_size + 1))[rng.permutation(vocab_size)]
    noise = rng.normal(0, 1.0, size=(n_items, vocab_size))
    sharp = rng.uniform(*spread, size=n_items)[:, None]
    logits = sharp * (0.5 * base[None, :] + 1.2 * noise)
    logits[:, 0] = logits.min(axis=1) - 8.0  # the control token is very unlikely
    logprobs = logits - _logsumexp(logits)[:, None]
    p = np.exp(logprobs)
    u = rng.random(n_items)
    targets = (np.cumsum(p, axis=1) < u[:, None]).sum(axis=1).clip(0, vocab_size - 1)
    document = np.arange(n_items) // items_per_document + 1
    position = 3 + np.arange(n_items) % items_per_document
    prefix, text = [], ""
    for i in range(n_items):
        if position[i] == 3:
            text = "Once upon a"
        prefix.append(text)
        text += vocab[targets[i]]
    return World(logprobs, vocab, control, targets, top_k, tuple(temperatures), document,
                 position, prefix)


@dataclass
class Answers:
    """Synthetic answers: participant index, item index, token id (-1 = skip), order."""

    participant: np.ndarray
    item: np.ndarray
    token: np.ndarray
    answer_index: np.ndarray
    reported_probability: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.item)


def sample_tokens(world: World, items: np.ndarray, T: float, rng: np.random.Generator) -> np.ndarray:
    """One token per entry of `items`, drawn from p_T of that item (exactly)."""
    out = np.empty(len(items), dtype=np.int64)
    probs = world.probs(T)
    cum = np.cumsum(probs, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(len(items))
    for start in range(0, len(items), 20_000):
        s = slice(start, start + 20_000)
        out[s] = (cum[items[s]] < u[s, None]).sum(axis=1)
    return out


def player_answers(world: World, strategy, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tokens for one strategy: ("sample", T) | ("top1",) | ("uniform",) | ("fixed", tokens per
    item index) | ("skip",)."""
    kind = strategy[0]
    if kind == "sample":
        return sample_tokens(world, items, float(strategy[1]), rng)
    if kind == "top1":
        return np.argmax(world.logprobs, axis=1)[items]
    if kind == "uniform":
        choices = np.flatnonzero(~world.control)
        return rng.choice(choices, size=len(items))
    if kind == "fixed":
        return np.asarray(strategy[1])[items]
    if kind == "skip":
        return np.full(len(items), -1)
    raise ValueError(f"unknown strategy {strategy!r}")


def simulate(
    world: World, strategies: list, *, items_per_player: int | None = None, seed: int = 0,
    skip_rate: float = 0.0, shuffle: bool = True,
) -> Answers:
    """Each player (one strategy each) answers `items_per_player` distinct random items (all
    items if None), in random order when `shuffle`. A share `skip_rate` of answers are skips.
    Players with the same strategy are drawn together (one pass over the distributions)."""
    rng = np.random.default_rng(seed)
    n = world.n_items if items_per_player is None else items_per_player
    n_players = len(strategies)
    if shuffle:
        items = np.stack([rng.permutation(world.n_items)[:n] for _ in range(n_players)])
    else:
        items = np.tile(np.arange(n), (n_players, 1))
    token = np.empty((n_players, n), dtype=np.int64)
    groups: dict = {}
    for p, strategy in enumerate(strategies):
        key = (strategy[0], id(strategy[1])) if strategy[0] == "fixed" else tuple(strategy)
        groups.setdefault(key, (strategy, []))[1].append(p)
    for strategy, players in groups.values():
        rows = np.array(players)
        token[rows] = player_answers(world, strategy, items[rows].ravel(), rng).reshape(len(rows), n)
    token = token.ravel()
    if skip_rate:
        token = np.where(rng.random(len(token)) < skip_rate, -1, token)
    return Answers(np.repeat(np.arange(n_players), n), items.ravel(), token,
                   np.tile(np.arange(1, n + 1), n_players))


# ------------------------------------------------------- pairwise and distribution answers


@dataclass
class Judgements:
    """Synthetic pairwise or distribution answers: participant and item index of each, and
    what it said (guesses.judgement: a dict, or None for a skipped distribution answer)."""

    mode: str  # "pairwise" or "distribution"
    participant: np.ndarray
    item: np.ndarray
    judgement: list
    skipped: np.ndarray

    def __len__(self) -> int:
        return len(self.item)


def draw_alternatives(world: World, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """items x n_draws token ids drawn with replacement from the model's full distribution at
    T = 1, as `humanlm corpus import --pairwise-alternatives` stores them (draws equal to the
    true token included: the game never shows those)."""
    return sample_tokens(world, np.repeat(np.arange(world.n_items), n_draws), 1.0, rng).reshape(
        world.n_items, n_draws)


def _players(rng: np.random.Generator, n_items: int, per_item: int, n_participants: int,
             items: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(item, participant) pairs: per_item distinct participants for each item."""
    chosen = np.arange(n_items) if items is None else np.asarray(items)
    item = np.repeat(chosen, per_item)
    participant = np.concatenate([rng.choice(n_participants, per_item, replace=False)
                                  for _ in chosen]) if len(chosen) else np.zeros(0, dtype=np.int64)
    return item, participant


def pairwise_judgements(
    world: World, beliefs: np.ndarray, alternatives: np.ndarray, *, per_item: int = 4,
    n_participants: int = 20, answers: str = "exact", skip_rate: float = 0.0,
    first_participant: int = 0, items: np.ndarray | None = None, seed: int = 0,
) -> Judgements:
    """Model players judging pairs, as the game stores them (webapp.judgements): each of
    `per_item` distinct participants per item sees the true token and one of the item's stored
    draws that differs from it (uniform over those; an item whose draws all equal the truth
    gets no judgement), the original on a random side. A player whose beliefs are `beliefs`
    (items x vocabulary log-probs) gives the original r = H(t*) / (H(t*) + H(t)): exactly
    ("exact") or on the 1%..99% answer scale ("rounded", as people answer)."""
    from .pairwise import round_to_scale

    if answers not in ("exact", "rounded"):
        raise ValueError("answers must be exact or rounded")
    rng = np.random.default_rng(seed)
    item, participant = _players(rng, world.n_items, per_item, n_participants, items)
    out_item, out_part, out_j, out_skip = [], [], [], []
    for i, p in zip(item.tolist(), participant.tolist()):
        t = int(world.targets[i])
        usable = [k for k, a in enumerate(alternatives[i]) if a != t]
        if not usable:
            continue
        k = usable[int(rng.integers(len(usable)))]
        alt = int(alternatives[i][k])
        on_left = bool(rng.random() < 0.5)
        skipped = bool(rng.random() < skip_rate)
        r = 1 / (1 + np.exp(beliefs[i, alt] - beliefs[i, t]))
        r = float(np.clip(r, 1e-12, 1 - 1e-12) if answers == "exact" else round_to_scale(r))
        left = None if skipped else (r if on_left else round(1 - r, 12))
        true_probability = None if left is None else left if on_left else round(1 - left, 12)
        out_j.append({
            "kind": "pairwise", "left_probability": left, "true_on_left": on_left,
            "true_probability": true_probability,
            "alternative": {"index": k, "id": alt, "text": world.vocab[alt],
                            "logprob": float(world.logprobs[i, alt])},
            "true_logprob": float(world.logprobs[i, t]),
        })
        out_item.append(i)
        out_part.append(p + first_participant)
        out_skip.append(skipped)
    return Judgements("pairwise", participant=np.array(out_part, dtype=np.int64),
                      item=np.array(out_item, dtype=np.int64), judgement=out_j,
                      skipped=np.array(out_skip, dtype=bool))


def distribution_answers(
    world: World, beliefs: np.ndarray, *, n_bets: int = 3, per_item: int = 3,
    n_participants: int = 20, unfilled: float = 0.0, skip_rate: float = 0.0,
    first_participant: int = 0, items: np.ndarray | None = None, seed: int = 0,
) -> Judgements:
    """Model players stating a distribution: their `n_bets` most likely tokens under `beliefs`
    with round(100 H(token)) points each and the rest on "something else". The model's log-prob
    of each candidate is exact, except that a share `unfilled` of the answers has one left
    empty (outside the stored top-k and not yet filled)."""
    rng = np.random.default_rng(seed)
    item, participant = _players(rng, world.n_items, per_item, n_participants, items)
    order = np.argsort(-beliefs, axis=1, kind="stable")
    out_j, out_skip = [], []
    for i in item.tolist():
        if rng.random() < skip_rate:
            out_j.append(None)  # a skipped distribution answer stores no judgement
            out_skip.append(True)
            continue
        tokens = order[i, :n_bets]
        points = np.round(100 * np.exp(beliefs[i, tokens])).astype(int)
        while points.sum() > 100:
            points[np.argmax(points)] -= 1
        missing = rng.random() < unfilled
        bets = [{"text": world.vocab[t], "token_ids": [int(t)], "first_token_id": int(t),
                 "points": int(pts), "model_logprob": None if missing and b == n_bets - 1
                 else float(world.logprobs[i, t])}
                for b, (t, pts) in enumerate(zip(tokens.tolist(), points.tolist()))]
        t_true = int(world.targets[i])
        true_cell = next((b for b, bet in enumerate(bets) if bet["first_token_id"] == t_true), len(bets))
        out_j.append({"kind": "distribution", "bets": bets, "else_points": int(100 - points.sum()),
                      "true_cell": true_cell})
        out_skip.append(False)
    return Judgements("distribution", participant=participant + first_participant, item=item,
                      judgement=out_j, skipped=np.array(out_skip, dtype=bool))


def _true_cell_logprob(judgement: dict | None) -> float | None:
    """guesses.model_answer_logprob of a distribution answer: ln of the model's mass on the cell
    holding the true token (None for a pairwise answer, a skip, or a candidate not yet filled)."""
    if not judgement or judgement.get("kind") != "distribution":
        return None
    bets = judgement["bets"]
    if any(b["model_logprob"] is None for b in bets):
        return None
    mass = {b["first_token_id"]: b["model_logprob"] for b in bets}
    if judgement["true_cell"] < len(bets):
        return float(mass[bets[judgement["true_cell"]]["first_token_id"]])
    return float(np.log(max(1.0 - float(np.exp(list(mass.values())).sum()), 1e-12)))


def _with_judgements(guesses, world, judgements, answers, pid, source, study_id, model_id,
                     pilot, excluded, rng) -> pd.DataFrame:
    """The token answers' rows followed by one row per judgement, as the exporter writes them:
    empty answer text and token ids, is_correct empty, match_rule the mode (skip for a skip)."""
    vocab = np.array(world.vocab, dtype=object)
    order = world.order()
    done = np.bincount(answers.participant, minlength=len(pid)).astype(np.int64)
    frames = [guesses]
    start = len(guesses)
    for j in judgements:
        n = len(j)
        it, part = j.item, j.participant
        index = np.empty(n, dtype=np.int64)
        for r, p in enumerate(part.tolist()):
            done[p] += 1
            index[r] = done[p]
        target = world.targets[it]
        seconds = (start + np.arange(n)) * 3.0
        frames.append(pd.DataFrame({
            "guess_id": start + 1 + np.arange(n),
            "participant_id": pid[part],
            "source": source,
            "study_id": [study_id] * n,
            "room_id": [None] * n,
            "item_id": world.item_ids[it],
            "document_id": world.document[it],
            "corpus": "synthetic",
            "position": world.position[it],
            "mode": j.mode,
            "prefix_text": np.array(world.prefix, dtype=object)[it],
            "target_text": vocab[target],
            "target_token_id": target,
            "answer_text": "",
            "answer_token_ids": [[] for _ in range(n)],
            "answer_first_token_id": [None] * n,
            "answer_first_token_text": [None] * n,
            "skipped": j.skipped,
            "is_correct": [None] * n,
            "match_rule": np.where(j.skipped, "skip", j.mode),
            "answer_index": index,
            "reaction_ms": np.round(rng.uniform(400, 6000, n), 1),
            "server_received_at": _iso(seconds),
            "stored_at": _iso(seconds + 0.004),
            "judgement": list(j.judgement),
            "reported_probability": [None] * n,
            "model_id": model_id,
            "model_answer_logprob": [_true_cell_logprob(x) for x in j.judgement],
            "model_answer_rank": [None] * n,
            "model_target_logprob": world.logprobs[it, target],
            "model_target_rank": world.ranks(target, it),
            "model_top1_id": order[it, 0],
            "model_top1_text": vocab[order[it, 0]],
            "model_entropy": world.entropy(1.0)[it],
            "pilot": np.isin(part, list(pilot)),
            "excluded": np.isin(part, list(excluded)),
            "external": False,
        }))
        start += n
    return pd.concat(frames, ignore_index=True)


def _iso(seconds: np.ndarray) -> np.ndarray:
    base = np.datetime64(START.replace(tzinfo=None), "us")
    times = base + (seconds * 1e6).astype("timedelta64[us]")
    return np.char.add(np.datetime_as_string(times, unit="us"), "+00:00")


def export_tables(
    world: World, answers: Answers | None, *, unfilled: float = 0.0, model_id: int = 1,
    pilot: set[int] | None = None, excluded: set[int] | None = None, source: str = "study",
    seed: int = 0, study_id: int | None = 1, judgements: tuple[Judgements, ...] | list = (),
    alternatives: np.ndarray | None = None,
) -> dict[str, pd.DataFrame]:
    """The five tables with every schema column, as an exporter would fill them.

    Values are Python/numpy objects (None = null; json columns as lists/dicts); `write_export`
    formats them. `unfilled`: share of answers outside the top-k whose model log-prob is left
    empty (as before `humanlm score --fill-guesses`). pilot/excluded: participant indices.
    `judgements`: pairwise and distribution answers (rows after the token answers, which may
    be None); `alternatives` (items x draws token ids, from `draw_alternatives`) fills
    items.model_alternatives.
    """
    rng = np.random.default_rng(seed + 7)
    pilot, excluded = pilot or set(), excluded or set()
    if answers is None:
        answers = Answers(*(np.zeros(0, dtype=np.int64) for _ in range(4)))
    everyone = np.concatenate([answers.participant, *(j.participant for j in judgements)])
    n = len(answers)
    it, tok = answers.item, answers.token
    skip = tok < 0
    safe = np.where(skip, 0, tok)
    order = world.order()
    topk = order[:, :world.top_k]
    kth_lp = world.logprobs[np.arange(world.n_items), topk[:, -1]]
    lp = world.logprobs[it, safe]
    in_topk = lp >= kth_lp[it]
    lp_out = np.where(skip, np.nan, lp)
    drop = (~in_topk) & ~skip & (rng.random(n) < unfilled)
    lp_out[drop] = np.nan
    rank = np.where(np.isnan(lp_out), -1, world.ranks(safe, it))
    target = world.targets
    tgt_lp = world.logprobs[np.arange(world.n_items), target]
    tgt_rank = world.ranks(target, np.arange(world.n_items))
    top1 = order[:, 0]
    ent = world.entropy(1.0)
    vocab = np.array(world.vocab, dtype=object)
    pid = np.array([f"p{p:05d}" for p in range(int(everyone.max()) + 1)], dtype=object)
    item_ids = world.item_ids
    correct = (~skip) & (tok == target[it])
    rule = np.where(skip, "skip", np.where(correct, "first_token", "none"))
    seconds = np.arange(n) * 3.0
    reported = answers.reported_probability if answers.reported_probability is not None else \
        np.full(n, np.nan)
    prefix = np.array(world.prefix, dtype=object)
    is_pilot = np.isin(answers.participant, list(pilot))
    is_excl = np.isin(answers.participant, list(excluded))

    def nullable(values: np.ndarray, null: np.ndarray) -> list:
        return [None if z else v for v, z in zip(values.tolist(), null.tolist())]

    guesses = pd.DataFrame({
        "guess_id": np.arange(1, n + 1),
        "participant_id": pid[answers.participant],
        "source": source,
        "study_id": [study_id] * n,
        "room_id": [None] * n,
        "item_id": item_ids[it],
        "document_id": world.document[it],
        "corpus": "synthetic",
        "position": world.position[it],
        "mode": "token",
        "prefix_text": prefix[it],
        "target_text": vocab[target[it]],
        "target_token_id": target[it],
        "answer_text": np.where(skip, "", vocab[safe]),
        "answer_token_ids": [[] if s else [t] for s, t in zip(skip.tolist(), tok.tolist())],
        "answer_first_token_id": nullable(tok, skip),
        "answer_first_token_text": nullable(vocab[safe], skip),
        "skipped": skip,
        "is_correct": correct,
        "match_rule": rule,
        "answer_index": answers.answer_index,
        "reaction_ms": np.round(rng.uniform(400, 6000, n), 1),
        "server_received_at": _iso(seconds),
        "stored_at": _iso(seconds + 0.004),
        "judgement": None,  # token-mode answers (add_pairwise / add_distribution add the others)
        "reported_probability": nullable(reported, np.isnan(reported)),
        "model_id": model_id,
        "model_answer_logprob": nullable(lp_out, np.isnan(lp_out)),
        "model_answer_rank": nullable(rank, rank < 0),
        "model_target_logprob": tgt_lp[it],
        "model_target_rank": tgt_rank[it],
        "model_top1_id": top1[it],
        "model_top1_text": vocab[top1[it]],
        "model_entropy": ent[it],
        "pilot": is_pilot,
        "excluded": is_excl,
        "external": False,
    })
    if judgements:
        guesses = _with_judgements(guesses, world, judgements, answers, pid, source, study_id,
                                   model_id, pilot, excluded, rng)
    every_item = np.concatenate([it, *(j.item for j in judgements)])
    used = np.unique(every_item)
    logz = world.logz()
    counts = pd.DataFrame({"i": it[~skip], "t": tok[~skip]}).groupby(["i", "t"]).size()
    count_map: dict[int, dict[str, int]] = {}
    for (i, t), c in counts.items():
        count_map.setdefault(int(i), {})[str(int(t))] = int(c)
    n_ans = np.bincount(every_item, minlength=world.n_items)
    items = pd.DataFrame({
        "item_id": item_ids[used],
        "document_id": world.document[used],
        "corpus": "synthetic",
        "position": world.position[used],
        "prefix_text": prefix[used],
        "target_token_id": target[used],
        "target_text": vocab[target[used]],
        "next_token_text": None,
        "model_id": model_id,
        "model_target_logprob": tgt_lp[used],
        "model_target_rank": tgt_rank[used],
        "model_top1_id": top1[used],
        "model_entropy": ent[used],
        "model_top_k": [[[int(t), float(world.logprobs[i, t]), world.vocab[t], bool(world.control[t])]
                         for t in topk[i]] for i in used],
        "model_logz": [logz[i].tolist() for i in used],
        "model_alternatives": None if alternatives is None else [
            {"seed": ["synthetic", int(world.document[i]), int(world.position[i])],
             "tokens": [[int(t), float(world.logprobs[i, t]), world.vocab[t]] for t in alternatives[i]]}
            for i in used],
        "n_answers": n_ans[used],
        "answer_counts": [count_map.get(int(i), {}) for i in used],
    })
    parts = np.unique(everyone)
    per = np.bincount(everyone)
    participants = pd.DataFrame({
        "participant_id": pid[parts],
        "source": source,
        "study_id": [study_id] * len(parts),
        "room_id": [None] * len(parts),
        "external_id": [None] * len(parts),
        "started_at": _iso(parts * 1.0),
        "finished_at": [None] * len(parts),
        "n_answers": per[parts],
        "pilot": np.isin(parts, list(pilot)),
        "excluded": np.isin(parts, list(excluded)),
        "exclusion_reason": ["comprehension checks 0/3 below threshold 2/3" if p in excluded
                             else None for p in parts],
        **{name: [None] * len(parts) for name in (
            "url_prolific_pid", "url_study_id", "url_session_id", "url_participant", "duplicate_of")},
    })
    studies = pd.DataFrame({
        "study_id": [study_id] if study_id is not None else [],
        "name": ["synthetic study"] if study_id is not None else [],
        "mode": ["token"] if study_id is not None else [],
        "settings": [{"items_per_participant": int(per.max()), "order": "random", "seed": seed}]
        if study_id is not None else [],
        "created_at": [START.isoformat()] if study_id is not None else [],
    })
    models = pd.DataFrame({
        "model_id": [model_id],
        "key": [f"synthetic:v{len(world.vocab)}:k{world.top_k}"],
        "spec": ["synthetic"],
        "name": ["synthetic model"],
        "tokenizer": ["synthetic"],
        "n_vocab": [len(world.vocab)],
        "top_k": [world.top_k],
        "temperatures": [list(world.temperatures)],
        "settings": [{"seed": seed}],
    })
    return {"guesses": guesses, "items": items, "participants": participants,
            "studies": studies, "models": models}


# ------------------------------------------------------------ several models, same answers


@dataclass
class ModelView:
    """One more model scoring the same items and answers (answer_models, item_models).

    logprobs: (items x vocabulary) ln p over the world's token TEXTS (a full distribution).
    same_tokenizer=False: the model cuts every text of two or more characters in two tokens
    (first half, rest), so answers score as two tokens by the chain rule (the sum is still
    ln p(text)), its first-token numbers are empty, and its entropy and top-1 are over its own
    first pieces. top_k_only: a server model without a full vocabulary (entropy empty).
    no_row: share of answers without a row (not scored yet); null: share of rows whose
    answer_logprob is empty (the backend could not compute it). logz: item_models.logz is
    filled (its log Z(T) grid over the full vocabulary, as the exporter joins it from the
    model's Predictions), only for a same-tokenizer model that is not top-k only; off: empty,
    as in an export from before the column."""

    model_id: int
    name: str
    logprobs: np.ndarray
    same_tokenizer: bool = True
    top_k_only: bool = False
    no_row: float = 0.0
    null: float = 0.0
    spec: str = ""
    logz: bool = False


def variant_logprobs(world: World, *, noise: float = 0.8, temperature: float = 1.0,
                     seed: int = 0) -> np.ndarray:
    """A related model: the world's logits at `temperature` plus Gaussian noise of sd
    `noise`, renormalised (the control token stays very unlikely)."""
    rng = np.random.default_rng([seed, 77])
    z = world.logprobs / temperature + noise * rng.normal(size=world.logprobs.shape)
    z[:, 0] = z.min(axis=1) - 8.0
    return z - _logsumexp(z)[:, None]


def _pieces(text: str) -> tuple[str, ...]:
    if len(text) < 2:
        return (text,)
    cut = (len(text) + 1) // 2
    return (text[:cut], text[cut:])


def add_models(tables: dict[str, pd.DataFrame], world: World, answers: Answers,
               views: list[ModelView], *, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The tables with answer_models and item_models for `views` (and their rows in models,
    unless the model is there already), as the exporter writes them. The true next word of an
    item is its target token's text without spaces (synthetic words are one token)."""
    rng = np.random.default_rng([seed, 78])
    g = tables["guesses"]
    n = len(answers)
    it, tok = answers.item, answers.token
    answered = tok >= 0
    item_rows = np.searchsorted(world.item_ids, tables["items"]["item_id"].to_numpy())
    words = [world.vocab[t].strip() for t in world.targets]
    mode = str(g["mode"].iloc[0]) if len(g) else "token"
    a_frames, i_frames, m_rows = [], [], []
    for v in views:
        lp = v.logprobs
        p = np.exp(lp)
        rank = np.empty(lp.shape, dtype=np.int64)
        np.put_along_axis(rank, np.argsort(-lp, axis=1, kind="stable"),
                          np.arange(1, lp.shape[1] + 1)[None, :].repeat(lp.shape[0], 0), axis=1)
        if v.same_tokenizer:
            n_tok = np.ones(len(world.vocab), dtype=np.int64)
            firsts = list(world.vocab)
        else:
            n_tok = np.array([len(_pieces(t)) for t in world.vocab], dtype=np.int64)
            firsts = [_pieces(t)[0] for t in world.vocab]
        # the model's distribution over its own first tokens: texts merged by first piece
        codes, uniq = pd.factorize(pd.Series(firsts))
        first_p = np.zeros((world.n_items, len(uniq)))
        np.add.at(first_p.T, codes, p.T)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.sum(np.where(first_p > 0, first_p * np.log(first_p), 0.0), axis=1)
        top1 = np.asarray(uniq, dtype=object)[np.argmax(first_p, axis=1)]
        starts = np.array([bool(t.lstrip()) and w.startswith(t.lstrip()) for t, w in zip(top1, words)])
        rows = np.flatnonzero(answered & (rng.random(n) >= v.no_row))
        safe = tok[rows]
        alp = lp[it[rows], safe]
        null = rng.random(len(rows)) < v.null
        a_frames.append(pd.DataFrame({
            "guess_id": g["guess_id"].to_numpy()[rows],
            "model_id": v.model_id,
            "answer_logprob": [None if z else float(x) for x, z in zip(alp, null)],
            "answer_n_tokens": n_tok[safe],
            "end_logprob": 0.0 if mode == "word" else None,
            "first_token_logprob": alp if v.same_tokenizer else None,
            "first_token_rank": rank[it[rows], safe] if v.same_tokenizer else None,
            "same_tokenizer": v.same_tokenizer,
        }))
        tgt = world.targets[item_rows]
        grid = (np.stack([_logsumexp(lp[item_rows] / t) for t in world.temperatures], axis=1)
                if v.logz and v.same_tokenizer and not v.top_k_only else None)
        i_frames.append(pd.DataFrame({
            "item_id": world.item_ids[item_rows],
            "model_id": v.model_id,
            "target_logprob": lp[item_rows, tgt],
            "target_word_logprob": lp[item_rows, tgt],
            "entropy": None if v.top_k_only else ent[item_rows],
            "top1_text": top1[item_rows],
            "top1_starts_word": starts[item_rows],
            "same_tokenizer": v.same_tokenizer,
            "logz": [None] * len(item_rows) if grid is None else [r.tolist() for r in grid],
        }))
        if v.model_id not in set(tables["models"]["model_id"].tolist()):
            m_rows.append({
                "model_id": v.model_id, "key": f"synthetic:{v.name}", "spec": v.spec or f"synthetic:{v.name}",
                "name": v.name, "tokenizer": "synthetic" if v.same_tokenizer else "synthetic-2piece",
                "n_vocab": len(world.vocab) if v.same_tokenizer else len(uniq),
                "top_k": world.top_k, "temperatures": list(world.temperatures),
                "settings": {"seed": seed, **({"top_k_only": True} if v.top_k_only else {})},
            })
    out = dict(tables)
    out["answer_models"] = pd.concat(a_frames, ignore_index=True)
    out["item_models"] = pd.concat(i_frames, ignore_index=True)
    if m_rows:
        out["models"] = pd.concat([tables["models"], pd.DataFrame(m_rows)], ignore_index=True)
    return out


# --------------------------------------------------------------------------------- writing


def _csv_frame(df: pd.DataFrame, table) -> pd.DataFrame:
    out = {}
    for c in table.columns:
        s = df[c.name]
        if c.type == "bool":
            out[c.name] = ["" if v is None or v is pd.NA else "true" if v else "false"
                           for v in s.tolist()]
        elif c.type == "json":
            out[c.name] = [
                "" if v is None else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                for v in s.tolist()
            ]
        elif c.type == "float":
            out[c.name] = pd.to_numeric(s, errors="coerce").astype("float64").map(
                lambda v: "" if np.isnan(v) else ("-inf" if v == -np.inf else repr(float(v))))
        elif c.type == "int":
            out[c.name] = s.astype("Int64").astype(str).replace("<NA>", "")
        else:
            out[c.name] = s.astype(object).where(s.notna(), "")
    return pd.DataFrame(out)


def _write_parquet(df: pd.DataFrame, table, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_(),
             "json": pa.string(), "datetime": pa.timestamp("us", tz="UTC")}
    arrays = []
    for c in table.columns:
        s = df[c.name]
        if c.type == "json":
            vals = [None if v is None else json.dumps(v, ensure_ascii=False, separators=(",", ":"))
                    for v in s.tolist()]
        elif c.type == "datetime":
            vals = pd.to_datetime(pd.Series(s, dtype=object), utc=True, format="ISO8601")
            arrays.append(pa.array(vals, type=types["datetime"], from_pandas=True))
            continue
        elif c.type == "int":
            vals = pd.array(s.tolist(), dtype="Int64")
        elif c.type == "float":
            vals = pd.to_numeric(pd.Series(s, dtype=object), errors="coerce").astype("float64")
        else:
            vals = s.tolist()
        arrays.append(pa.array(vals, type=types[c.type], from_pandas=True))
    schema = pa.schema([(c.name, types[c.type], c.nullable) for c in table.columns])
    pq.write_table(pa.Table.from_arrays(arrays, schema=schema), str(path), compression="zstd")


def _write_jsonl(df: pd.DataFrame, table, path: Path) -> None:
    kinds = [(c.name, c.type) for c in table.columns]
    cols = {name: df[name].tolist() for name, _ in kinds}
    with open(path, "w", encoding="utf-8") as fh:
        for r in range(len(df)):
            obj = {}
            for name, kind in kinds:
                v = cols[name][r]
                if isinstance(v, (np.generic,)):
                    v = v.item()
                if isinstance(v, float) and not np.isfinite(v):
                    v = None
                obj[name] = v
            fh.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


def write_export(
    tables: dict[str, pd.DataFrame], path: str | Path, fmt: str = "csv", *, as_zip: bool = False,
    manifest: dict | None = None,
) -> Path:
    """Write tables in the export layout: <table>.<fmt> per table, manifest.json, codebook.csv,
    README.md; into the folder `path`, or the zip file `path` when as_zip. Tables added to
    the schema later (answer_models, item_models) are written only when `tables` has them:
    without them the files look like an export from before those tables."""
    path = Path(path)
    folder = path.with_name(path.name + ".d") if as_zip else path
    folder.mkdir(parents=True, exist_ok=False)
    rows = {}
    written = [n for n in EXPORT_TABLES if n in tables or n not in MODEL_TABLES]
    for name in written:
        table, df = EXPORT_TABLES[name], tables[name]
        file = folder / f"{name}.{fmt}"
        if fmt == "csv":
            _csv_frame(df, table).to_csv(file, index=False, lineterminator="\n")
        elif fmt == "parquet":
            _write_parquet(df, table, file)
        elif fmt == "jsonl":
            _write_jsonl(df, table, file)
        else:
            raise ValueError(fmt)
        rows[name] = len(df)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "humanlm_version": "synthetic",
        "exported_at": START.isoformat(),
        "format": fmt,
        "filters": {"include_pilot": True, "include_excluded": True},
        "tables": {name: {"file": f"{name}.{fmt}", "rows": rows[name]} for name in written},
        "models": tables["models"].to_dict(orient="records"),
    }
    doc.update(manifest or {})
    (folder / "manifest.json").write_text(json.dumps(doc, indent=2, default=str))
    pd.DataFrame(codebook_rows()).to_csv(folder / "codebook.csv", index=False)
    (folder / "README.md").write_text("# humanlm export (synthetic)\n")
    if as_zip:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in sorted(folder.iterdir()):
                zf.write(f, arcname=f.name)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return path


def synthetic_export(path, *, n_items=60, strategies=None, fmt="csv", seed=0, top_k=16,
                     vocab_size=120, items_per_player=None, unfilled=0.0, **kwargs) -> tuple[Path, World, Answers]:
    """World + players + export in one call (defaults: 30 players sampling at T = 1)."""
    world = make_world(n_items=n_items, vocab_size=vocab_size, top_k=top_k, seed=seed)
    answers = simulate(world, strategies or [("sample", 1.0)] * 30, seed=seed + 1,
                       items_per_player=items_per_player)
    tables = export_tables(world, answers, unfilled=unfilled, seed=seed, **kwargs)
    return write_export(tables, path, fmt), world, answers


__all__ = [
    "GRID",
    "Answers",
    "Judgements",
    "ModelView",
    "World",
    "add_models",
    "distribution_answers",
    "draw_alternatives",
    "export_tables",
    "make_world",
    "pairwise_judgements",
    "sample_tokens",
    "simulate",
    "synthetic_export",
    "variant_logprobs",
    "write_export",
]
