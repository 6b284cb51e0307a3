"""Encoder training flow on a tiny random BERT and synthetic data: every tower, resume, artefacts."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from encoders.encoding import encode_rows
from encoders.history_text import ItemTokens
from encoders.item_prior import PRIOR_FILE, select_beta
from encoders.sequence import SequenceConfig
from encoders.sequence_training import SequenceTrainConfig
from encoders.text_encoder import TextEncoder
from encoders.text_training import Sequences, TextTowerTrainer, TextTrainConfig, catalog_info_nce, info_nce
from jobs.train_encoder import train_encoder
from recsys.data.order import chronological


def _text_config(**overrides):
    base = dict(
        method="lora",
        max_steps=4,
        batch_size=8,
        eval_every=2,
        history_tokens=48,
        item_tokens=16,
        checkpoint_every=2,
        threads=1,
    )
    base.update(overrides)
    return TextTrainConfig(**base)


def test_history_text_is_newest_first_and_within_budget(tiny_bert):
    encoder = TextEncoder.from_pretrained(tiny_bert, device="cpu")
    tokens = ItemTokens.build(encoder, ["the last voyage", "dark night", "love story"], max_tokens=8)
    row = tokens.history([0, 1, 2], budget=64)
    assert row[0] == tokens.cls_id and row[-1] == tokens.sep_id
    text = encoder.tokenizer.decode(row, skip_special_tokens=False)
    assert text.index("love") < text.index("dark") < text.index("voyage")
    assert len(tokens.history([0, 1, 2] * 10, budget=12)) == 12


def test_info_nce_masks_duplicate_targets():
    users = torch.eye(3)
    items = torch.eye(3)
    same = info_nce(users, items, torch.tensor([5, 5, 6]), torch.tensor([5, 5, 6]), temperature=1.0)
    distinct = info_nce(users, items, torch.tensor([5, 7, 6]), torch.tensor([5, 7, 6]), temperature=1.0)
    assert same < distinct  # the duplicate of a row's own target is not a negative


def test_catalog_info_nce_is_the_full_ranking_softmax_without_the_history():
    """The loss equals cross-entropy over every catalog item minus each row's history; bank gets no gradient."""
    gen = torch.Generator().manual_seed(0)
    catalog = torch.nn.functional.normalize(torch.randn(12, 4, generator=gen), dim=1)
    users = torch.nn.functional.normalize(torch.randn(2, 4, generator=gen), dim=1).requires_grad_(True)
    targets = torch.tensor([3, 7])
    seen = [np.array([0, 1, 5, 3]), np.array([2])]  # a re-consumed target stays rankable
    loss = catalog_info_nce(users, targets, catalog, seen, temperature=0.1)
    expected = []
    for row in range(2):
        logits = users[row].detach() @ catalog.T / 0.1
        logits[torch.as_tensor([i for i in seen[row] if i != targets[row]])] = float("-inf")
        expected.append(-torch.log_softmax(logits, 0)[targets[row]])
    assert torch.allclose(loss, torch.stack(expected).mean(), atol=1e-5)
    loss.backward()
    assert users.grad is not None and users.grad.abs().sum() > 0


@pytest.mark.parametrize("tower", ["sequence", "text", "pooled", "auto"])
def test_train_encoder_each_tower(tmp_path, tiny_bert, small_data, tower):
    dataset, split = small_data
    run = train_encoder(
        dataset,
        split,
        tmp_path / tower,
        tower=tower,
        base_model=tiny_bert,
        text_config=_text_config(),
        sequence_config=SequenceConfig(dim=16, max_len=20, layers=1),
        sequence_train_config=SequenceTrainConfig(epochs=4, eval_every=2, threads=1),
        progress=False,
    )
    assert run.test["users"] == split.test["user_id"].n_unique()
    assert 0.0 <= run.test["ndcg@10"] <= 1.0
    assert (tmp_path / tower / "encoder" / "encoder.json").exists()
    assert np.load(tmp_path / tower / "item_vectors.npy").shape[0] == dataset.items.height
    saved = json.loads((tmp_path / tower / "run.json").read_text())
    assert saved["text_report"]["steps"] >= 2
    # The prior lives in the text tower's index only: other towers train without it.
    assert saved["text_config"]["train_prior_beta"] == (0.05 if tower in ("text", "auto") else 0.0)
    if tower == "auto":  # both trained, the one with the higher validation NDCG@10 kept
        choice = saved["tower_choice"]
        assert set(choice["valid_ndcg10"]) == {"text", "sequence"}
        assert saved["tower"] == choice["chosen"] == max(choice["valid_ndcg10"], key=choice["valid_ndcg10"].get)
        assert saved["valid"]["ndcg@10"] == pytest.approx(choice["valid_ndcg10"][saved["tower"]], abs=1e-5)
        assert (tmp_path / tower / "item_prior.parquet").exists() == (
            saved["tower"] == "text" and saved["popularity_prior"]["beta"] > 0
        )
    else:
        assert saved["tower"] == tower


def test_text_stage_resumes_from_checkpoint(tmp_path, tiny_bert, small_data):
    dataset, split = small_data
    out = tmp_path / "run"
    first = train_encoder(
        dataset,
        split,
        out,
        tower="pooled",
        base_model=tiny_bert,
        text_config=_text_config(max_steps=4, patience=99),
        progress=False,
    )
    assert first.text_report["resumed_from"] == 0
    again = train_encoder(
        dataset,
        split,
        out,
        tower="pooled",
        base_model=tiny_bert,
        text_config=_text_config(max_steps=6, patience=99),
        progress=False,
    )
    assert again.text_report["resumed_from"] == 4 and again.text_report["steps"] == 6


def test_hard_negatives_are_the_frozen_models_nearest_other_items(tmp_path, tiny_bert, small_data):
    """Mined from the starting model: each item's pool = its most similar *other* eligible items."""
    dataset, split = small_data
    encoder = TextEncoder.from_pretrained(tiny_bert, max_length=48, device="cpu")
    texts = dataset.item_text()["text"].to_list()
    trainer = TextTowerTrainer(encoder, texts, _text_config())
    eligible = np.arange(0, len(texts), 2)  # e.g. only items seen in training
    pool = trainer.mine_hard_negatives(pool_size=5, candidates=eligible)
    vectors = trainer.item_vectors()
    assert pool.shape == (len(texts), 5)
    assert np.isin(pool, eligible).all()
    assert not (pool == np.arange(len(texts))[:, None]).any()  # never the item itself
    for row in (0, 1, 7):
        scores = vectors[eligible] @ vectors[row]
        scores[eligible == row] = -np.inf
        best = set(eligible[np.argsort(-scores)[:5]].tolist())
        assert set(pool[row].tolist()) == best
    # The job mines the pool and trains with it.
    run = train_encoder(
        dataset,
        split,
        tmp_path / "hard",
        tower="text",
        base_model=tiny_bert,
        text_config=_text_config(hard_negatives=2, max_steps=2),
        progress=False,
    )
    assert run.text_report["steps"] == 2
    assert json.loads((tmp_path / "hard" / "run.json").read_text())["text_config"]["hard_negatives"] == 2


def test_catalog_negatives_train_and_leave_the_item_cache_intact(tiny_bert, small_data):
    """The bank is a copy: updating it during training must not corrupt the cached item vectors."""
    dataset, split = small_data
    encoder = TextEncoder.from_pretrained(tiny_bert, max_length=48, device="cpu")
    texts = dataset.item_text()["text"].to_list()
    row_of = {item: i for i, item in enumerate(dataset.item_text()["item_id"].to_list())}
    history = chronological(split.history("valid"))
    grouped = history.group_by("user_id", maintain_order=True).agg("item_id")
    seqs = Sequences(
        grouped["user_id"].to_list(), [np.array([row_of[i] for i in items]) for items in grouped["item_id"].to_list()]
    )
    trainer = TextTowerTrainer(
        encoder, texts, _text_config(catalog_negatives=True, max_steps=4, eval_every=2, patience=99)
    )
    seen_by_eval = []

    def evaluate(current):
        seen_by_eval.append(current.item_vectors().copy())
        return float(len(seen_by_eval))  # later is "better": the last weights are kept

    report = trainer.fit(seqs, evaluate, progress=False)
    assert report.steps == 4 and all(np.isfinite(c["loss"]) for c in report.curve)
    direct = encode_rows(encoder, [trainer.tokens.item(i) for i in range(len(texts))])
    np.testing.assert_allclose(trainer.item_vectors(), direct, atol=1e-5)
    np.testing.assert_allclose(seen_by_eval[-1], direct, atol=1e-5)
    assert not np.allclose(seen_by_eval[0], direct, atol=1e-5)  # training moved the item tower


def test_select_beta_keeps_the_best_and_prefers_no_prior_on_ties():
    log_count = np.log1p(np.array([0.0, 3.0, 10.0]))
    beta, grid = select_beta(log_count, lambda prior: -abs(float(prior[2]) - 0.05 * log_count[2]))
    assert beta == 0.05 and set(grid) >= {0.0, 0.05}
    beta, _ = select_beta(log_count, lambda prior: 1.0)  # nothing helps: the prior stays off
    assert beta == 0.0


def test_text_run_reports_the_prior_it_chose_on_validation(tmp_path, tiny_bert, small_data):
    """The chosen beta's validation score is the run's validation NDCG@10; the file exists iff beta > 0."""
    dataset, split = small_data
    out = tmp_path / "prior"
    run = train_encoder(
        dataset, split, out, tower="text", base_model=tiny_bert, text_config=_text_config(), progress=False
    )
    prior = run.prior_report
    assert prior["valid_ndcg10_by_beta"][prior["beta"]] == pytest.approx(run.valid["ndcg@10"], abs=1e-9)
    assert max(prior["valid_ndcg10_by_beta"].values()) == pytest.approx(run.valid["ndcg@10"], abs=1e-9)
    assert (out / PRIOR_FILE).is_file() == (prior["beta"] > 0)
    if prior["beta"] > 0:
        saved = pl.read_parquet(out / PRIOR_FILE)
        counts = split.history("valid").group_by("item_id").len()
        top = counts.sort("len", descending=True)["item_id"][0]
        assert saved.height == dataset.items.height
        assert saved.filter(pl.col("item_id") == top)["prior"][0] == pytest.approx(
            prior["beta"] * np.log1p(counts["len"].max()), rel=1e-5
        )
    off = train_encoder(
        dataset,
        split,
        out,
        tower="text",
        base_model=tiny_bert,
        text_config=_text_config(popularity_prior=False),
        progress=False,
    )
    assert "beta" not in off.prior_report and not (out / PRIOR_FILE).exists()  # a rerun drops the stale prior


def test_prior_inside_the_training_logits(tmp_path, tiny_bert, small_data):
    """`train_prior_beta` puts beta*log(1+count) in both losses; validation then scores with it too."""
    dataset, split = small_data
    run = train_encoder(
        dataset,
        split,
        tmp_path / "train-prior",
        tower="text",
        base_model=tiny_bert,
        text_config=_text_config(train_prior_beta=0.05, catalog_negatives=True, max_steps=2, eval_every=2),
        progress=False,
    )
    curve = run.text_report["curve"]
    assert run.text_report["steps"] == 2 and np.isfinite(curve[-1]["loss"])
    saved = json.loads((tmp_path / "train-prior" / "run.json").read_text())
    assert saved["text_config"]["train_prior_beta"] == 0.05
