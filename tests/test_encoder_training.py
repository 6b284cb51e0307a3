"""Encoder training flow on a tiny random BERT and synthetic data: every tower, resume, artefacts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from encoders.history_text import ItemTokens
from encoders.sequence import SequenceConfig, attention_mask, build_model
from encoders.sequence_training import SequenceTrainConfig
from encoders.testing import make_tiny_bert
from encoders.text_encoder import TextEncoder
from encoders.text_training import TextTrainConfig, info_nce
from jobs.train_encoder import train_encoder
from recsys.data.synthetic import generate
from recsys.splits import leave_last_out


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return str(make_tiny_bert(tmp_path_factory.mktemp("bert")))


@pytest.fixture(scope="module")
def small_data():
    dataset = generate(n_interactions=1500, n_users=60, n_items=120, seed=3)
    return dataset, leave_last_out(dataset.interactions)


def _text_config(**overrides):
    base = dict(method="lora", max_steps=4, batch_size=8, eval_every=2, history_tokens=48, item_tokens=16,
                checkpoint_every=2, threads=1)
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


def test_sequence_tower_is_causal_and_finite():
    config = SequenceConfig(dim=16, max_len=6, layers=1, heads=2, dropout=0.0)
    model = build_model(np.random.default_rng(0).normal(size=(9, 8)).astype("float32"), np.ones(9, bool), config)
    model.eval()
    a = torch.tensor([[0, 0, 1, 2, 3, 4]])
    b = torch.tensor([[0, 0, 1, 2, 3, 7]])
    gaps = torch.zeros_like(a)
    with torch.no_grad():
        sa = model.user_states(a, gaps, model.item_matrix())
        sb = model.user_states(b, gaps, model.item_matrix())
    assert torch.isfinite(sa).all()
    assert torch.allclose(sa[0, :5], sb[0, :5], atol=1e-6)  # changing the last item leaves earlier states
    assert not torch.allclose(sa[0, 5], sb[0, 5])
    mask = attention_mask(a == 0, heads=2)
    assert mask.shape == (2, 6, 6) and not mask.all(dim=-1).any()


@pytest.mark.parametrize("tower", ["sequence", "text", "pooled"])
def test_train_encoder_each_tower(tmp_path, tiny_bert, small_data, tower):
    dataset, split = small_data
    run = train_encoder(dataset, split, tmp_path / tower, tower=tower, base_model=tiny_bert,
                        text_config=_text_config(), sequence_config=SequenceConfig(dim=16, max_len=20, layers=1),
                        sequence_train_config=SequenceTrainConfig(epochs=4, eval_every=2, threads=1),
                        progress=False)
    assert run.test["users"] == split.test["user_id"].n_unique()
    assert 0.0 <= run.test["ndcg@10"] <= 1.0
    assert (tmp_path / tower / "encoder" / "encoder.json").exists()
    assert np.load(tmp_path / tower / "item_vectors.npy").shape[0] == dataset.items.height
    saved = json.loads((tmp_path / tower / "run.json").read_text())
    assert saved["tower"] == tower and saved["text_report"]["steps"] >= 2


def test_text_stage_resumes_from_checkpoint(tmp_path, tiny_bert, small_data):
    dataset, split = small_data
    out = tmp_path / "run"
    first = train_encoder(dataset, split, out, tower="pooled", base_model=tiny_bert,
                          text_config=_text_config(max_steps=4, patience=99), progress=False)
    assert first.text_report["resumed_from"] == 0
    again = train_encoder(dataset, split, out, tower="pooled", base_model=tiny_bert,
                          text_config=_text_config(max_steps=6, patience=99), progress=False)
    assert again.text_report["resumed_from"] == 4 and again.text_report["steps"] == 6


def test_hard_negatives_are_the_frozen_models_nearest_other_items(tmp_path, tiny_bert, small_data):
    """Mined from the starting model: each item's pool = its most similar *other* eligible items."""
    from encoders.text_training import TextTowerTrainer

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
    run = train_encoder(dataset, split, tmp_path / "hard", tower="text", base_model=tiny_bert,
                        text_config=_text_config(hard_negatives=2, max_steps=2), progress=False)
    assert run.text_report["steps"] == 2
    assert json.loads((tmp_path / "hard" / "run.json").read_text())["text_config"]["hard_negatives"] == 2
