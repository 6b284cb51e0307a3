"""The `sequence` tower (SASRec over id / text / hybrid item vectors): model, data windows, training.

The regression tests at the top guard the defect of the first version of this tower: its position
and gap embeddings started at N(0, 1) while item vectors started ~30x smaller, so after the input
LayerNorm a user's state hardly depended on which items the history held, and a tower trained on a
purely sequential rule could not learn it in a normal budget.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import torch

from encoders.sequence import (
    SequenceConfig,
    SequenceHistories,
    SequenceTower,
    attention_allowed,
    build_model,
    gaps_of,
    item_matrix,
    right_aligned,
    user_vectors,
)
from encoders.sequence_training import (
    SequenceTrainConfig,
    WeightAverage,
    _batches,
    _seen_rows,
    _text_only_loss,
    heldout_targets,
    histories,
    ndcg10_of_targets,
    next_item_loss,
    refit_sequence_tower,
    train_sequence_tower,
    training_windows,
    without_tail,
)
from recsys.errors import ConfigError
from recsys.splits import leave_last_out


def _cycle_log(n_items: int = 30, n_users: int = 120, seed: int = 0) -> pl.DataFrame:
    """Users walk a cycle of items (next = current + 1), each from a random start: a pure order rule."""
    rng = np.random.default_rng(seed)
    rows = []
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for user in range(n_users):
        first, length = int(rng.integers(n_items)), int(rng.integers(6, 16))
        for step in range(length):
            rows.append((f"u{user}", str((first + step) % n_items), start + timedelta(hours=user * 100 + step)))
    return pl.DataFrame(
        rows, schema={"user_id": pl.String, "item_id": pl.String, "ts": pl.Datetime("us", "UTC")}, orient="row"
    )


def _cycle_problem(n_users: int = 120):
    """The cycle log's rows, random text, the ranking mask, training histories and validation targets."""
    log = _cycle_log(n_users=n_users)
    split = leave_last_out(log)
    index = {item: row + 1 for row, item in enumerate(sorted(log["item_id"].unique().to_list(), key=int))}
    text = np.vstack([np.zeros((1, 6), np.float32), np.random.default_rng(1).normal(size=(len(index), 6))])
    allowed = np.r_[False, np.ones(len(index), bool)]
    train_hist = histories(split.history("valid"), index)
    valid_targets = {u: index[i] for u, i in zip(split.valid["user_id"], split.valid["item_id"], strict=True)}
    return index, text, allowed, train_hist, valid_targets


def _ndcg10(model: SequenceTower, hist: SequenceHistories, targets: dict[str, int]) -> float:
    """NDCG@10 of the targets under the evaluation protocol (history excluded, full catalog)."""
    matrix = item_matrix(model)
    allowed = np.r_[False, np.ones(len(matrix) - 1, bool)]
    return ndcg10_of_targets(user_vectors(model, hist, model.config.max_len), matrix, hist, targets, allowed)


@pytest.mark.parametrize("items", ["id", "hybrid", "text"])
def test_state_depends_on_the_newest_item_from_the_start(items):
    """Untrained: replacing the newest item moves the user vector.

    The first version of this tower gave cosine 0.9999 (id) and 0.996 (text) here: its N(0, 1)
    position and gap embeddings drowned the items, and on MovieLens it never left popularity.
    """
    text = np.random.default_rng(0).normal(size=(51, 8)).astype(np.float32) / np.sqrt(8)
    config = SequenceConfig(dim=32, max_len=20, items=items, dropout=0.0)
    model = build_model(text, np.ones(51, bool), config).eval()
    history = torch.tensor([[0, 0, 5, 9, 13, 17], [0, 0, 5, 9, 13, 40]])
    with torch.no_grad():
        a, b = model.user_vectors(history, torch.zeros_like(history), model.item_matrix())
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) < 0.9


@pytest.mark.parametrize("items", ["id", "hybrid"])
def test_learns_an_order_rule_and_scores_test_like_valid(items):
    """Trained on train, early-stopped on valid, refit on train+valid: the rule holds at both stages.

    Test-time histories end with the validation item, which the first model never saw as an input
    at the newest slot: a tower whose state ignores the newest item scores valid but not test.
    """
    log = _cycle_log()
    split = leave_last_out(log)
    items_list = sorted(log["item_id"].unique().to_list(), key=int)
    index = {item: row + 1 for row, item in enumerate(items_list)}
    text = np.vstack([np.zeros((1, 6), np.float32), np.random.default_rng(1).normal(size=(len(index), 6))])
    allowed = np.ones(len(index) + 1, bool)
    allowed[0] = False
    train_hist, test_hist = histories(split.history("valid"), index), histories(split.history("test"), index)
    valid_targets = {u: index[i] for u, i in zip(split.valid["user_id"], split.valid["item_id"], strict=True)}
    test_targets = {u: index[i] for u, i in zip(split.test["user_id"], split.test["item_id"], strict=True)}
    config = SequenceConfig(dim=32, layers=1, max_len=16, dropout=0.1, items=items)
    train_config = SequenceTrainConfig(epochs=60, tokens_per_batch=256, lr=3e-3, patience=60, seed=0, threads=1)
    warm = np.ones(len(index) + 1, bool)
    model, report = train_sequence_tower(
        train_hist, valid_targets, text, warm, allowed, config, train_config, progress=False
    )
    assert report.best_valid_ndcg10 > 0.8
    assert _ndcg10(model, train_hist, valid_targets) > 0.8
    assert _ndcg10(model, test_hist, test_targets) > 0.8  # no refit: the newest item still decides
    refit, refit_report = refit_sequence_tower(test_hist, text, warm, config, train_config, report, progress=False)
    assert refit_report.refit_epochs == report.best_epoch
    assert _ndcg10(refit, test_hist, test_targets) > 0.8


def test_attention_is_causal_and_never_reads_padding():
    config = SequenceConfig(dim=16, max_len=6, layers=1, heads=2, dropout=0.0, items="hybrid")
    model = build_model(np.random.default_rng(0).normal(size=(9, 8)).astype("float32"), np.ones(9, bool), config)
    model.eval()
    a = torch.tensor([[0, 0, 1, 2, 3, 4]])
    b = torch.tensor([[0, 0, 1, 2, 3, 7]])
    c = torch.tensor([[0, 5, 1, 2, 3, 4]])  # one more (real) item where `a` has padding
    gaps = torch.zeros_like(a)
    with torch.no_grad():
        sa, sb = model.states(a, gaps, model.item_matrix()), model.states(b, gaps, model.item_matrix())
        short = model.states(a[:, 2:], gaps[:, 2:], model.item_matrix())
        sc = model.states(c, gaps, model.item_matrix())
    assert torch.isfinite(sa).all()
    assert torch.allclose(sa[0, :5], sb[0, :5], atol=1e-6)  # changing the newest item leaves earlier states
    assert not torch.allclose(sa[0, 5], sb[0, 5])
    assert torch.allclose(sa[0, 2:], short[0], atol=1e-5)  # left padding is invisible: same as no padding
    assert not torch.allclose(sa[0, 5], sc[0, 5])
    allowed = attention_allowed(a)
    assert allowed.shape == (1, 1, 6, 6) and allowed.any(dim=-1).all()


def test_windows_cover_every_target_once():
    rng = np.random.default_rng(0)
    hist = SequenceHistories(
        ["a", "b", "c"],
        [np.arange(1, 501), np.arange(1, 4), np.array([7])],
        [np.zeros(500, np.int64), np.zeros(3, np.int64), np.zeros(1, np.int64)],
    )
    windows = training_windows(hist, max_len=50)
    assert max(e for r, _, e in windows if r == 0) == 500  # the newest window ends at the newest item
    for _ in range(5):
        targets = {0: [], 1: [], 2: []}
        for row, start, end in windows:
            assert end - start <= 51 and end - start >= 2
            targets[row].extend(range(start + 1, end))
        assert sorted(targets[0]) == list(range(1, 500))  # every position but the first, exactly once
        assert sorted(targets[1]) == [1, 2] and targets[2] == []
        batches = _batches(windows, tokens=120, rng=rng)
        assert sorted(w for b in batches for w in b) == sorted(windows)
        for batch in batches:
            assert len(batch) == 1 or max(e - s - 1 for _, s, e in batch) * len(batch) <= 120


def test_sampled_softmax_with_logq_is_finite_and_learns():
    """Beyond `full_softmax_max` items the loss samples negatives by popularity and corrects by log q."""
    log = _cycle_log(n_items=30, n_users=80)
    split = leave_last_out(log)
    index = {item: int(item) + 1 for item in log["item_id"].unique().to_list()}
    text = np.zeros((31, 4), np.float32)
    allowed = np.r_[False, np.ones(30, bool)]
    train_hist = histories(split.history("valid"), index)
    valid_targets = {u: index[i] for u, i in zip(split.valid["user_id"], split.valid["item_id"], strict=True)}
    config = SequenceConfig(dim=32, layers=1, max_len=16, dropout=0.1, items="id")
    sampled = SequenceTrainConfig(
        epochs=30, tokens_per_batch=256, lr=3e-3, patience=30, full_softmax_max=10, sampled_negatives=16, threads=1
    )
    _, report = train_sequence_tower(
        train_hist, valid_targets, text, np.ones(31, bool), allowed, config, sampled, progress=False
    )
    assert all(np.isfinite(loss) for _, loss, _ in report.curve)
    assert report.best_valid_ndcg10 > 0.8


def test_sampled_loss_masks_the_positive_among_negatives():
    states = torch.randn(3, 4)
    matrix = torch.randn(6, 4)
    sampler = torch.full((5,), 0.2)
    loss = next_item_loss(states, torch.tensor([1, 2, 3]), matrix, SequenceTrainConfig(sampled_negatives=64), sampler)
    assert torch.isfinite(loss)


def test_id_items_have_no_vector_when_cold_hybrid_items_keep_their_text():
    text = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    warm = np.array([False, True, True, False, True])  # row 3 is cold
    for items in ("id", "hybrid", "text"):
        model = build_model(text, warm, SequenceConfig(dim=8, heads=2, max_len=4, items=items)).eval()
        matrix = item_matrix(model)
        cold = matrix[3]
        if items == "id":
            assert not cold.any()
        else:
            with torch.no_grad():
                projected = model.text_proj(torch.as_tensor(text[3])).numpy()
            np.testing.assert_allclose(cold, projected, rtol=1e-6)
        assert matrix[1].any()


def test_config_rejects_unknown_items_and_reads_old_keys():
    with pytest.raises(ConfigError, match="item representation"):
        SequenceConfig(items="bag")
    with pytest.raises(ConfigError, match="position scheme"):
        SequenceConfig(positions="middle")
    old = SequenceConfig.from_dict({"dim": 32, "heads": 2, "id_embeddings": True, "text_dropout": 0.0})
    assert old.dim == 32 and old.items == "hybrid"
    assert old.positions == "from_end"  # stored before the key existed: trained that way, reloads that way
    assert SequenceConfig.from_dict(SequenceConfig().to_dict()).positions == "from_start"


@pytest.mark.parametrize("positions", ["from_start", "from_end"])
def test_every_training_state_is_a_state_serving_computes(positions):
    """The state that predicts item j + 1 in a training window equals the served vector of items 0..j.

    Training scores every slot of a window; serving scores only the newest slot of a history. With
    positions counted from the window's end (the tower's earlier scheme) the two disagree for every
    slot but the last: the newest item of a training prefix sits at position 1, 2, ... where serving
    always puts it at 0, so most training targets were learned in a configuration serving never shows.
    """
    text = np.random.default_rng(4).normal(size=(30, 8)).astype(np.float32)
    config = SequenceConfig(dim=16, heads=2, max_len=12, items="hybrid", dropout=0.0, positions=positions)
    model = build_model(text, np.ones(30, bool), config).eval()
    history, gaps = np.array([4, 17, 9, 22, 3, 11, 28]), np.array([0, 1, 3, 0, 2, 5, 1])
    with torch.no_grad():
        window = torch.as_tensor(right_aligned([history], 10))  # padded on the left, as training batches are
        states = model.states(window, torch.as_tensor(right_aligned([gaps], 10)), model.item_matrix())[
            0, -len(history) :
        ]
    served = user_vectors(
        model,
        SequenceHistories(
            [str(j) for j in range(len(history))],
            [history[: j + 1] for j in range(len(history))],
            [gaps[: j + 1] for j in range(len(history))],
        ),
        config.max_len,
    )
    agree = [np.allclose(states[j].numpy(), served[j], atol=1e-5) for j in range(len(history))]
    if positions == "from_start":
        assert all(agree)
    else:
        assert agree == [False] * (len(history) - 1) + [True]


def test_gaps_count_from_the_previous_item():
    assert gaps_of(np.array([100, 100, 101, 100 + 86_400])).tolist()[:2] == [0, 0]
    assert gaps_of(np.array([], dtype=np.int64)).tolist() == []
    buckets = gaps_of(np.array([0, 1, 60, 3600, 86_400 * 30]))
    assert list(buckets) == sorted(buckets)


def test_ndcg_excludes_history_and_disallowed_rows():
    hist = SequenceHistories(["u"], [np.array([1])], [np.zeros(1, np.int64)])
    matrix = np.array([[0.0], [9.0], [3.0], [2.0], [1.0]])
    allowed = np.array([False, True, True, False, True])
    # item 1 is history, item 3 is outside the catalog: the target (4) ranks second after item 2
    assert ndcg10_of_targets(np.array([[1.0]]), matrix, hist, {"u": 4}, allowed) == pytest.approx(1 / np.log2(3))


def test_user_vectors_read_only_the_items_they_need_and_match_the_full_matrix():
    """Serving computes just the history's item vectors; the result equals the full-matrix forward pass."""
    text = np.random.default_rng(2).normal(size=(40, 8)).astype(np.float32)
    warm = np.random.default_rng(3).random(40) > 0.3
    model = build_model(text, warm, SequenceConfig(dim=16, heads=2, max_len=10, items="hybrid")).eval()
    hist = SequenceHistories(
        ["a", "b"], [np.array([3, 9, 27, 5]), np.arange(1, 15)], [np.array([0, 2, 0, 5]), np.zeros(14, np.int64)]
    )
    with torch.no_grad():
        full = model.user_vectors(
            torch.as_tensor(right_aligned(hist.items, 10)),
            torch.as_tensor(right_aligned(hist.gaps, 10)),
            model.item_matrix(),
        ).numpy()
    np.testing.assert_allclose(user_vectors(model, hist, 10), full, rtol=1e-5, atol=1e-6)


def test_id_dropout_trains_items_on_their_text_alone_and_never_serves_that_way():
    text = np.random.default_rng(4).normal(size=(6, 8)).astype(np.float32)
    model = build_model(
        text, np.ones(6, bool), SequenceConfig(dim=8, heads=2, max_len=4, items="hybrid", id_dropout=1.0)
    )
    with torch.no_grad():
        projected = model.text_proj(torch.as_tensor(text))
        model.train()
        assert torch.allclose(model.item_matrix(), projected)  # every id part dropped in this step
        model.eval()
        assert not torch.allclose(model.item_matrix()[1:], projected[1:])  # served vectors keep their ids


def test_without_tail_drops_the_newest_items_and_keeps_a_first_pair():
    hist = SequenceHistories(
        ["a", "b", "c"],
        [np.arange(1, 11), np.arange(1, 5), np.arange(1, 2)],
        [np.arange(10), np.arange(4), np.arange(1)],
    )
    cut = without_tail(hist, 4)
    assert [s.tolist() for s in cut.items] == [list(range(1, 7)), [1, 2], [1]]
    assert [len(g) for g in cut.gaps] == [6, 2, 1]
    assert without_tail(hist, 0) is hist
    with pytest.raises(ConfigError, match="holdout_tail"):
        SequenceTrainConfig(holdout_tail=-1).check()
    assert SequenceTrainConfig(refit=False).stacking_tail == 0  # nothing to serve instead: no holdout


def test_holdout_run_never_trains_on_the_tail_it_will_score():
    """The early-stopped run trains on `without_tail`: its loss never sees the held-out targets.

    On the cycle rule a tower that only ever saw the first half of each walk still generalises,
    so the held-out targets score well; what matters is that training touched none of them.
    """
    log = _cycle_log(n_users=40)
    split = leave_last_out(log)
    index = {str(i): i + 1 for i in range(30)}
    train_hist = histories(split.history("valid"), index)
    fit_hist = without_tail(train_hist, 3)
    seen_windows = training_windows(fit_hist, 8)
    for row, _start, end in seen_windows:
        assert end <= len(fit_hist.items[row]) == max(len(train_hist.items[row]) - 3, 2)
    text = np.random.default_rng(0).normal(size=(31, 8)).astype(np.float32) / np.sqrt(8)
    valid_targets = {u: index[i] for u, i in zip(split.valid["user_id"], split.valid["item_id"], strict=True)}
    allowed = np.r_[False, np.ones(30, bool)]
    config = SequenceConfig(dim=16, max_len=8, items="id", dropout=0.0)
    _, report = train_sequence_tower(
        train_hist,
        valid_targets,
        text,
        np.r_[False, np.ones(30, bool)],
        allowed,
        config,
        SequenceTrainConfig(epochs=3, tokens_per_batch=256, threads=1),
        progress=False,
        fit_hist=fit_hist,
    )
    assert report.best_epoch >= 1 and 0.0 <= report.best_valid_ndcg10 <= 1.0


def test_training_softmax_runs_over_the_items_seen_in_training_only():
    """An item nobody has interacted with is no negative: masking it equals a softmax without it."""
    states, matrix = torch.randn(4, 8), torch.randn(6, 8)
    targets = torch.tensor([1, 2, 4, 2])
    seen = torch.tensor([True, True, False, True, False])  # rows 3 and 5 never appear in training
    masked = next_item_loss(states, targets, matrix, SequenceTrainConfig(), None, seen)
    kept_rows = torch.tensor([0, 1, 2, 4])  # padding row + the seen rows 1, 2, 4
    remapped = torch.tensor([1, 2, 3, 2])  # the targets' positions among the kept rows
    assert torch.allclose(masked, next_item_loss(states, remapped, matrix[kept_rows], SequenceTrainConfig(), None))
    assert not torch.allclose(masked, next_item_loss(states, targets, matrix, SequenceTrainConfig(), None))
    hist = SequenceHistories(["u"], [np.array([1, 2, 4])], [np.zeros(3, np.int64)])
    assert _seen_rows(hist, 5).tolist() == seen.tolist()


def test_text_loss_trains_the_text_part_and_leaves_the_user_tower_alone():
    """The text-only softmax reaches the text projection only: the states it scores are detached."""
    log = _cycle_log(n_items=12, n_users=20)
    split = leave_last_out(log)
    index = {item: int(item) + 1 for item in log["item_id"].unique().to_list()}
    text = np.vstack([np.zeros((1, 6), np.float32), np.random.default_rng(5).normal(size=(12, 6))]).astype(np.float32)
    hist = histories(split.history("valid"), index)
    config = SequenceConfig(dim=16, layers=1, max_len=8, dropout=0.0, items="hybrid")
    model = build_model(text, np.ones(13, bool), config)
    inputs = torch.as_tensor(right_aligned(hist.items, 8))
    states = model.states(inputs, torch.zeros_like(inputs), model.item_matrix())
    targets = inputs[:, -1]
    loss = next_item_loss(states[:, -2].detach(), targets, model.text_matrix(), SequenceTrainConfig(), None)
    loss.backward()
    assert model.text_proj.weight.grad is not None and model.text_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.blocks.parameters())
    with pytest.raises(ConfigError, match="no text part"):
        build_model(text, np.ones(13, bool), SequenceConfig(dim=16, max_len=8, items="id")).text_matrix()
    with pytest.raises(ConfigError, match="text_loss"):
        SequenceTrainConfig(text_loss=-1).check()
    with pytest.raises(ConfigError, match="text_loss_targets"):
        SequenceTrainConfig(text_loss_targets=0).check()
    few = _text_only_loss(model, states[:, -2], targets, SequenceTrainConfig(text_loss_targets=3), None, None)
    assert torch.isfinite(few) and few.requires_grad


def test_weight_average_follows_the_model_and_leaves_buffers_alone():
    """The average starts at the model, moves a decayed step towards it, and copies no training state."""
    text = np.random.default_rng(0).normal(size=(11, 4)).astype(np.float32)
    model = build_model(text, np.ones(11, bool), SequenceConfig(dim=8, heads=2, max_len=5, items="hybrid"))
    average = WeightAverage(model, decay=0.9)
    assert not average.model.training
    before = average.model.text_proj.weight.detach().clone()
    with torch.no_grad():
        model.text_proj.weight.add_(1.0)
    average.update(model)
    moved = average.model.text_proj.weight - before
    # step 1: decay min(0.9, 2 / 11) = 0.18, so the average moves 82% of the way to the model
    assert torch.allclose(moved, torch.full_like(moved, 1 - 2 / 11), atol=1e-5)
    assert average.model.text is not model.text and torch.equal(average.model.text, model.text)


def test_averaged_training_keeps_and_scores_the_average():
    """With `ema_decay` the kept model is the average; the curve carries the raw weights' score beside it."""
    index, text, allowed, train_hist, valid_targets = _cycle_problem()
    config = SequenceConfig(dim=32, layers=1, max_len=16, dropout=0.1, items="id")
    train_config = SequenceTrainConfig(epochs=40, tokens_per_batch=256, lr=3e-3, patience=40, threads=1, ema_decay=0.9)
    model, report = train_sequence_tower(
        train_hist, valid_targets, text, np.ones(len(index) + 1, bool), allowed, config, train_config, progress=False
    )
    assert all(len(point) == 4 for point in report.curve)
    assert report.best_valid_ndcg10 > 0.8
    assert _ndcg10(model, train_hist, valid_targets) == pytest.approx(report.best_valid_ndcg10)
    with pytest.raises(ConfigError, match="ema_decay"):
        SequenceTrainConfig(ema_decay=1.0).check()


def test_heldout_targets_are_the_tail_the_run_never_fitted_and_the_validation_target():
    """Early stopping scores every target the early-stopped run did not train on, each after its own prefix."""
    hist = SequenceHistories(["a", "b"], [np.array([5, 6, 7, 8, 9]), np.array([1, 2])], [np.arange(5), np.arange(2)])
    fit = without_tail(hist, 2)  # a keeps 5, 6, 7; b keeps its first pair
    pairs, targets = heldout_targets(hist, fit, {"a": 11, "b": 12})
    assert targets == {"a#3": 8, "a#4": 9, "a#5": 11, "b#2": 12}
    prefixes = dict(zip(pairs.user_ids, pairs.items, strict=True))
    assert prefixes["a#3"].tolist() == [5, 6, 7] and prefixes["a#5"].tolist() == [5, 6, 7, 8, 9]
    assert [len(g) for g in pairs.gaps] == [len(i) for i in pairs.items]
    # without a tail only the validation targets remain: the old early-stopping signal
    assert heldout_targets(hist, hist, {"a": 11})[1] == {"a#5": 11}


def test_training_reports_the_heldout_curve_that_chose_the_epoch():
    _, text, allowed, train_hist, valid_targets = _cycle_problem(n_users=40)
    config = SequenceConfig(dim=16, layers=1, max_len=16, dropout=0.1, items="id")
    tc = SequenceTrainConfig(epochs=4, tokens_per_batch=256, patience=4, threads=1, holdout_tail=3)
    fit = without_tail(train_hist, 3)
    _, report = train_sequence_tower(
        train_hist, valid_targets, text, np.ones(len(text), bool), allowed, config, tc, progress=False, fit_hist=fit
    )
    assert report.heldout_targets == len(valid_targets) + sum(
        len(a) - len(b) for a, b in zip(train_hist.items, fit.items, strict=True)
    )
    assert [e for e, _ in report.heldout_curve] == [1, 2, 3, 4]
    best = max(report.heldout_curve, key=lambda p: p[1])
    assert report.best_epoch == best[0]
    assert report.best_valid_ndcg10 == dict((p[0], p[2]) for p in report.curve)[report.best_epoch]
