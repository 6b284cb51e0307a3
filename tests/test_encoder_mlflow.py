"""The encoder as an MLflow model: log, register, alias, load by alias, and get training's vectors back.

One tiny training run (random 2-layer BERT, a few LoRA steps, a small sequence tower) on synthetic
data is logged into a real SQLite store under tmp_path; no part of MLflow is mocked.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pytest

from encoders.packaging import EncoderBundle, package_run
from encoders.sequence import SequenceConfig
from encoders.sequence_training import SequenceTrainConfig
from encoders.text_training import TextTrainConfig
from jobs.log_encoder import log_encoder_run
from jobs.train_encoder import train_encoder
from recsys.errors import ConfigError, DataError
from recsys.registry import resolve, set_alias


def _text_config(**overrides):
    config = dict(
        method="lora",
        max_steps=2,
        batch_size=8,
        eval_every=2,
        history_tokens=48,
        item_tokens=16,
        checkpoint_every=2,
        threads=1,
    )
    config.update(overrides)
    return TextTrainConfig(**config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert, small_data):
    """Train once per tower the tests need: `sequence` (logged to MLflow) and `text` (bundle only)."""
    root = tmp_path_factory.mktemp("encoder-mlflow")
    dataset, split = small_data
    runs = {}
    for tower in ("sequence", "text"):
        train_encoder(
            dataset,
            split,
            root / tower,
            tower=tower,
            base_model=tiny_bert,
            text_config=_text_config(),
            sequence_config=SequenceConfig(dim=16, max_len=20, layers=1),
            sequence_train_config=SequenceTrainConfig(epochs=2, eval_every=1, threads=1),
            progress=False,
        )
        runs[tower] = root / tower
    return runs


@pytest.fixture(scope="module")
def champion(trained, mlflow_store):
    """Version 1 of recsys-encoder, logged from the sequence run and aliased `champion`."""
    return log_encoder_run(
        trained["sequence"],
        mlflow_store,
        alias="champion",
        params={"note": "first"},
        metrics={"extra": {"seconds": 1.5}},
    )


def _items(run) -> pl.DataFrame:
    return pl.read_parquet(run / "items.parquet")


def test_champion_alias_loads_a_model_that_reproduces_training_vectors(trained, mlflow_store, champion):
    import mlflow

    assert champion.name == "recsys-encoder" and champion.alias == "champion"
    assert resolve("champion", kind="encoder", settings=mlflow_store) == champion
    model = mlflow.pyfunc.load_model("models:/recsys-encoder@champion", model_config={"device": "cpu"})
    items = _items(trained["sequence"])
    vectors = model.predict(pd.DataFrame({"text": items["text"].to_list()}))
    expected = np.load(trained["sequence"] / "item_vectors.npy")
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape
    assert np.allclose(vectors, expected, atol=1e-6)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # The sequence tower's index vectors are the item matrix the tower was evaluated with.
    index = model.predict(
        pd.DataFrame({"item_id": items["item_id"].to_list(), "text": items["text"].to_list()}), params={"kind": "index"}
    )
    assert np.allclose(index, np.load(trained["sequence"] / "sequence" / "item_matrix.npy"), atol=1e-5)


def test_logged_model_is_code_plus_safetensors_without_pickles(mlflow_store, champion, tmp_path):
    import mlflow

    folder = mlflow.artifacts.download_artifacts(artifact_uri=champion.uri, dst_path=str(tmp_path))
    files = {p.relative_to(folder).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    pickled = [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt"))]
    assert pickled == [] and "python_model.pkl" not in {f.rsplit("/", 1)[-1] for f in files}
    assert "mlflow_model.py" in files  # models-from-code: the script, not a pickled instance
    for needed in (
        "encoder/adapter_model.safetensors",
        "encoder/encoder.json",
        "encoder/tokenizer/tokenizer.json",
        "base/model.safetensors",
        "sequence/model.safetensors",
        "bundle.json",
    ):
        assert f"artifacts/bundle/{needed}" in files, needed
    mlmodel = (tmp_path / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel


def test_run_records_params_metrics_curves_and_version_tags(trained, mlflow_store, champion):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store.mlflow_uri, registry_uri=mlflow_store.mlflow_uri)
    data = client.get_run(champion.run_id).data
    saved = json.loads((trained["sequence"] / "run.json").read_text())
    assert data.params["tower"] == "sequence" and data.params["text.method"] == "lora"
    assert data.params["sequence.dim"] == "16" and data.params["note"] == "first"
    assert data.metrics["test.ndcg_at_10"] == pytest.approx(saved["test"]["ndcg@10"])
    assert data.metrics["valid.recall_at_50"] == pytest.approx(saved["valid"]["recall@50"])
    assert data.metrics["extra.seconds"] == 1.5
    curve = client.get_metric_history(champion.run_id, "sequence_curve.valid_ndcg10")
    assert sorted(m.step for m in curve) == [int(point[0]) for point in saved["sequence_report"]["curve"]]
    text_curve = client.get_metric_history(champion.run_id, "text_curve.valid_ndcg10")
    assert sorted(m.step for m in text_curve) == [p["step"] for p in saved["text_report"]["curve"]]
    artifacts = {a.path for a in client.list_artifacts(champion.run_id, "training")}
    assert artifacts == {"training/run.json", "training/topk_test.parquet"}
    tags = client.get_model_version("recsys-encoder", str(champion.version)).tags
    assert tags["tower"] == "sequence" and tags["method"] == "lora" and tags["run_id"] == champion.run_id


def test_alias_moves_to_a_new_version(trained, mlflow_store, champion):
    second = log_encoder_run(trained["sequence"], mlflow_store, alias="challenger")
    assert second.version == champion.version + 1
    assert resolve("challenger", kind="encoder", settings=mlflow_store).version == second.version
    assert resolve("champion", kind="encoder", settings=mlflow_store).version == champion.version
    set_alias(second.name, second.version, "champion", mlflow_store)
    assert resolve("models:/recsys-encoder@champion", settings=mlflow_store).version == second.version
    with pytest.raises(ConfigError, match=r"no alias 'shadow'.*challenger -> v2, champion -> v2; versions: 1, 2"):
        resolve("shadow", kind="encoder", settings=mlflow_store)


def test_sequence_user_vectors_through_the_pyfunc(trained, champion):
    import mlflow

    model = mlflow.pyfunc.load_model(champion.uri, model_config={"device": "cpu"})
    ids = _items(trained["sequence"])["item_id"].to_list()
    users = model.predict(
        pd.DataFrame({"history_ids": [ids[:5], ids[5:0:-1], ["not-an-item"]]}), params={"kind": "user"}
    )
    assert users.shape == (3, 16) and np.isfinite(users).all()
    assert not np.allclose(users[0], users[1])  # same items, different order
    assert not users[2].any()  # nothing known: zero vector, the caller's cold-start case
    with pytest.raises(DataError, match="history_ids"):
        model.predict(pd.DataFrame({"text": ["a"]}), params={"kind": "user"})


def test_sequence_bundle_carries_its_holdout_tower_for_ranker_training(trained, tmp_path):
    """With a refit, the early-stopped tower (trained without each user's newest items) travels along.

    The run folder and the packaged bundle (what MLflow logs) both load it; its view scores items
    with the holdout tower's matrix, and the served tower stays the refit one.
    """
    run = trained["sequence"]
    stacking = json.loads((run / "sequence" / "config.json").read_text())["stacking"]
    assert stacking == {"holdout_tail": SequenceTrainConfig().holdout_tail, "weights": "holdout.pt"}
    packaged = package_run(run, tmp_path / "bundle")
    assert (packaged / "sequence" / "holdout.safetensors").is_file()
    assert not list(packaged.rglob("*.pt"))  # converted, like the served weights
    texts, ids = _items(run)["text"].to_list(), _items(run)["item_id"].to_list()
    holdout_matrix = np.load(run / "sequence" / "holdout_item_matrix.npy")
    served_matrix = np.load(run / "sequence" / "item_matrix.npy")
    assert not np.allclose(holdout_matrix, served_matrix)
    for bundle in (EncoderBundle.load(run, device="cpu"), EncoderBundle.load(packaged, device="cpu")):
        assert bundle.holdout is not None and bundle.holdout_tail == stacking["holdout_tail"]
        view = bundle.ranker_training_view()
        assert view.sequence is bundle.holdout and view.holdout is None and bundle.sequence is not view.sequence
        text_vectors = bundle.encode_items(texts)
        np.testing.assert_allclose(view.index_vectors(ids, text_vectors=text_vectors), holdout_matrix, atol=1e-5)
        np.testing.assert_allclose(bundle.index_vectors(ids, text_vectors=text_vectors), served_matrix, atol=1e-5)


def test_text_tower_bundle_follows_the_training_history_rule(trained, tmp_path):
    run = trained["text"]
    texts = _items(run)["text"].to_list()
    expected = np.load(run / "item_vectors.npy")
    for bundle in (
        EncoderBundle.load(run, device="cpu"),
        EncoderBundle.load(package_run(run, tmp_path / "bundle"), device="cpu"),
    ):
        assert bundle.tower == "text" and bundle.sequence is None
        assert np.allclose(bundle.encode_items(texts), expected, atol=1e-6)
        # `[CLS] item [SEP]` is both a one-item history and the item itself (no prompt configured).
        single = bundle.user_vectors_text([[texts[7]]])
        dim = bundle.encoder.dim
        assert np.allclose(single[0, :dim], expected[7], atol=1e-6)
        if bundle.prior is not None:  # the popularity prior: items carry it, users a constant 1
            assert single.shape[1] == dim + 1 == bundle.index_dim and single[0, dim] == 1.0
            ids = _items(run)["item_id"].to_list()
            index = bundle.index_vectors([*ids[:3], "never-seen"], texts=[*texts[:3], "a brand new item"])
            assert np.allclose(index[:3, dim], [bundle.prior[i] for i in ids[:3]])
            assert index[3, dim] == 0.0  # an item unseen in training: ranked by its text alone
        newest_first = bundle.user_vectors_text([texts[:4], texts[3::-1]])
        assert not np.allclose(newest_first[0], newest_first[1])
    assert not (tmp_path / "bundle" / "sequence").exists() and (tmp_path / "bundle" / "base").is_dir()


def test_bad_inputs_fail_early_with_clear_errors(trained, mlflow_store, tmp_path):
    with pytest.raises(ConfigError, match=r"run\.json: not found"):
        log_encoder_run(tmp_path, mlflow_store)
    with pytest.raises(ConfigError, match="alias 'v2' is reserved"):
        log_encoder_run(trained["text"], mlflow_store, alias="v2")
    with pytest.raises(ConfigError, match="already exists"):
        package_run(trained["text"], tmp_path)
    bundle = EncoderBundle.load(trained["text"], device="cpu")
    with pytest.raises(ConfigError, match="not 'sequence'"):
        bundle.user_vectors_sequence([["x"]])
    with pytest.raises(DataError, match="row 2"):
        bundle.encode_items(["fine", None])
