"""The nightly embedding job: incremental store, user vectors, atomic publish, resume after SIGKILL.

Encoders are tiny random BERTs trained for zero steps (`frozen`) or a couple of epochs (sequence
tower), so a run takes well under a second once torch is imported. CLI runs are real subprocesses
on real folders; the registry test uses a real SQLite MLflow store under tmp_path.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from mlflow import MlflowClient

from encoders.encoding import encode_chunks
from encoders.item_prior import PRIOR_FILE, item_side, load_prior
from encoders.packaging import EncoderBundle
from encoders.testing import make_tiny_bert
from encoders.text_encoder import TextEncoder
from jobs.log_encoder import log_encoder_run
from jobs.nightly_embed import EmbedConfig, active_histories, run_nightly
from jobs.testing import train_tiny_encoder
from recsys.data.dataset import Dataset
from recsys.embedding_store import (
    EmbeddingStore,
    StoreLayout,
    encoder_key,
    exclusive_lock,
    local_encoder_version,
    prune_user_vectors,
    read_user_vectors,
    text_sha256,
    write_user_vectors,
)
from recsys.errors import ConfigError, DataError
from recsys.index import IndexStore

REPO = Path(__file__).resolve().parents[1]
RECSYS = [sys.executable, "-m", "recsys.cli"]
N_ITEMS = 120
SHARD = 32  # 120 items -> shards of 32, 32, 32, 24
ACTIVE_DAYS = 400.0


_train = train_tiny_encoder  # shared with the service tests (jobs/testing.py)


@pytest.fixture(scope="module")
def world(tmp_path_factory, small_data):
    """A synthetic dataset on disk and frozen text-tower encoders over two different tiny BERTs."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("nightly")
    dataset = small_data[0]  # N_ITEMS items
    dataset.save(root / "data")
    bert_a, bert_b = make_tiny_bert(root / "bert-a", seed=0), make_tiny_bert(root / "bert-b", seed=1)
    return {
        "root": root,
        "data": root / "data",
        "dataset": dataset,
        "enc_a": _train(dataset, root / "enc-a", bert_a, "text"),
        "enc_b": _train(dataset, root / "enc-b", bert_b, "text"),
        "bert_a": bert_a,
    }


def _config(**overrides) -> EmbedConfig:
    values = dict(shard_size=SHARD, log=False, progress=False, threads=1, active_days=ACTIVE_DAYS)
    values.update(overrides)
    return EmbedConfig(**values)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*RECSYS, "embed", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})},
    )


def _cli_args(data: Path, encoder: Path, store: Path) -> list[str]:
    return [
        "--data",
        str(data),
        "--encoder",
        str(encoder),
        "--store",
        str(store),
        "--shard-size",
        str(SHARD),
        "--active-days",
        str(ACTIVE_DAYS),
        "--threads",
        "1",
        "--no-log",
        "--no-progress",
    ]


def _served(store: Path, **kwargs):
    version, index, metadata = IndexStore(store / "index").current(**kwargs)
    return version, index, metadata, metadata["extra"]


def _expected_active(dataset: Dataset, days: float) -> list[str]:
    """Users with an interaction within `days` of the newest one, computed here independently."""
    newest = dataset.interactions["ts"].max()
    recent = dataset.interactions.filter(pl.col("ts") >= newest - timedelta(days=days))
    return sorted(set(recent["user_id"].to_list()))


def _events(dataset: Dataset, user: str) -> list[tuple[object, str]]:
    """One user's (ts, item id) events, newest first ((ts, item_id) descending), catalog items only."""
    rows = dataset.interactions.filter(pl.col("user_id") == user).join(dataset.items.select("item_id"), on="item_id")
    return sorted(zip(rows["ts"].to_list(), rows["item_id"].to_list(), strict=True), reverse=True)


def _trained_index_vectors(run: Path) -> np.ndarray:
    """The index vectors training implies: item_vectors.npy, plus the popularity prior column if any."""
    vectors = np.load(run / "item_vectors.npy")
    if not (run / PRIOR_FILE).is_file():
        return vectors
    prior = load_prior(run / PRIOR_FILE)
    ids = pl.read_parquet(run / "items.parquet")["item_id"].to_list()
    return item_side(vectors, np.array([prior[i] for i in ids]))


def _history(dataset: Dataset, user: str) -> list[str]:
    return [item for _, item in _events(dataset, user)]


# ------------------------------------------------------------------------------- incremental
def test_cli_full_run_then_nothing_then_exactly_three_edits(world, tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    dataset = Dataset.load(world["data"])
    dataset.save(data)

    first = _cli(*_cli_args(data, world["enc_a"], store))
    assert first.returncode == 0, first.stderr
    assert re.search(
        rf"^embed: encoded {N_ITEMS}, skipped 0, removed 0, users \d+, .* texts/s, index \S+", first.stdout, re.M
    ), first.stdout
    v1, index1, meta1, extra1 = _served(store)
    assert extra1["encoded"] == N_ITEMS and extra1["shards_written"] == 4 and extra1["removed"] == 0
    assert meta1["encoder_version"] == local_encoder_version(world["enc_a"])
    assert v1 in first.stdout
    # Text tower: the index holds exactly the item vectors training computed.
    trained = pl.read_parquet(world["enc_a"] / "items.parquet")["item_id"].to_list()
    np.testing.assert_allclose(index1.reconstruct(trained), _trained_index_vectors(world["enc_a"]), atol=1e-6)

    # Active users' vectors: the right users, and the text tower's vectors of their histories.
    users = read_user_vectors(store / "index", meta1)
    expected_users = _expected_active(dataset, ACTIVE_DAYS)
    assert users["user_id"].to_list() == expected_users and extra1["users"] == len(expected_users) > 10
    assert users["encoder_version"].unique().to_list() == [meta1["encoder_version"]]
    assert users["as_of"][0] == dataset.interactions["ts"].max()
    bundle = EncoderBundle.load(world["enc_a"], device="cpu")
    text_of = dict(zip(*dataset.item_text().get_columns(), strict=True))
    sample = expected_users[:4]
    histories = [[text_of[i] for i in _history(dataset, u)] for u in sample]
    np.testing.assert_allclose(np.stack(users["vector"].to_numpy()[:4]), bundle.user_vectors_text(histories), atol=1e-5)
    assert users["history_len"].to_list()[:4] == [min(len(h), bundle.meta["history"]["items"]) for h in histories]

    second = _cli(*_cli_args(data, world["enc_a"], store))
    assert second.returncode == 0, second.stderr
    assert f"embed: encoded 0, skipped {N_ITEMS}, removed 0," in second.stdout
    v2, _, meta2, extra2 = _served(store)
    assert v2 != v1 and extra2["shards_written"] == 0
    assert meta2["checksum"] == meta1["checksum"]  # the same vectors, byte for byte

    edited = dataset.items["item_id"].to_list()[5:8]
    dataset.items = dataset.items.with_columns(
        pl.when(pl.col("item_id").is_in(edited))
        .then(pl.col("title") + " the last voyage")
        .otherwise(pl.col("title"))
        .alias("title")
    )
    dataset.save(data)
    third = _cli(*_cli_args(data, world["enc_a"], store))
    assert third.returncode == 0, third.stderr
    assert f"embed: encoded 3, skipped {N_ITEMS - 3}, removed 0," in third.stdout
    _, index3, _, extra3 = _served(store)
    assert extra3["encoded"] == 3 and extra3["shards_written"] == 1
    new_texts = dict(zip(*dataset.item_text().get_columns(), strict=True))
    np.testing.assert_allclose(
        index3.reconstruct(edited), bundle.index_vectors(edited, texts=[new_texts[i] for i in edited]), atol=1e-5
    )
    unchanged = [i for i in trained if i not in edited]
    np.testing.assert_array_equal(index3.reconstruct(unchanged), index1.reconstruct(unchanged))
    assert not np.allclose(index3.reconstruct(edited), index1.reconstruct(edited))
    assert len(IndexStore(store / "index").versions()) == 3


def test_removed_items_leave_the_index_and_a_new_encoder_reencodes_everything(world, tmp_path):
    store = tmp_path / "store"
    dataset = Dataset.load(world["data"])
    first = run_nightly(dataset, world["enc_a"], store, _config())
    assert first.encoded == N_ITEMS

    gone = dataset.items["item_id"].to_list()[:2]
    smaller = Dataset(
        dataset.items.filter(~pl.col("item_id").is_in(gone)),
        dataset.interactions.filter(~pl.col("item_id").is_in(gone)),
        name=dataset.name,
        text_template=dataset.text_template,
    )
    second = run_nightly(smaller, world["enc_a"], store, _config())
    assert (second.encoded, second.skipped, second.removed, second.items) == (0, N_ITEMS - 2, 2, N_ITEMS - 2)
    _, index, _, _ = _served(store)
    assert len(index) == N_ITEMS - 2 and len(index.rows_of(gone)) == 0
    with pytest.raises(DataError, match="unknown item id"):
        index.reconstruct(gone[:1])

    third = run_nightly(smaller, world["enc_b"], store, _config())
    assert third.encoded == N_ITEMS - 2 and third.skipped == 0 and third.removed == 0
    assert third.encoder_version != first.encoder_version
    with pytest.raises(ConfigError, match="encoder"):
        IndexStore(store / "index").current(encoder_version=first.encoder_version)
    _, index_b, meta_b, _ = _served(store, encoder_version=third.encoder_version)
    bundle_b = EncoderBundle.load(world["enc_b"], device="cpu")
    ids = smaller.item_text()["item_id"].to_list()
    np.testing.assert_allclose(
        index_b.reconstruct(ids), bundle_b.encode_items(smaller.item_text()["text"].to_list()), atol=1e-5
    )
    # Both encoders' vectors are kept while a kept index version uses them; users follow the encoder.
    keys = {e["key"] for e in EmbeddingStore(store / "embeddings").encoders()}
    assert keys == {encoder_key(first.encoder_version), encoder_key(third.encoder_version)}
    assert read_user_vectors(store / "index", meta_b)["encoder_version"].unique().to_list() == [third.encoder_version]


def test_int8_and_fp16_are_kept_apart_and_close(world, tmp_path):
    dataset = Dataset.load(world["data"])
    fp32 = run_nightly(dataset, world["enc_a"], tmp_path / "store", _config())
    int8 = run_nightly(dataset, world["enc_a"], tmp_path / "store", _config(int8=True))
    assert int8.encoded == N_ITEMS  # the int8 encoder's vectors are not the fp32 ones
    assert int8.encoder_version == fp32.encoder_version and int8.metadata["extra"]["precision"] == "int8"
    ids = dataset.item_text()["item_id"].to_list()
    _, idx8, _, _ = _served(tmp_path / "store")
    a = IndexStore(tmp_path / "store" / "index").load(fp32.index_version)[0].reconstruct(ids)
    b = idx8.reconstruct(ids)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cosine.mean() > 0.9 and not np.array_equal(a, b)
    again = run_nightly(dataset, world["enc_a"], tmp_path / "store", _config(int8=True))
    assert again.encoded == 0

    half = run_nightly(dataset, world["enc_a"], tmp_path / "fp16", _config(store_dtype="float16"))
    _, idx16, _, _ = _served(tmp_path / "fp16")
    text_columns = a.shape[1] - (1 if (world["enc_a"] / PRIOR_FILE).is_file() else 0)
    got = idx16.reconstruct(ids)  # the stored text vectors are fp16; a prior column is exact
    np.testing.assert_array_equal(got[:, :text_columns], a[:, :text_columns].astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(got[:, text_columns:], a[:, text_columns:])
    assert half.encoded == N_ITEMS
    assert run_nightly(dataset, world["enc_a"], tmp_path / "fp16", _config(store_dtype="float16")).encoded == 0


@pytest.mark.parametrize("tower", ["sequence", "pooled"])
def test_other_towers_index_and_user_vectors(world, tmp_path, tower):
    dataset = world["dataset"]
    run = _train(dataset, tmp_path / "enc", world["bert_a"], tower)
    report = run_nightly(world["data"], run, tmp_path / "store", _config())
    _, index, meta, extra = _served(tmp_path / "store")
    assert extra["tower"] == tower
    bundle = EncoderBundle.load(run, device="cpu")
    ids = pl.read_parquet(run / "items.parquet")["item_id"].to_list()
    item_vectors = np.load(run / "item_vectors.npy")
    expected = np.load(run / "sequence" / "item_matrix.npy") if tower == "sequence" else item_vectors
    np.testing.assert_allclose(index.reconstruct(ids), expected, atol=1e-5)

    users = read_user_vectors(tmp_path / "store" / "index", meta)
    assert users["user_id"].to_list() == _expected_active(dataset, ACTIVE_DAYS) and report.users == users.height
    sample = users["user_id"].to_list()[:4]
    histories = [_history(dataset, u) for u in sample]
    if tower == "sequence":
        seconds = [[ts.timestamp() for ts, _ in _events(dataset, user)] for user in sample]
        expected_users = bundle.user_vectors_sequence(histories, seconds)
    else:
        text_of = dict(zip(*dataset.item_text().get_columns(), strict=True))
        expected_users = bundle.user_vectors_pooled([[text_of[i] for i in h] for h in histories])
    np.testing.assert_allclose(np.stack(users["vector"].to_numpy()[:4]), expected_users, atol=1e-5)
    _check_user_vectors(
        bundle, histories, [[ts.timestamp() for ts, _ in _events(dataset, u)] for u in sample], expected_users, index
    )


def _check_user_vectors(
    bundle: EncoderBundle, histories: list[list[str]], seconds: list[list[float]], expected: np.ndarray, index
) -> None:
    """`EncoderBundle.user_vectors`, the one entry point: it cuts at `history_cap`, reads the bundle's own
    texts when given none, skips what it cannot place, and takes per-history None for "no times"."""
    cap = bundle.history_cap
    assert cap == (bundle.sequence_config.max_len + 1 if bundle.tower == "sequence" else 50)
    np.testing.assert_allclose(bundle.user_vectors(histories, seconds), expected, atol=1e-5)
    long = [(h * (cap // len(h) + 2))[: cap + 7] for h in histories]
    np.testing.assert_array_equal(bundle.user_vectors(long), bundle.user_vectors([h[:cap] for h in long]))
    mixed = bundle.user_vectors(histories[:2], [seconds[0], None])
    np.testing.assert_array_equal(mixed[1], bundle.user_vectors(histories[1:2])[0])
    if bundle.tower == "pooled":  # over vectors the caller has: NaN rows (ids it lacks) are skipped

        def lookup(ids):
            known = [i for i in ids if i != "no-such-item"]
            out = np.full((len(ids), index.dim), np.nan, dtype=np.float32)
            out[[j for j, i in enumerate(ids) if i != "no-such-item"]] = index.reconstruct(known)
            return out

        np.testing.assert_allclose(bundle.user_vectors(histories, item_vectors=lookup), expected, atol=1e-5)
        short = [h[: cap - 1] for h in histories]  # the cut comes first: the unknown id takes a place
        np.testing.assert_array_equal(
            bundle.user_vectors([["no-such-item", *h] for h in short], item_vectors=lookup),
            bundle.user_vectors(short, item_vectors=lookup),
        )
        assert not bundle.user_vectors([["no-such-item"]], item_vectors=lookup).any()


# ------------------------------------------------------------------------------------ resume
CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    import jobs.nightly_embed as job

    def stop(shards):
        print("SHARD", shards, flush=True)
        if shards == 2:
            time.sleep(300)  # the test kills us here, mid-run

    job._on_shard = stop
    sys.argv = ["recsys", "embed", *sys.argv[2:]]
    from recsys.cli import main
    main()
    """
)


def _wait_for(proc: subprocess.Popen, line_wanted: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == line_wanted:
                return
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"child never printed {line_wanted!r}; stderr: {proc.stderr.read()}")


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_mid_run_keeps_current_and_the_rerun_resumes(world, tmp_path):
    store = tmp_path / "store"
    old = run_nightly(world["data"], world["enc_a"], store, _config())  # the version being served
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(REPO), *_cli_args(world["data"], world["enc_b"], store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(proc, "SHARD 2")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # The old version still serves, whole and verified; the killed run's two shards are on disk.
    version, _, meta, _ = _served(store)
    assert version == old.index_version and meta["encoder_version"] == old.encoder_version
    new_version = local_encoder_version(world["enc_b"])
    assert len(EmbeddingStore(store / "embeddings").shards(new_version)) == 2

    rerun = _cli(*_cli_args(world["data"], world["enc_b"], store))
    assert rerun.returncode == 0, rerun.stderr
    assert f"embed: encoded {N_ITEMS - 2 * SHARD}, skipped {2 * SHARD}," in rerun.stdout
    _, index, meta, extra = _served(store, encoder_version=new_version)
    assert extra["shards_written"] == 2 and extra["removed"] == 0

    clean = run_nightly(world["data"], world["enc_b"], tmp_path / "uninterrupted", _config())
    assert clean.shards_written == 4
    _, expected, expected_meta, _ = _served(tmp_path / "uninterrupted")
    ids = expected.item_ids.tolist()
    assert index.item_ids.tolist() == ids
    np.testing.assert_allclose(index.reconstruct(ids), expected.reconstruct(ids), atol=1e-6, rtol=0)
    # Same shard boundaries, so the same batches: the very same index bytes (one thread on both sides).
    assert meta["checksum"] == expected_meta["checksum"]
    users, expected_users = (
        read_user_vectors(s / "index", m) for s, m in ((store, meta), (tmp_path / "uninterrupted", expected_meta))
    )
    assert users["user_id"].to_list() == expected_users["user_id"].to_list()
    np.testing.assert_allclose(
        np.stack(users["vector"].to_numpy()), np.stack(expected_users["vector"].to_numpy()), atol=1e-6
    )


# ---------------------------------------------------------------------------------- registry
def test_registry_alias_is_pinned_cached_and_the_run_is_logged(world, tmp_path, monkeypatch, mlflow_settings):
    settings = mlflow_settings
    with pytest.raises(ConfigError, match=r"champion: not a local folder.*'recsys-encoder' does not exist"):
        run_nightly(world["data"], "champion", tmp_path / "store", _config(), settings=settings)
    model = log_encoder_run(world["enc_a"], settings, alias="champion")
    monkeypatch.chdir(tmp_path)
    store = Path("store")  # relative, as `make demo` passes it: the download cache must still resolve
    report = run_nightly(world["data"], "models:/recsys-encoder@champion", store, _config(log=True), settings=settings)
    assert report.encoder_version == f"recsys-encoder/{model.version}" and report.encoded == N_ITEMS
    cached = store / "encoders" / "recsys-encoder" / str(model.version) / "artifacts" / "bundle"
    assert (cached / "bundle.json").is_file()
    _, index, meta, extra = _served(store, encoder_version=report.encoder_version)
    assert extra["model_uri"] == f"models:/recsys-encoder/{model.version}"
    assert extra["encoder_ref"] == "models:/recsys-encoder@champion"
    ids = pl.read_parquet(world["enc_a"] / "items.parquet")["item_id"].to_list()
    np.testing.assert_allclose(index.reconstruct(ids), _trained_index_vectors(world["enc_a"]), atol=1e-6)

    client = MlflowClient(tracking_uri=settings.mlflow_uri)
    experiment = client.get_experiment_by_name("nightly-embed")
    run = client.get_run(report.mlflow_run_id)
    assert run.info.experiment_id == experiment.experiment_id
    assert run.data.metrics["encoded"] == N_ITEMS and run.data.metrics["items"] == N_ITEMS
    assert run.data.params["encoder_version"] == report.encoder_version and run.data.params["engine"] == "local"
    assert run.data.tags["index_version"] == report.index_version
    assert run.data.tags["index_checksum"] == meta["checksum"]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "index")} == {
        "index/metadata.json",
        "index/manifest.json",
    }

    # The bare alias form (the CLI default) resolves to the same pinned version and re-encodes nothing.
    again = run_nightly(world["data"], "champion", store, _config(), settings=settings)
    assert again.encoded == 0 and again.encoder_version == report.encoder_version


def test_a_second_run_on_the_same_store_is_refused_while_one_runs(world, tmp_path):
    with (
        exclusive_lock(tmp_path / "store" / ".lock", "held by a test"),
        pytest.raises(ConfigError, match="in use by another process"),
    ):
        run_nightly(world["data"], world["enc_a"], tmp_path / "store", _config())
    assert run_nightly(world["data"], world["enc_a"], tmp_path / "store", _config()).encoded == N_ITEMS


def test_bad_encoder_reference_is_one_clear_line(world, tmp_path):
    result = _cli(
        *_cli_args(world["data"], tmp_path / "no-such-folder", tmp_path / "store"),
        env={"RECSYS_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --encoder") and "no such folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "store" / "index" / "CURRENT").exists()
    assert not (tmp_path / "home").exists()  # a path is never looked up in the registry


# ---------------------------------------------------------------------------------- encoding
def test_encode_chunks_keeps_order_overlaps_and_stops_cleanly(world):
    encoder = TextEncoder.from_pretrained(str(world["bert_a"]), device="cpu")
    texts = world["dataset"].item_text()["text"].to_list()
    expected = encoder.encode(texts, batch_size=8)  # the encoder's own batching, for reference
    counted: list[int] = []
    pieces = list(
        encode_chunks(
            encoder,
            [texts[:50], [], texts[50:]],
            max_length=encoder.max_length,
            batch_size=8,
            workers=2,
            on_batch=counted.append,
        )
    )
    assert [len(p) for p in pieces] == [50, 0, N_ITEMS - 50] and sum(counted) == N_ITEMS
    np.testing.assert_allclose(np.concatenate(pieces), expected, atol=1e-5)

    threads = threading.active_count()
    stream = encode_chunks(encoder, [texts[:20]] * 100, max_length=encoder.max_length, batch_size=4, workers=2)
    next(stream)
    stream.close()  # a consumer that stops early leaves no tokenizer thread behind
    assert threading.active_count() == threads
    with pytest.raises(DataError, match="string"):  # an error in a tokenizer thread reaches the caller
        list(encode_chunks(encoder, [["fine", None]], max_length=16, batch_size=4))


# ------------------------------------------------------------------------------ store units
def test_local_encoder_version_follows_the_content_and_an_outside_base_model(world, tmp_path):
    bert = shutil.copytree(world["bert_a"], tmp_path / "bert")
    enc = shutil.copytree(world["enc_a"], tmp_path / "enc")
    meta_file = enc / "encoder" / "encoder.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "base_model": str(bert)}))
    version = local_encoder_version(enc)
    assert version.startswith("sha256-") and local_encoder_version(enc) == version
    (enc / "checkpoint").mkdir()
    (enc / "checkpoint" / "text_stage.pt").write_bytes(b"resume state only")
    assert local_encoder_version(enc) == version  # a run's resume state is not the model
    make_tiny_bert(bert, seed=5)  # same base path, other weights: other vectors, so another version
    assert local_encoder_version(enc) != version


def test_embedding_store_shards_lookup_and_compaction(tmp_path):
    store = EmbeddingStore(tmp_path)
    ids = [f"i{j}" for j in range(10)]
    texts = [f"text {j}" for j in range(10)]
    hashes = text_sha256(texts)
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    store.write_shard("enc/1", ids[:6], hashes[:6], x[:6])
    (store.folder("enc/1") / ".part-x.parquet.999.tmp").write_bytes(b"half a shard")  # a killed write
    plan = store.plan("enc/1", ids, texts)
    assert plan.cached_rows.tolist() == list(range(6)) and plan.todo_rows.tolist() == [6, 7, 8, 9]
    np.testing.assert_array_equal(plan.cached_vectors, x[:6])
    assert store.clean_tmp() == 1

    store.write_shard("enc/1", ids[6:], hashes[6:], x[6:])
    texts[0] = "edited"
    plan = store.plan("enc/1", ids, texts)
    assert plan.todo_rows.tolist() == [0]
    assert store.plan("enc/2", ids, texts).todo_rows.tolist() == list(range(10))  # another encoder: nothing
    assert store.plan("enc/1", ids, texts, variant="int8").todo_rows.tolist() == list(range(10))
    with pytest.raises(DataError, match="1 items have no stored vector"):
        store.vectors("enc/1", ids, texts)
    with pytest.raises(DataError, match="4-d vectors before"):
        store.write_shard("enc/1", ids[:1], hashes[:1], np.zeros((1, 8), np.float32))
    with pytest.raises(DataError, match="non-finite"):
        store.write_shard("enc/1", ids[:1], hashes[:1], np.full((1, 4), np.nan, np.float32))

    # Item i0 was edited and i9 removed: compaction keeps the 8 live rows and drops the 2 dead ones.
    live_ids, live_hashes = ids[1:9], text_sha256(texts[1:9])
    assert store.compact("enc/1", live_ids, live_hashes, shard_size=5) == 0  # 20% dead: below the 25% default
    assert store.compact("enc/1", live_ids, live_hashes, shard_size=5, min_waste=0.1) == 2
    assert len(store.shards("enc/1")) == 2
    np.testing.assert_array_equal(store.vectors("enc/1", live_ids, text_hashes=live_hashes), x[1:9])
    assert store.compact("enc/1", live_ids, live_hashes, shard_size=5, min_waste=0.1) == 0  # nothing dead now

    store.write_shard("enc/2", ids[:1], hashes[:1], x[:1])
    assert store.prune_encoders([encoder_key("enc/1")]) == [encoder_key("enc/2")]
    assert [e["encoder_version"] for e in store.encoders()] == ["enc/1"]


def test_embedding_store_fp16_and_bad_arguments(tmp_path):
    store = EmbeddingStore(tmp_path, dtype="float16")
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    store.write_shard("e", ["a", "b", "c"], text_sha256(["a", "b", "c"]), x)
    got = store.vectors("e", ["c", "a"], ["c", "a"])
    np.testing.assert_array_equal(got, x[[2, 0]].astype(np.float16).astype(np.float32))
    assert got.dtype == np.float32
    with pytest.raises(ConfigError, match="dtype"):
        EmbeddingStore(tmp_path, dtype="int8")
    with pytest.raises(ConfigError, match="encoder version"):
        encoder_key("")
    with pytest.raises(DataError, match="2 item ids but 1 texts"):
        store.plan("e", ["a", "b"], ["a"])


def test_user_vectors_file_is_verified_and_pruned(tmp_path):
    as_of = datetime(2024, 5, 1, tzinfo=timezone.utc)
    info = write_user_vectors(
        tmp_path, ["u1", "u2"], np.eye(2, 4, dtype=np.float32), encoder_version="e/1", as_of=as_of, history_len=[3, 1]
    )
    assert info["count"] == 2 and info["path"].startswith("user_vectors/users-")
    table = read_user_vectors(tmp_path, {"extra": {"user_vectors": info}})
    assert table["user_id"].to_list() == ["u1", "u2"] and table["as_of"].to_list() == [as_of, as_of]
    path = tmp_path / info["path"]
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")
    with pytest.raises(DataError, match="checksum mismatch"):
        read_user_vectors(tmp_path, {"extra": {"user_vectors": info}})
    with pytest.raises(DataError, match="no user vectors"):
        read_user_vectors(tmp_path, {"version": "v1", "extra": {}})
    other = write_user_vectors(tmp_path, ["u3"], np.ones((1, 4), np.float32), encoder_version="e/1", as_of=as_of)
    assert prune_user_vectors(tmp_path, [other["path"]]) == [Path(info["path"]).name]
    with pytest.raises(ConfigError, match="timezone"):
        write_user_vectors(
            tmp_path, ["u"], np.ones((1, 4), np.float32), encoder_version="e", as_of=datetime(2024, 1, 1)
        )


def test_active_histories_window_order_and_catalog(tmp_path):
    t0 = datetime(2024, 1, 31, tzinfo=timezone.utc)
    interactions = pl.DataFrame(
        {
            "user_id": ["old", "u", "u", "u", "v", "v"],
            "item_id": ["a", "a", "c", "b", "gone", "a"],
            "ts": [
                t0 - timedelta(days=40),
                t0 - timedelta(days=50),
                t0,
                t0,
                t0 - timedelta(days=1),
                t0 - timedelta(days=100),
            ],
        }
    )
    found = active_histories(interactions, ["a", "b", "c"], active_days=30, max_items=2)
    assert found.as_of == t0 and found.user_ids == ["u", "v"]
    assert found.item_ids == [["c", "b"], ["a"]]  # ties on ts: item_id descending; "gone" left out
    assert found.last_ts == [t0, t0 - timedelta(days=100)]
    with pytest.raises(DataError, match="no interactions"):
        active_histories(interactions.head(0), ["a"], 30, 5)


def test_config_is_checked():
    with pytest.raises(ConfigError, match="active_days"):
        EmbedConfig(active_days=0).check()
    with pytest.raises(ConfigError, match="shard_size"):
        EmbedConfig(shard_size=0).check()
    with pytest.raises(ConfigError, match="store dtype"):
        EmbedConfig(store_dtype="int4").check()


def test_store_layout_is_one_definition(tmp_path):
    root = tmp_path / "store"
    layout = StoreLayout.nightly(root)
    assert (layout.embeddings, layout.index, layout.encoders, layout.rankers, layout.lock) == (
        root / "embeddings",
        root / "index",
        root / "encoders",
        root / "rankers",
        root / ".lock",
    )
    assert StoreLayout.served(root) == layout  # nothing there yet: a nightly store to be
    bare = tmp_path / "bare"
    (bare / "versions").mkdir(parents=True)  # an IndexStore root itself: registry models go to a temporary cache
    assert StoreLayout.served(bare) == StoreLayout(bare, bare, None, None)
