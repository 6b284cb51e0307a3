"""VectorIndex: exact search against numpy, masks, ids, kinds, ANN recall and checked save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.errors import ConfigError, DataError
from recsys.index import FLAT_MAX, GPU_FLAT_MAX, PQ_MIN, IndexConfig, VectorIndex


def clustered(n: int, dim: int, seed: int, queries: int = 0, spread: float = 1.0):
    """Unit vectors around sqrt(n) random centres: neighbours are close (top-1 cosine ~0.7), like text
    embeddings, rather than uniform noise, where every method looks equally bad. With `queries`, also
    that many query vectors drawn from the same clusters (users live near the items they like)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, int(np.sqrt(n))), dim)).astype(np.float32)
    total = n + queries
    x = centres[rng.integers(0, len(centres), total)] + spread * rng.standard_normal((total, dim)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return (x[:n], x[n:]) if queries else x


def brute_force(
    x: np.ndarray, q: np.ndarray, k: int, allowed: np.ndarray | None = None, exclude: list[set[int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ x.T
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    for i, rows in enumerate(exclude or []):
        scores[i, list(rows)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def ids_for(n: int) -> list[str]:
    return [f"item-{i}" for i in range(n)]


@pytest.fixture(scope="module")
def small():
    x, q = clustered(3000, 32, seed=1, queries=40)
    return x, q, VectorIndex.build(ids_for(len(x)), x, {"kind": "flat"})


def test_flat_search_equals_numpy_brute_force(small):
    x, q, index = small
    result = index.search(q, 50)
    rows, scores = brute_force(x, q, 50)
    np.testing.assert_array_equal(result.rows, rows)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-5)
    assert (result.counts == 50).all()
    assert result.ids[0] == [f"item-{r}" for r in rows[0]]


def test_single_query_vector_is_accepted(small):
    _, q, index = small
    one = index.search(q[0], 5)
    np.testing.assert_array_equal(one.rows[0], index.search(q[:1], 5).rows[0])


def test_exclusion_returns_k_items_none_excluded(small):
    x, q, index = small
    k = 20
    top = brute_force(x, q, 150)[0]
    # Exclude each query's true top 150 (as ids for even queries, as row numbers for odd ones) plus
    # an unknown id, which is ignored.
    exclude = [[f"item-{r}" for r in top[i]] + ["not-in-index"] if i % 2 == 0 else top[i] for i in range(len(q))]
    result = index.search(q, k, exclude=exclude)
    assert (result.counts == k).all()
    for i in range(len(q)):
        assert not set(result.rows[i]) & set(top[i])
    expected, _ = brute_force(x, q, k, exclude=[set(t) for t in top])
    np.testing.assert_array_equal(result.rows, expected)


def test_exclusion_with_ann_kinds_still_returns_k():
    x, q = clustered(6000, 32, seed=3, queries=30)
    top = brute_force(x, q, 300)[0]
    for kind in ("hnsw", "ivf_flat"):
        index = VectorIndex.build(ids_for(len(x)), x, {"kind": kind, "threads": 2})
        result = index.search(q, 50, exclude=list(top))
        assert (result.counts == 50).all(), kind
        for i in range(len(q)):
            assert not set(result.rows[i]) & set(top[i]), kind


def test_allowed_filter_by_ids_rows_and_mask_agree(small):
    x, q, index = small
    rng = np.random.default_rng(5)
    mask = rng.random(len(x)) < 0.05  # a small "category"
    rows = np.flatnonzero(mask)
    by_mask = index.search(q, 10, allowed=mask)
    by_rows = index.search(q, 10, allowed=rows)
    by_ids = index.search(q, 10, allowed=[f"item-{r}" for r in rows])
    expected, _ = brute_force(x, q, 10, allowed=mask)
    np.testing.assert_array_equal(by_mask.rows, expected)
    np.testing.assert_array_equal(by_rows.rows, expected)
    np.testing.assert_array_equal(by_ids.rows, expected)
    assert mask[by_mask.rows].all()


def test_over_fetch_grows_until_k_found(small):
    x, q, index = small
    # Allow only the 30 items least similar to the first query: they sit at the very end of its
    # ranking, far past the first over-fetch, so the search must double its fetch several times.
    worst = np.argsort(q[0] @ x.T)[:30]
    result = index.search(q[:1], 10, allowed=worst)
    expected, _ = brute_force(x, q[:1], 10, allowed=np.isin(np.arange(len(x)), worst))
    assert result.counts[0] == 10
    np.testing.assert_array_equal(result.rows, expected)


def test_fewer_than_k_available_pads(small):
    _, q, index = small
    result = index.search(q[:2], 10, allowed=[3, 7, 11], exclude=[[7], []])
    assert result.counts.tolist() == [2, 3]
    assert sorted(result.rows[0, :2].tolist()) == [3, 11]
    assert (result.rows[0, 2:] == -1).all() and np.isneginf(result.scores[0, 2:]).all()
    assert sorted(result.ids[1]) == ["item-11", "item-3", "item-7"]


def test_ivf_runs_dry_then_probes_more_lists():
    x = clustered(4000, 16, seed=6)
    index = VectorIndex.build(ids_for(len(x)), x, {"kind": "ivf_flat", "nlist": 64, "nprobe": 1})
    # One list holds ~60 vectors; asking for 500 forces more probes, and the answer must be exact
    # once every list has been scanned or enough were.
    result = index.search(x[:3], 500)
    assert (result.counts == 500).all()
    assert all(len(set(r)) == 500 for r in result.rows)


def test_ids_round_trip_through_save_and_load(tmp_path):
    ids = ["tt0111161", "ünïcode-ß", "with,comma", 'quote"d', "new\nline", "  spaced  ", "42"]
    x = clustered(len(ids), 8, seed=7)
    index = VectorIndex.build(ids, x, {"kind": "flat"}, encoder_version="enc@3")
    index.save(tmp_path / "idx")
    loaded = VectorIndex.load(tmp_path / "idx")
    assert loaded.item_ids.tolist() == ids
    assert loaded.encoder_version == "enc@3"
    assert loaded.search(x, 1).ids == [[i] for i in ids]
    np.testing.assert_allclose(loaded.reconstruct(["new\nline"])[0], x[4], rtol=1e-6)
    frame = loaded.search(x[:2], 3).to_frame(query_keys=["u1", "u2"])
    assert frame.columns == ["query", "rank", "item_id", "score"]
    assert frame.filter(frame["rank"] == 1)["item_id"].to_list() == ids[:2]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf_flat", "ivf_pq"])
def test_save_load_gives_same_results(tmp_path, kind):
    x, q = clustered(3000, 16, seed=8, queries=20)
    index = VectorIndex.build(ids_for(len(x)), x, {"kind": kind, "threads": 2}, encoder_version="v1")
    checksum = index.save(tmp_path / kind)
    loaded = VectorIndex.load(tmp_path / kind, encoder_version="v1")
    assert loaded.checksum == checksum and loaded.kind == kind
    assert loaded.config.search_params() == index.config.search_params()
    np.testing.assert_array_equal(loaded.search(q, 20).rows, index.search(q, 20).rows)
    manifest = json.loads((tmp_path / kind / "manifest.json").read_text())
    assert manifest["count"] == 3000 and manifest["dim"] == 16 and manifest["encoder_version"] == "v1"


def test_checksum_corruption_is_detected(tmp_path):
    x = clustered(500, 8, seed=10)
    VectorIndex.build(ids_for(len(x)), x).save(tmp_path / "a", encoder_version="v1")
    target = tmp_path / "a" / "index.faiss"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    target.write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        VectorIndex.load(tmp_path / "a")
    assert "index.faiss" in str(info.value)

    VectorIndex.build(ids_for(len(x)), x).save(tmp_path / "b", encoder_version="v1")
    ids_file = tmp_path / "b" / "item_ids.json"
    ids_file.write_text(ids_file.read_text()[:-10])
    with pytest.raises(DataError, match=r"item_ids\.json"):
        VectorIndex.load(tmp_path / "b")

    (tmp_path / "b" / "manifest.json").unlink()
    with pytest.raises(DataError, match="no index manifest"):
        VectorIndex.load(tmp_path / "b")


def test_encoder_version_mismatch_is_refused(tmp_path):
    x = clustered(200, 8, seed=11)
    VectorIndex.build(ids_for(len(x)), x).save(tmp_path / "i", encoder_version="enc-1")
    with pytest.raises(ConfigError, match="enc-1"):
        VectorIndex.load(tmp_path / "i", encoder_version="enc-2")


def test_load_overrides_search_settings_only(tmp_path):
    x = clustered(4000, 16, seed=12)
    VectorIndex.build(ids_for(len(x)), x, {"kind": "ivf_flat", "nlist": 32}).save(tmp_path / "i")
    loaded = VectorIndex.load(tmp_path / "i", config={"nprobe": 32})
    assert loaded.config.nprobe == 32 and loaded.config.nlist == 32
    # nprobe == nlist scans everything: IVF-Flat is then exact.
    np.testing.assert_array_equal(loaded.search(x[:5], 10).rows, brute_force(x, x[:5], 10)[0])


def test_auto_kind_selection():
    auto = IndexConfig()
    assert auto.resolve(FLAT_MAX - 1, 64).kind == "flat"
    assert auto.resolve(FLAT_MAX, 64).kind == "ivf_flat"
    assert auto.resolve(PQ_MIN, 64).kind == "ivf_pq"
    assert auto.resolve(1_000_000, 64, gpus=1).kind == "flat"
    assert auto.resolve(GPU_FLAT_MAX, 64, gpus=2).kind == "ivf_flat"
    assert IndexConfig(use_gpu=False).resolve(1_000_000, 64, gpus=1).kind == "ivf_flat"
    assert IndexConfig(kind="hnsw").resolve(1_000_000, 64, gpus=1).kind == "hnsw"
    ivf = IndexConfig(kind="ivf_flat").resolve(1_000_000, 64)
    assert ivf.nlist == 4000 and ivf.train_size == 256_000
    assert ivf.nprobe is None  # left to build-time calibration
    assert IndexConfig(kind="ivf_flat", nlist=64, nprobe=500).resolve(10_000, 8).nprobe == 64
    pq = IndexConfig(kind="ivf_pq").resolve(PQ_MIN, 96)
    assert pq.pq_m == 48 and 96 % pq.pq_m == 0
    # A real build on a small catalog takes the exact path.
    x = clustered(100, 8, seed=13)
    assert VectorIndex.build(ids_for(100), x).kind == "flat"


def test_ann_recall_at_100_with_default_settings():
    """Default HNSW and IVF-Flat settings keep recall@100 >= 0.95 against exact search on 20k x 64."""
    x, q = clustered(20_000, 64, seed=14, queries=200)
    exact = VectorIndex.build(ids_for(len(x)), x, {"kind": "flat"}).search(q, 100).rows
    for kind in ("hnsw", "ivf_flat"):
        ann = VectorIndex.build(ids_for(len(x)), x, {"kind": kind, "threads": 2}).search(q, 100).rows
        recall = np.mean([len(set(a) & set(b)) / 100 for a, b in zip(ann, exact, strict=True)])
        assert recall >= 0.95, f"{kind}: recall@100 {recall:.3f}"


def test_calibration_picks_the_smallest_setting_that_reaches_the_target(tmp_path):
    x = clustered(8000, 32, seed=17, spread=1.3)
    ivf = VectorIndex.build(ids_for(len(x)), x, {"kind": "ivf_flat", "nlist": 128})
    info = ivf.calibration
    assert info["param"] == "nprobe" and info["value"] == ivf.config.nprobe
    tried = dict(info["tried"])
    assert tried[info["value"]] >= 0.97  # reached the target...
    assert all(recall < 0.97 for value, recall in tried.items() if value < info["value"])  # ...no sooner
    ivf.save(tmp_path / "i")
    assert VectorIndex.load(tmp_path / "i").calibration == info

    hnsw = VectorIndex.build(ids_for(len(x)), x, {"kind": "hnsw", "hnsw_m": 16})
    assert hnsw.calibration["param"] == "ef_search" and hnsw.config.ef_search == hnsw.calibration["value"]
    # A value given in the config is respected; calibrate_recall=None falls back to fixed defaults.
    fixed = VectorIndex.build(ids_for(len(x)), x, {"kind": "ivf_flat", "nlist": 128, "nprobe": 3})
    assert fixed.config.nprobe == 3 and fixed.calibration is None
    off = VectorIndex.build(ids_for(len(x)), x, {"kind": "ivf_flat", "nlist": 128, "calibrate_recall": None})
    assert off.config.nprobe == 16 and off.calibration is None
    with pytest.raises(ConfigError, match="calibrate_recall"):
        IndexConfig(calibrate_recall=1.5).check()


def test_ivf_build_is_deterministic_for_a_seed(tmp_path):
    x = clustered(5000, 16, seed=16)
    cfg = {"kind": "ivf_flat", "nlist": 50, "train_size": 2000, "seed": 3}
    a = VectorIndex.build(ids_for(len(x)), x, cfg).save(tmp_path / "a")
    b = VectorIndex.build(ids_for(len(x)), x, cfg).save(tmp_path / "b")
    assert a == b


def test_bad_input_is_reported_clearly(small):
    x, q, index = small
    with pytest.raises(DataError, match="duplicate item id") as info:
        VectorIndex.build(["a", "b", "a"], np.eye(3, dtype=np.float32))
    assert info.value.row is not None
    with pytest.raises(DataError, match="2 item ids but 3 vectors"):
        VectorIndex.build(["a", "b"], np.eye(3, dtype=np.float32))
    bad = np.eye(3, dtype=np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN") as info:
        VectorIndex.build(["a", "b", "c"], bad)
    assert info.value.row == 3
    with pytest.raises(DataError, match="dimension 7"):
        index.search(np.zeros((2, 7), dtype=np.float32), 5)
    with pytest.raises(DataError, match="one list a query"):
        index.search(q[:2], 5, exclude=[["item-1"]])
    with pytest.raises(DataError, match="row numbers outside"):
        index.search(q[:1], 5, exclude=[[len(x) + 5]])
    with pytest.raises(ConfigError, match="k must be"):
        index.search(q, 0)
    with pytest.raises(ConfigError, match="kind"):
        VectorIndex.build(["a"], np.ones((1, 2), dtype=np.float32), {"kind": "annoy"})
    with pytest.raises(ConfigError, match="unknown index setting"):
        IndexConfig.from_dict({"nprobes": 3})
    with pytest.raises(ConfigError, match="divide"):
        IndexConfig(kind="ivf_pq", pq_m=5).resolve(100_000, 64)
    with pytest.raises(DataError, match="unknown item id"):
        index.reconstruct(["nope"])
