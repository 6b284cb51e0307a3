"""How much of the text encoder is trained: LoRA (default), AdaLoRA, IA3, full, or frozen.

PEFT methods wrap the encoder's inner transformer with `peft.get_peft_model`, so the `TextEncoder`
(pooling, tokenization, `encode`) is unchanged and the training loop does not care which method is
used. What each method trains:

- `lora`    low-rank A·B updates on the attention and feed-forward linears (BERT: query, key,
            value, dense); base weights frozen. Small, fast to merge, the default.
- `adalora` LoRA in SVD form whose rank budget is re-allocated during training; it needs the
            planned number of optimizer steps (`total_steps`) and a call to `peft_step` after each
            step, plus `peft_regularization` added to the loss (orthogonality of the factors).
- `ia3`     learned scaling vectors on keys, values and the feed-forward output (BERT: key,
            value, output.dense, with output.dense as the "feed-forward" module whose *input* is
            scaled, as peft's own BERT mapping does); the fewest trainable numbers.
- `full`    every weight that reaches the embedding trains (a baseline; big checkpoints).
- `frozen`  nothing trains (the zero-shot baseline).

BERT's pooler (a dense layer on [CLS]) never reaches a mean-pooled embedding, so it is excluded from
adapters and from `full` training: it would only add parameters that get no gradient.

Adapters are saved as peft's own files (adapter_model.safetensors + adapter_config.json, kilobytes
to a few MB) beside `encoder.json`, which records the method and the base model by a portable
reference, and the tokenizer; `load_with_adapter` rebuilds the exact encoder from them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from peft import AdaLoraConfig, IA3Config, LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import AutoModel, AutoTokenizer

from recsys.errors import ConfigError

from .text_encoder import TextEncoder, quiet_hf_loading, resolve_device

METHODS = ("lora", "adalora", "ia3", "full", "frozen")
ADAPTER_METHODS = ("lora", "adalora", "ia3")
METADATA_FILE = "encoder.json"
TOKENIZER_DIR = "tokenizer"
WEIGHTS_DIR = "model"
FORMAT_VERSION = 1

# BERT-family module names (BERT, MiniLM, RoBERTa, ...). Matching is by suffix, so "dense" covers
# attention.output.dense, intermediate.dense and output.dense in every layer.
BERT_LORA_TARGETS = ["query", "key", "value", "dense"]
BERT_IA3_TARGETS = ["key", "value", "output.dense"]
BERT_IA3_FEEDFORWARD = ["output.dense"]
# peft config fields worth recording in encoder.json (the rest are defaults or derived).
_RECORDED_SETTINGS = (
    "r", "lora_alpha", "lora_dropout", "target_modules", "feedforward_modules",
    "init_r", "target_r", "total_step", "tinit", "tfinal", "deltaT",
)  # fmt: skip
_POOLER = re.compile(r"(^|.*\.)pooler(\..*)?$")


# ------------------------------------------------------------------------------------ applying
def apply_peft(
    model: TextEncoder,
    method: str = "lora",
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    total_steps: int | None = None,
    feedforward_modules: list[str] | None = None,
) -> TextEncoder:
    """Prepare `model` for training with `method`; returns the same encoder, changed in place.

    `r`, `alpha` and `dropout` are LoRA's rank, scaling and dropout (AdaLoRA: `r` is the target
    average rank, starting from 1.5·r). `target_modules=None` picks BERT-family names when the model
    has them, else `"all-linear"` (LoRA/AdaLoRA) or peft's per-architecture table (IA3).
    `total_steps` is required by AdaLoRA (its rank schedule: 10% warm-up, budget phase, final 20%).
    """
    method = (method or "").strip().lower()
    if method not in METHODS:
        raise ConfigError(f"unknown PEFT method '{method}'; choose one of {', '.join(METHODS)}")
    if model.method != "base":
        raise ConfigError(
            f"this encoder already has method '{model.method}'; apply a PEFT method to a freshly loaded base model"
        )
    if not isinstance(r, int) or r < 1:
        raise ConfigError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")

    settings: dict[str, Any] = {"method": method}
    if method == "frozen":
        for param in model.parameters():
            param.requires_grad_(False)
    elif method == "full":
        for name, param in model.transformer.named_parameters():
            param.requires_grad_(not _POOLER.match(name.rsplit(".", 1)[0]))
    else:
        config = _peft_config(
            model,
            method,
            r=r,
            alpha=alpha,
            dropout=dropout,
            target_modules=target_modules,
            total_steps=total_steps,
            feedforward_modules=feedforward_modules,
        )

        try:
            with _quiet_peft():
                model.transformer = get_peft_model(model.transformer, config)
        except ValueError as exc:
            raise ConfigError(f"cannot apply {method} to this model: {exc} (set target_modules)") from exc
        settings.update(_jsonable(config, _RECORDED_SETTINGS))
    model.method = method
    model.peft_settings = settings
    return model


def _peft_config(
    model: TextEncoder,
    method: str,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | str | None,
    total_steps: int | None,
    feedforward_modules: list[str] | None,
) -> Any:
    """The peft config object for an adapter method, with BERT-aware defaults."""
    names = [name for name, _ in model.transformer.named_modules()]
    bert_like = any(name.endswith("attention.self.query") for name in names)
    # Exclude the pooler only when there is one: peft warns about excludes that match nothing.
    exclude = _POOLER.pattern if any(_POOLER.match(name) for name in names) else None
    common: dict[str, Any] = {"task_type": TaskType.FEATURE_EXTRACTION, "exclude_modules": exclude}
    targets: list[str] | str | None  # a list of module names, or a regex

    if method == "ia3":
        if target_modules is None:
            targets = list(BERT_IA3_TARGETS) if bert_like else None
            feedforward = list(BERT_IA3_FEEDFORWARD) if bert_like else None
        else:
            targets = target_modules
            if feedforward_modules is not None:
                feedforward = feedforward_modules
            elif isinstance(target_modules, str):
                raise ConfigError("IA3 with a regex target_modules needs feedforward_modules too")
            else:  # the feed-forward output projections among the user's targets
                feedforward = [t for t in target_modules if t in BERT_IA3_FEEDFORWARD]
        return IA3Config(target_modules=targets, feedforward_modules=feedforward, **common)

    targets = target_modules if target_modules is not None else (list(BERT_LORA_TARGETS) if bert_like else "all-linear")
    lora_args = {"lora_alpha": alpha, "lora_dropout": float(dropout), "target_modules": targets, **common}
    if method == "lora":
        return LoraConfig(r=r, **lora_args)

    if total_steps is None or not isinstance(total_steps, int) or total_steps < 3:
        raise ConfigError(
            "adalora needs total_steps (the planned number of optimizer steps, at least 3) "
            f"to schedule its rank budget; got {total_steps!r}"
        )
    tinit = total_steps // 10
    tfinal = max(1, total_steps // 5)
    return AdaLoraConfig(
        init_r=r + max(1, r // 2),
        target_r=r,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=max(1, total_steps // 100),
        total_step=total_steps,
        **lora_args,
    )


def _jsonable(config: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        if not hasattr(config, key):
            continue
        value = getattr(config, key)
        if isinstance(value, set):
            value = sorted(value)
        out[key] = value
    return out


# ------------------------------------------------------------------------------ training helpers
def trainable_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, adapters included in the total."""
    trainable = total = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def peft_step(model: TextEncoder, global_step: int) -> None:
    """Per-step hook for methods with a training schedule (AdaLoRA's rank budget); else a no-op.

    Call it after `optimizer.step()` and before `optimizer.zero_grad()` (AdaLoRA scores ranks
    from the current gradients), with the 0-based step counter.
    """
    if model.method == "adalora":
        model.transformer.base_model.update_and_allocate(global_step)


def peft_regularization(model: TextEncoder) -> torch.Tensor:
    """Extra loss term the method asks for: AdaLoRA's orthogonality penalty; zero otherwise.

    peft adds it only to HF models that return `.loss`; a contrastive two-tower loss is computed
    outside the model, so the training loop adds this term itself: `loss = loss + peft_regularization(m)`.
    """
    device = model.device
    if model.method != "adalora":
        return torch.zeros((), device=device)
    peft_model = model.transformer
    weight = float(peft_model.peft_config[peft_model.active_adapter].orth_reg_weight)
    terms = []
    for name, param in peft_model.named_parameters():
        if not param.requires_grad or not ("lora_A" in name or "lora_B" in name):
            continue
        cov = param @ param.T if "lora_A" in name else param.T @ param
        eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
        terms.append(torch.linalg.matrix_norm(cov - eye, ord="fro"))
    if not terms:
        return torch.zeros((), device=device)
    return weight * torch.stack(terms).mean()


# ---------------------------------------------------------------------------------- saving
def save_adapter(model: TextEncoder, folder: str | Path) -> Path:
    """Write what is needed to rebuild `model` on top of its base: small for adapter methods.

    Layout: `encoder.json` (method, base reference, max_length, settings, library versions),
    `tokenizer/`, and for lora/adalora/ia3 peft's `adapter_model.safetensors` + `adapter_config.json`
    (no base weights). `full` (and a merged encoder) must store every weight, under `model/`;
    `frozen` stores none.
    """
    if model.method in ("int8",):
        raise ConfigError("a quantized encoder is for serving only; save the fp32 encoder or its adapter instead")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    had_readme = (out / "README.md").exists()
    with quiet_hf_loading():
        if model.method in ADAPTER_METHODS:
            model.transformer.save_pretrained(out, safe_serialization=True)
            if not had_readme and (out / "README.md").exists():
                (out / "README.md").unlink()  # peft's generic model-card stub, not ours to ship
        elif model.method in ("full", "merged"):
            model.transformer.save_pretrained(out / WEIGHTS_DIR, safe_serialization=True)
        model.tokenizer.save_pretrained(out / TOKENIZER_DIR)
    meta = {
        "format_version": FORMAT_VERSION,
        "method": "frozen" if model.method == "base" else model.method,
        "base_model": model.base_model,
        "max_length": model.max_length,
        "dim": model.dim,
        "settings": model.peft_settings,
        "versions": _versions(),
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The `encoder.json` of a saved encoder folder, checked; `ConfigError` names the file if bad."""
    path = Path(folder) / METADATA_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: not found; this folder was not written by save_adapter")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("method") not in (*METHODS, "merged"):
        raise ConfigError(f"{path}: 'method' must be one of {', '.join(METHODS)}, merged")
    if not isinstance(meta.get("max_length"), int):
        raise ConfigError(f"{path}: 'max_length' must be an integer")
    return meta


def load_with_adapter(
    base: TextEncoder | str | None,
    folder: str | Path,
    *,
    device: str | torch.device | None = None,
    trainable: bool = False,
) -> TextEncoder:
    """Rebuild an encoder saved by `save_adapter`.

    `base` is a freshly loaded base `TextEncoder` (it is copied, not changed), a base-model name
    or folder, or `None` for the base recorded in `encoder.json`. `trainable=True` leaves the
    adapter weights trainable (to continue training); otherwise nothing requires grad.
    """
    folder = Path(folder)
    meta = read_metadata(folder)
    method = meta["method"]
    max_length = int(meta["max_length"])

    if method in ("full", "merged"):
        encoder = _load_weights_folder(folder, meta)
    else:
        if isinstance(base, TextEncoder):
            if base.method != "base":
                raise ConfigError(f"the base encoder already has method '{base.method}'; pass a fresh base")
            encoder = copy.deepcopy(base).to("cpu")
        else:
            encoder = TextEncoder.from_pretrained(
                base if base is not None else meta["base_model"], max_length=max_length, device="cpu"
            )
        encoder.tokenizer = _load_tokenizer(folder) or encoder.tokenizer
        if method in ADAPTER_METHODS:
            with quiet_hf_loading(), _quiet_peft():
                encoder.transformer = PeftModel.from_pretrained(encoder.transformer, folder, is_trainable=trainable)
    encoder.max_length = max_length
    encoder.base_model = str(meta.get("base_model", encoder.base_model))
    encoder.method = method
    encoder.peft_settings = dict(meta.get("settings") or {"method": method})
    if method == "frozen" or not trainable:
        for param in encoder.parameters():
            param.requires_grad_(False)
    elif method == "full":
        for name, param in encoder.transformer.named_parameters():
            param.requires_grad_(not _POOLER.match(name.rsplit(".", 1)[0]))
    encoder.eval()
    return encoder.to(resolve_device(device))


def _load_tokenizer(folder: Path) -> Any | None:
    path = folder / TOKENIZER_DIR
    if not path.is_dir():
        return None

    with quiet_hf_loading():
        return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _load_weights_folder(folder: Path, meta: dict[str, Any]) -> TextEncoder:
    weights = folder / WEIGHTS_DIR
    if not weights.is_dir():
        raise ConfigError(f"{weights}: missing; a '{meta['method']}' encoder stores its weights there")

    with quiet_hf_loading():
        transformer = AutoModel.from_pretrained(weights, local_files_only=True, dtype=torch.float32)
    tokenizer = _load_tokenizer(folder)
    if tokenizer is None:
        raise ConfigError(f"{folder / TOKENIZER_DIR}: missing tokenizer")
    return TextEncoder(transformer, tokenizer, max_length=int(meta["max_length"]), base_model=meta["base_model"])


# -------------------------------------------------------------------------------- serving
def merge_for_serving(model: TextEncoder) -> TextEncoder:
    """A plain-transformer copy of `model` for inference: adapters folded into the weights.

    The input stays usable (it is copied first). For lora/adalora/ia3 this is peft's
    `merge_and_unload`, so serving pays no adapter overhead; other methods are copied as they are.
    The result has method "merged" (or its own method when there was nothing to merge), is in eval
    mode and requires no grad.
    """
    merged = copy.deepcopy(model)
    if model.method in ADAPTER_METHODS:
        merged.transformer = merged.transformer.merge_and_unload()
        merged.method = "merged"
        merged.peft_settings = {**model.peft_settings, "merged_from": model.method}
    for param in merged.parameters():
        param.requires_grad_(False)
    merged.eval()
    return merged


@contextlib.contextmanager
def _quiet_peft() -> Iterator[None]:
    """Hide warnings that peft itself triggers and that our users cannot act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # Reloading AdaLoRA: peft records rank_pattern keys with a ".lora_E" suffix and then warns that
        # they match no module; the saved (masked) singular values reload exactly regardless.
        warnings.filterwarnings("ignore", message=".*rank_pattern keys did not match.*", category=RuntimeWarning)
        yield


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
