"""`benchmarks/gpu_check.py`: the one-shot device script must run end to end before a device is lent.

Why these tests: a session lent an H200 gets minutes, once, and runs the script as it is. So its
`--smoke` mode runs here, on the CPU, with the packages the device lacks (polars, faiss, mlflow,
lightgbm) made unimportable, and the JSON a later session reads is checked key by key. The one piece
the script mirrors instead of importing (the exact softmax loss of `encoders.sequence_training`, which
imports polars) is checked equal to the repo's own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from encoders.sequence import SequenceConfig, SequenceHistories, build_model, user_vectors
from encoders.sequence_training import SequenceTrainConfig, next_item_loss

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
# Not installed on the device: an import of any of them anywhere in the script's chain must fail here too.
ABSENT_ON_DEVICE = ("polars", "faiss", "mlflow", "lightgbm")
SECTIONS = ("encoding", "text_training", "sequence")
SUMMARY_KEYS = (
    "encode_repo_texts_s_16",
    "encode_st_texts_s_16",
    "encode_ratio_16",
    "encode_ratio_32",
    "encode_mean_cosine_32",
    "forward_only_texts_s_32",
    "text_fit_runs_on_device",
    "text_lora_fp32_ex_s",
    "text_lora_bf16_ex_s",
    "seq_steps_s_500_400",
    "seq_targets_s_2k_400",
    "seq_peak_mib_2k_400",
    "seq_user_vector_ms_p50_2k_cpu",
    "seq_user_vector_ms_p50_2k_cpu1",
)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_smoke_runs_without_the_packages_the_device_lacks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    blocker = (
        "import runpy, sys\n"
        f"for name in {ABSENT_ON_DEVICE!r}:\n"
        "    sys.modules[name] = None  # `import name` now raises ImportError\n"
        f"sys.argv = ['gpu_check.py', '--smoke', '--out', {str(out)!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", blocker], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    result = json.loads((out / "gpu_check.json").read_text())
    assert set(result) == {"meta", "sections", "summary", "rows", "notes"}
    assert result["meta"]["smoke"] is True and result["meta"]["device"] == "cpu"
    for section in SECTIONS:
        assert result["sections"][section]["status"] == "ok", result["sections"][section]
    missing = [key for key in SUMMARY_KEYS if key not in result["summary"]]
    assert not missing, missing
    assert result["summary"]["text_fit_runs_on_device"] == 1.0  # on the CPU the repo's own fit runs
    assert result["summary"]["encode_mean_cosine_32"] > 0.99  # both systems embed the same texts alike
    assert {row["section"] for row in result["rows"]} == set(SECTIONS)
    for row in result["rows"]:
        assert {"name", "value", "unit", "peak_mem_mib"} <= set(row)
    assert "| section | measurement |" in done.stdout  # the printed table


def test_missing_import_fails_fast_with_a_message(tmp_path: Path) -> None:
    blocker = (
        "import runpy, sys\n"
        "sys.modules['peft'] = None  # imported before torch: the failure costs no heavy import\n"
        f"sys.argv = ['gpu_check.py', '--smoke', '--out', {str(tmp_path)!r}]\n"
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "cannot import 'peft'" in done.stderr
    assert not (tmp_path / "gpu_check.json").exists()


def test_mirrored_pieces_equal_the_repo_functions() -> None:
    gpu_check = _load_script()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n_items = 50
    text = rng.standard_normal((n_items + 1, 24)).astype(np.float32) / 20
    text[0] = 0.0
    config = SequenceConfig(dim=16, heads=2, max_len=12)
    model = build_model(text, np.ones(n_items + 1, dtype=bool), config)

    matrix = model.item_matrix()
    states = torch.randn(30, config.dim)
    targets = torch.randint(1, n_items + 1, (30,))
    ours = gpu_check.exact_next_item_loss(states, targets, matrix)
    repo = next_item_loss(states, targets, matrix, SequenceTrainConfig(), None)
    torch.testing.assert_close(ours, repo)

    model.eval()
    history = rng.integers(1, n_items + 1, size=20)  # longer than max_len: the window keeps the newest
    gaps = rng.integers(0, 16, size=20)
    # The script times the repo's `user_vectors` itself (it runs where the model is): its window keeps the newest.
    whole = user_vectors(model, SequenceHistories(["u"], [history], [gaps]), config.max_len)
    newest = user_vectors(model, SequenceHistories(["u"], [history[-12:]], [gaps[-12:]]), config.max_len)
    np.testing.assert_allclose(whole, newest, rtol=1e-5, atol=1e-6)
