"""`TextEncoder`: one transformer that turns text into unit-length vectors, for training and serving.

It is the item tower (and the text user tower) of the two-tower model: HF `AutoModel` +
`AutoTokenizer`, mean pooling over the attention mask (what all-MiniLM-L6-v2 was trained with, so
the zero-shot vectors equal sentence-transformers'), then L2 normalisation so that a dot product is
a cosine and FAISS inner-product search ranks by cosine.

Text rules (the same for `encode`, `tokenize` and therefore for training and serving):
- an empty string is allowed and encodes as the bare `[CLS] [SEP]` sequence: a fixed, valid vector
  rather than an error, because items with no text still need a row in the index;
- text longer than `max_length` tokens (special tokens included) is truncated from the right, so the
  beginning of the text (the title in the default item template) is what the model sees;
- anything that is not a `str` (None, numbers) is a `DataError`: rendering item text is the caller's job.

Speed: `encode` runs the one batched encoding loop of `encoders.encoding` (length-sorted batches
padded only to their own longest text, tokenisation in a background thread, bf16 autocast on CUDA
with pooling and normalisation in fp32, fp32 on CPU). Results come back in the caller's order.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# torch and transformers at module level: the class below *is* a torch Module wrapping an HF model.
# Callers that must stay light (the CLI, the service's start) import this module lazily.
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from recsys.errors import ConfigError, DataError

from .base_model import base_reference, is_local, resolve_base_model
from .encoding import encode_texts

DEFAULT_MAX_LENGTH = 256


@contextlib.contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """Silence transformers' per-load progress bars and info logs for the duration of a load.

    They are noise in CLI output and test logs; the previous settings are restored afterwards so
    a host application's own choices stand.
    """
    bars_were_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_were_on:
            hf_logging.enable_progress_bar()


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors where `attention_mask` is 1, then L2-normalised; computed in fp32.

    Same arithmetic as sentence-transformers' Pooling(mean) + Normalize, so vectors agree with it.
    """
    mask = attention_mask.unsqueeze(-1).to(torch.float32)
    summed = (hidden.to(torch.float32) * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=-1)


def _default_max_length(folder: str, transformer: Any, tokenizer: Any) -> int:
    """The base model's own sequence limit: sentence-transformers' setting if present, else 256.

    Never above what the position embeddings (or the tokenizer) support.
    """
    limit = DEFAULT_MAX_LENGTH
    st_config = Path(folder) / "sentence_bert_config.json"
    if is_local(folder) and st_config.is_file():
        try:
            limit = int(json.loads(st_config.read_text(encoding="utf-8"))["max_seq_length"])
        except (ValueError, KeyError, TypeError):
            limit = DEFAULT_MAX_LENGTH
    positions = getattr(transformer.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limit = min(limit, positions)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        limit = min(limit, model_max)
    return limit


def _check_texts(texts: Sequence[Any]) -> list[str]:
    if isinstance(texts, str):
        raise DataError("expected a list of texts, got a single string (wrap it in a list)")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise DataError(f"text must be a string, got {type(text).__name__}", row=i + 1)
    return out


class TextEncoder(nn.Module):
    """Transformer + tokenizer → L2-normalised mean-pooled vectors.

    Attributes the training and PEFT code rely on:
    - `transformer`: the HF model (a `peft.PeftModel` after `apply_peft` with an adapter method);
    - `tokenizer`: the HF (fast) tokenizer; `tokenizer.sep_token` joins history texts;
    - `max_length`: token budget per text, special tokens included;
    - `base_model`: portable reference to the base weights (recorded in adapter metadata);
    - `method`: "base" when just loaded, else the PEFT method applied ("lora", "merged", ...);
    - `peft_settings`: the options the method was applied with (for metadata and reloading).
    """

    def __init__(
        self,
        transformer: Any,
        tokenizer: Any,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        base_model: str = "",
        method: str = "base",
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.tokenizer = tokenizer
        self.max_length = self._check_max_length(max_length)
        self.base_model = base_model
        self.method = method
        self.peft_settings: dict[str, Any] = {}
        self._dim = int(transformer.config.hidden_size)

    # ----------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | None = None,
        *,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ) -> TextEncoder:
        """Load a base model (see `resolve_base_model`) with its tokenizer, fp32, in eval mode.

        `max_length=None` takes the model's own limit (sentence_bert_config.json's max_seq_length,
        else 256, capped by the position embeddings). `device=None` picks CUDA when available.
        Local folders load with `local_files_only=True`; only a named hub id may download.
        """
        resolved = resolve_base_model(name_or_path)
        local = is_local(resolved)
        try:
            with quiet_hf_loading():
                tokenizer = AutoTokenizer.from_pretrained(resolved, local_files_only=local)
                transformer = AutoModel.from_pretrained(resolved, local_files_only=local, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            where = f"folder '{resolved}'" if local else f"hub model '{resolved}'"
            raise ConfigError(f"cannot load a transformer + tokenizer from {where}: {exc}") from exc
        length = max_length
        if length is None:
            length = _default_max_length(resolved, transformer, tokenizer)
        encoder = cls(transformer, tokenizer, max_length=length, base_model=base_reference(name_or_path))
        encoder.eval()
        return encoder.to(resolve_device(device))

    # -------------------------------------------------------------------------------- properties
    @property
    def dim(self) -> int:
        """Embedding size (the transformer's hidden size)."""
        return self._dim

    @property
    def device(self) -> torch.device:
        """Where the weights live (inputs from `tokenize` are put there)."""
        return next(self.parameters()).device

    @staticmethod
    def _check_max_length(max_length: int) -> int:
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ConfigError(f"max_length must be an integer >= 2 (room for [CLS] and [SEP]), got {max_length!r}")
        return max_length

    # ------------------------------------------------------------------------------ tokenization
    def token_ids(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids per text, special tokens added, truncated to `max_length` (default: self's)."""
        texts = _check_texts(texts)
        if not texts:
            return []
        limit = self._check_max_length(max_length) if max_length is not None else self.max_length
        encoded = self.tokenizer(
            texts,
            add_special_tokens=True,
            truncation=True,
            max_length=limit,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return list(encoded["input_ids"])

    def pad(self, ids: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-pad token-id lists to the longest one: `input_ids` and `attention_mask` (CPU, int64)."""

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenize a batch for `forward`: padded to its longest text, on this encoder's device.

        Same rules as `encode` (empty text → [CLS][SEP], truncation at `max_length`).
        """
        batch = self.pad(self.token_ids(texts, max_length))
        device = self.device
        return {key: value.to(device) for key, value in batch.items()}

    # ---------------------------------------------------------------------------------- forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled, L2-normalised vectors (fp32, shape [batch, dim]); differentiable, for training."""
        output = self.transformer(input_ids=input_ids, attention_mask=attention_mask)
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        return mean_pool(hidden, attention_mask)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed texts for indexing or queries: float32 array [len(texts), dim], rows in input order.

        The one encoding loop (`encoders.encoding.encode_texts`): eval mode (the previous mode is
        restored), length-sorted dynamic-padding batches, tokenisation in a background thread, bf16
        autocast on CUDA, fp32 on CPU.
        """
        texts = _check_texts(texts)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        return encode_texts(self, texts, max_length=self.max_length, batch_size=batch_size, progress=progress)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` → CUDA when available, else CPU; anything else as torch understands it."""

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r} (use 'cpu', 'cuda' or 'cuda:N')") from exc
