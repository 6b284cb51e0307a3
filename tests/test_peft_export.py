"""PEFT methods, adapter files, merging and serving exports, on a tiny random BERT (fast) and MiniLM (slow)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from sentence_transformers import SentenceTransformer
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from transformers import AutoModel

from encoders.export import agreement, quantize_int8, save_merged
from encoders.peft_methods import (
    METADATA_FILE,
    apply_peft,
    load_with_adapter,
    merge_for_serving,
    peft_regularization,
    peft_step,
    read_metadata,
    save_adapter,
    trainable_parameters,
)
from encoders.testing import make_tiny_bert
from encoders.text_encoder import TextEncoder
from recsys.errors import ConfigError

QUERIES = ["the last voyage", "love story", "dark ghost island", "funny family christmas movie"]
ITEMS = ["drama romance", "romance | love", "horror thriller", "comedy children"]
PROBE = [*QUERIES, *ITEMS, "", "secret garden (1994) | drama"]
TOTAL_STEPS = 10
ADAPTER_MARKERS = {"lora": ("lora_",), "adalora": ("lora_",), "ia3": ("ia3_l",)}


def fresh(path: Path) -> TextEncoder:
    return TextEncoder.from_pretrained(str(path), device="cpu")


def train(encoder: TextEncoder, steps: int = 3) -> None:
    """A few real steps of in-batch contrastive training, so adapters hold non-trivial weights."""
    params = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=0.05, weight_decay=0.0)
    encoder.train()
    q, i = encoder.tokenize(QUERIES), encoder.tokenize(ITEMS)
    for step in range(steps):
        scores = encoder(**q) @ encoder(**i).T / 0.05
        loss = torch.nn.functional.cross_entropy(scores, torch.arange(len(QUERIES)))
        loss = loss + peft_regularization(encoder)
        loss.backward()
        optimizer.step()
        peft_step(encoder, step)
        optimizer.zero_grad()
    encoder.eval()


def snapshot(encoder: TextEncoder) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in encoder.named_parameters()}


def trained(path: Path, method: str) -> TextEncoder:
    encoder = apply_peft(fresh(path), method, r=4, total_steps=TOTAL_STEPS)
    if method != "frozen":
        train(encoder)
    return encoder


# ------------------------------------------------------------------------ what each method trains
@pytest.mark.parametrize("method", ["lora", "adalora", "ia3", "full"])
def test_each_method_trains_exactly_its_parameters(tiny_path: Path, method: str) -> None:
    encoder = apply_peft(fresh(tiny_path), method, r=4, total_steps=TOTAL_STEPS)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    before = snapshot(encoder)
    train(encoder)
    after = snapshot(encoder)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert trainable, "nothing to train"
    assert changed == trainable

    if method in ADAPTER_MARKERS:
        assert all(any(m in n for m in ADAPTER_MARKERS[method]) for n in trainable)
        assert not any("pooler" in n for n in trainable)
    else:  # full: every weight that reaches the pooled embedding, not the unused pooler
        all_names = {n for n, _ in encoder.named_parameters()}
        assert trainable == {n for n in all_names if ".pooler." not in n}


def test_lora_targets_every_attention_and_feed_forward_linear(tiny_path: Path) -> None:
    encoder = apply_peft(fresh(tiny_path), "lora", r=4)
    adapted = {n.split(".lora_A")[0] for n, _ in encoder.named_parameters() if ".lora_A." in n}
    suffixes = sorted({n.split(".layer.")[1].split(".", 1)[1] for n in adapted})
    assert suffixes == [
        "attention.output.dense",
        "attention.self.key",
        "attention.self.query",
        "attention.self.value",
        "intermediate.dense",
        "output.dense",
    ]
    assert len(adapted) == 2 * 6  # two layers


def test_lora_parameter_count_is_rank_times_in_plus_out(tiny_path: Path) -> None:
    base = fresh(tiny_path)
    base_total = sum(p.numel() for p in base.parameters())
    linears = {
        n: m
        for n, m in base.transformer.named_modules()
        if isinstance(m, torch.nn.Linear)
        and n.split(".")[-1] in {"query", "key", "value", "dense"}
        and not n.startswith("pooler")
    }
    expected = sum(4 * (m.in_features + m.out_features) for m in linears.values())
    trainable, total = trainable_parameters(apply_peft(base, "lora", r=4))
    assert trainable == expected
    assert total == base_total + expected


def test_ia3_scales_keys_values_and_feed_forward(tiny_path: Path) -> None:
    encoder = apply_peft(fresh(tiny_path), "ia3")
    names = [n for n, p in encoder.named_parameters() if p.requires_grad]
    assert any("attention.self.key.ia3_l" in n for n in names)
    assert any("attention.self.value.ia3_l" in n for n in names)
    assert any(".output.dense.ia3_l" in n and "attention" not in n for n in names)
    assert not any("query" in n for n in names)
    # the feed-forward output projection scales its 4*hidden input, the others their outputs
    config = encoder.transformer.peft_config["default"]
    assert set(config.feedforward_modules) <= set(config.target_modules)


def test_frozen_trains_nothing_and_keeps_zero_shot_vectors(tiny_path: Path) -> None:
    base_vectors = fresh(tiny_path).encode(PROBE)
    encoder = apply_peft(fresh(tiny_path), "frozen")
    assert trainable_parameters(encoder)[0] == 0
    np.testing.assert_allclose(encoder.encode(PROBE), base_vectors, atol=1e-6)


def test_new_adapters_start_as_the_identity(tiny_path: Path) -> None:
    base_vectors = fresh(tiny_path).encode(PROBE)
    for method in ("lora", "adalora", "ia3"):
        encoder = apply_peft(fresh(tiny_path), method, total_steps=TOTAL_STEPS)
        np.testing.assert_allclose(encoder.encode(PROBE), base_vectors, atol=1e-6)


def test_bad_settings_are_config_errors(tiny_path: Path) -> None:
    with pytest.raises(ConfigError, match="total_steps"):
        apply_peft(fresh(tiny_path), "adalora")
    with pytest.raises(ConfigError, match="unknown PEFT method"):
        apply_peft(fresh(tiny_path), "prefix")
    with pytest.raises(ConfigError, match="rank"):
        apply_peft(fresh(tiny_path), "lora", r=0)
    encoder = apply_peft(fresh(tiny_path), "lora")
    with pytest.raises(ConfigError, match="already has method 'lora'"):
        apply_peft(encoder, "ia3")
    with pytest.raises(ConfigError, match="cannot apply lora"):
        apply_peft(fresh(tiny_path), "lora", target_modules=["no_such_layer"])


def test_adalora_adds_an_orthogonality_penalty(tiny_path: Path) -> None:
    lora_penalty = peft_regularization(apply_peft(fresh(tiny_path), "lora"))
    assert lora_penalty.item() == 0.0
    penalty = peft_regularization(apply_peft(fresh(tiny_path), "adalora", total_steps=TOTAL_STEPS))
    assert penalty.item() > 0 and penalty.requires_grad


# ------------------------------------------------------------------------- save / load / merge
@pytest.mark.parametrize("method", ["lora", "adalora", "ia3", "full", "frozen"])
def test_save_then_load_reproduces_embeddings(tiny_path: Path, tmp_path: Path, method: str) -> None:
    encoder = trained(tiny_path, method)
    expected = torch.from_numpy(encoder.encode(PROBE))
    save_adapter(encoder, tmp_path / "enc")
    meta = read_metadata(tmp_path / "enc")
    assert meta["method"] == method
    assert meta["base_model"] == str(tiny_path.resolve())
    assert meta["max_length"] == encoder.max_length

    from_recorded_base = load_with_adapter(None, tmp_path / "enc", device="cpu")
    from_given_base = load_with_adapter(fresh(tiny_path), tmp_path / "enc", device="cpu")
    for loaded in (from_recorded_base, from_given_base):
        assert loaded.method == method
        assert trainable_parameters(loaded)[0] == 0
        assert torch.allclose(torch.from_numpy(loaded.encode(PROBE)), expected, atol=1e-6)


@pytest.mark.parametrize("method", ["lora", "adalora", "ia3"])
def test_adapter_folder_holds_no_base_weights(tiny_path: Path, tmp_path: Path, method: str) -> None:
    save_adapter(trained(tiny_path, method), tmp_path / "enc")
    files = {p.name for p in (tmp_path / "enc").iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", METADATA_FILE, "tokenizer"}
    with safe_open(str(tmp_path / "enc" / "adapter_model.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and all(any(m in k for m in ADAPTER_MARKERS[method]) for k in keys)
    adapter_bytes = (tmp_path / "enc" / "adapter_model.safetensors").stat().st_size
    base_bytes = (tiny_path / "model.safetensors").stat().st_size
    assert adapter_bytes < base_bytes / 2


def test_loaded_adapter_can_continue_training(tiny_path: Path, tmp_path: Path) -> None:
    save_adapter(trained(tiny_path, "lora"), tmp_path / "enc")
    loaded = load_with_adapter(None, tmp_path / "enc", device="cpu", trainable=True)
    names = [n for n, p in loaded.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"encoder\.json: not found"):
        load_with_adapter(None, tmp_path)
    (tmp_path / METADATA_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_with_adapter(None, tmp_path)


@pytest.mark.parametrize("method", ["lora", "adalora", "ia3"])
def test_merged_model_matches_the_adapter_model(tiny_path: Path, method: str) -> None:
    encoder = trained(tiny_path, method)
    base_vectors = fresh(tiny_path).encode(PROBE)
    adapter_vectors = encoder.encode(PROBE)
    assert np.abs(adapter_vectors - base_vectors).max() > 1e-3, "training changed nothing"
    merged = merge_for_serving(encoder)
    assert merged.method == "merged"
    assert type(merged.transformer).__name__ == "BertModel"
    assert not any(("lora_" in k or "ia3_" in k) for k in merged.transformer.state_dict())
    assert torch.allclose(torch.from_numpy(merged.encode(PROBE)), torch.from_numpy(adapter_vectors), atol=1e-5)
    # the adapter model is left as it was
    np.testing.assert_allclose(encoder.encode(PROBE), adapter_vectors, atol=1e-6)


# ---------------------------------------------------------------------------------------- export
def test_save_merged_writes_a_plain_hf_folder(tiny_path: Path, tmp_path: Path) -> None:
    encoder = trained(tiny_path, "lora")
    folder = save_merged(encoder, tmp_path / "served")
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not (folder / "adapter_config.json").exists()
    assert type(AutoModel.from_pretrained(folder, local_files_only=True)).__name__ == "BertModel"
    reloaded = TextEncoder.from_pretrained(str(folder), device="cpu")
    assert reloaded.max_length == encoder.max_length
    np.testing.assert_allclose(reloaded.encode(PROBE), encoder.encode(PROBE), atol=1e-5)


def test_quantize_int8_replaces_linears_and_stays_close(tiny_path: Path) -> None:
    encoder = trained(tiny_path, "lora")
    quantized = quantize_int8(encoder, full_range=True)
    assert quantized.method == "int8"

    linears = [m for m in quantized.transformer.modules() if isinstance(m, torch.nn.Linear)]
    assert [m for m in quantized.transformer.modules() if isinstance(m, DynamicQuantizedLinear)]
    assert linears == [quantized.transformer.pooler.dense]  # only the unused pooler stays float
    assert not any("lora_" in k for k in quantized.transformer.state_dict())
    assert agreement(encoder, quantized, PROBE) > 0.95
    assert encoder.method == "lora"  # the input is untouched

    portable = quantize_int8(encoder, full_range=False)
    assert portable.peft_settings["activation_bits"] == 7
    kept = portable.peft_settings["fp32_linears"]
    assert kept and all(name.endswith("dense") and "attention" not in name for name in kept)
    assert agreement(encoder, portable, PROBE) > 0.95
    with pytest.raises(ConfigError, match="fp32"):
        save_merged(quantized, Path("unused"))


def test_agreement_is_one_for_the_same_model_and_lower_for_another(tiny_path: Path, tmp_path: Path) -> None:
    a = fresh(tiny_path)
    assert agreement(a, a, PROBE) == pytest.approx(1.0, abs=1e-6)
    other = TextEncoder.from_pretrained(str(make_tiny_bert(tmp_path / "other", seed=1)), device="cpu")
    assert agreement(a, other, PROBE) < 0.99
    with pytest.raises(ConfigError):
        agreement(a, other, [])


# ----------------------------------------------------------------------------------- real MiniLM
def _words(text: str) -> list[str]:
    return text.split()


def movie_like_titles(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    first = _words("Last Silent Golden Lost Hidden Broken Dark Little Wild Eternal Secret Crimson Winter")
    second = _words("Voyage Kingdom River Garden Promise Summer Night Empire Dream Shadow Island Letter Road")
    genres = _words(
        "Drama Romance Comedy Action Thriller Horror Adventure Animation Children Fantasy Crime "
        "Mystery Sci-Fi Documentary Musical Western War"
    )
    return [
        f"The {rng.choice(first)} {rng.choice(second)} ({rng.randint(1950, 2020)}) | "
        + ", ".join(rng.sample(genres, rng.randint(1, 3)))
        for _ in range(n)
    ]


@pytest.mark.slow
def test_int8_minilm_agrees_with_fp32() -> None:
    texts = movie_like_titles(200)
    fp32 = TextEncoder.from_pretrained(None, device="cpu")
    assert agreement(fp32, quantize_int8(fp32), texts) >= 0.99  # this CPU's default mode
    assert agreement(fp32, quantize_int8(fp32, full_range=False), texts) >= 0.99  # portable mode


@pytest.mark.slow
def test_merged_minilm_folder_loads_in_sentence_transformers(tmp_path: Path) -> None:
    texts = movie_like_titles(8, seed=1)
    encoder = apply_peft(TextEncoder.from_pretrained(None, device="cpu"), "lora", r=4)
    train(encoder, steps=2)
    folder = save_merged(encoder, tmp_path / "served")
    st_vectors = SentenceTransformer(str(folder), device="cpu").encode(texts, normalize_embeddings=False)
    np.testing.assert_allclose(st_vectors, encoder.encode(texts), atol=1e-4)
