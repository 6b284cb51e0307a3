"""`--engine ray`: Ray Data `map_batches` with an encoder actor gives the local engine's outputs.

A real local Ray instance (one CPU, no dashboard) and a tiny frozen BERT encoder; nothing of Ray
is mocked. Skipped with a reason where Ray Data is not installed (`pip install 'recsys[distributed]'`).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from encoders.text_training import TextTrainConfig
from jobs.nightly_embed import EmbedConfig, run_nightly
from jobs.ray_engine import RayEngine
from jobs.train_encoder import train_encoder
from recsys.embedding_store import EmbeddingStore, read_user_vectors
from recsys.errors import ConfigError
from recsys.index import IndexStore

SHARD = 32


def test_missing_ray_says_how_to_install_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray looks like to `import`
    with pytest.raises(ConfigError, match=r"recsys\[distributed\]"):
        RayEngine()


@pytest.mark.slow
def test_ray_engine_matches_the_local_engine(tmp_path, tiny_bert, small_data):
    ray = pytest.importorskip("ray", reason="Ray Data is optional: pip install 'recsys[distributed]'")
    pytest.importorskip("ray.data")

    torch.set_num_threads(1)
    dataset, split = small_data
    run = tmp_path / "enc"
    train_encoder(
        dataset,
        split,
        run,
        tower="text",
        base_model=tiny_bert,
        text_config=TextTrainConfig(
            method="frozen", max_steps=1, batch_size=8, eval_every=1, history_tokens=48, item_tokens=16, threads=1
        ),
        progress=False,
    )
    config = dict(shard_size=SHARD, log=False, progress=False, threads=1, active_days=400.0)
    local = run_nightly(dataset, run, tmp_path / "local", EmbedConfig(**config))

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        engine = RayEngine()
        assert engine.placement(ray) == {"num_gpus": 0.0, "num_cpus": 1.0, "concurrency": 1, "threads": 1}
        remote = run_nightly(dataset, run, tmp_path / "ray", EmbedConfig(**config), engine=engine)
        # A rerun through Ray finds everything in the store: nothing goes to the cluster.
        again = run_nightly(dataset, run, tmp_path / "ray", EmbedConfig(**config), engine=engine)
    finally:
        ray.shutdown()

    assert remote.engine == "ray" and remote.metadata["extra"]["engine"] == "ray"
    assert (remote.encoded, remote.shards_written) == (120, 4) and again.encoded == 0
    assert remote.encoder_version == local.encoder_version
    assert len(EmbeddingStore(tmp_path / "ray" / "embeddings").shards(remote.encoder_version)) == 4
    _, a, meta_a = IndexStore(tmp_path / "local" / "index").current()
    _, b, meta_b = IndexStore(tmp_path / "ray" / "index").current()
    ids = a.item_ids.tolist()
    assert b.item_ids.tolist() == ids
    np.testing.assert_allclose(b.reconstruct(ids), a.reconstruct(ids), atol=1e-5, rtol=0)
    users_a = read_user_vectors(tmp_path / "local" / "index", meta_a)
    users_b = read_user_vectors(tmp_path / "ray" / "index", meta_b)
    assert users_a["user_id"].to_list() == users_b["user_id"].to_list()
    np.testing.assert_allclose(
        np.stack(users_b["vector"].to_numpy()), np.stack(users_a["vector"].to_numpy()), atol=1e-5
    )
