"""The `sequence` user tower: a small causal transformer over item vectors (UniSRec/SASRec-like).

Why this tower exists: on data such as MovieLens the order of a history predicts the next item far
better than its bag of texts, and a 2-layer, 64-wide transformer over *cached* item vectors trains
in minutes on two CPU cores, while pushing every history through the text transformer costs hours.

Item vectors are the (fine-tuned or frozen) text embeddings passed through a learned projection,
plus a learned per-item id embedding for warm items (items seen in training). Cold items keep the
projected text vector alone, so an item added today is recommendable from its text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

N_GAP_BUCKETS = 16


@dataclass
class SequenceConfig:
    """Hyper-parameters of the sequence tower; stored beside the weights so a load rebuilds it."""

    dim: int = 64
    layers: int = 2
    heads: int = 2
    max_len: int = 200
    dropout: float = 0.3
    id_embeddings: bool = True
    text_dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def gap_buckets(seconds: np.ndarray) -> np.ndarray:
    """Log2 buckets of the time since the previous interaction (0 = same second or first)."""
    clipped = np.clip(seconds, 0, None).astype(np.float64)
    buckets = np.where(clipped < 1, 0, np.floor(np.log2(clipped + 1)).astype(np.int64) // 2 + 1)
    return np.minimum(buckets, N_GAP_BUCKETS - 1).astype(np.int64)


def build_model(text_vectors: np.ndarray, warm: np.ndarray, config: SequenceConfig) -> torch.nn.Module:
    """Create the model; `text_vectors` row 0 is padding, row i the text vector of item index i."""
    import torch
    from torch import nn

    class SequenceRecommender(nn.Module):
        """Item tower (projected text + warm id embedding) and causal user tower in one module."""

        def __init__(self) -> None:
            super().__init__()
            n_rows, text_dim = text_vectors.shape
            self.config = config
            self.register_buffer("text", torch.as_tensor(text_vectors, dtype=torch.float32))
            self.register_buffer("warm", torch.as_tensor(warm, dtype=torch.float32).unsqueeze(1))
            self.text_proj = nn.Linear(text_dim, config.dim)
            self.item_id = nn.Embedding(n_rows, config.dim, padding_idx=0)
            nn.init.normal_(self.item_id.weight, std=0.02)
            with torch.no_grad():
                self.item_id.weight[0].zero_()
            self.position = nn.Embedding(config.max_len, config.dim)
            self.gap = nn.Embedding(N_GAP_BUCKETS, config.dim)
            layer = nn.TransformerEncoderLayer(
                config.dim,
                config.heads,
                config.dim * 4,
                config.dropout,
                batch_first=True,
                norm_first=True,
                activation="gelu",
            )
            self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
            self.input_norm = nn.LayerNorm(config.dim)
            self.output_norm = nn.LayerNorm(config.dim)
            self.dropout = nn.Dropout(config.dropout)

        def item_matrix(self) -> torch.Tensor:
            """Vectors of every item index (row 0 = padding); the same ones go to the FAISS index."""
            text = self.text
            if self.training and config.text_dropout > 0:
                text = nn.functional.dropout(text, config.text_dropout)
            vectors = self.text_proj(text)
            if config.id_embeddings:
                vectors = vectors + self.item_id.weight * self.warm
            return vectors

        def user_states(self, items: torch.Tensor, gaps: torch.Tensor, items_matrix: torch.Tensor) -> torch.Tensor:
            """Causal states for right-aligned sequences `items` [B, L] (0 = padding on the left)."""
            length = items.shape[1]
            positions = torch.arange(length, device=items.device).flip(0)  # 0 = most recent
            x = items_matrix[items] + self.position(positions).unsqueeze(0) + self.gap(gaps)
            x = self.dropout(self.input_norm(x))
            x = self.encoder(x, mask=attention_mask(items == 0, config.heads))
            return self.output_norm(x)

    return SequenceRecommender()


def attention_mask(padding: torch.Tensor, heads: int) -> torch.Tensor:
    """Boolean mask [B*heads, L, L] (True = blocked): causal, and no attention to padding keys.

    A padded query position may attend to itself only, so no softmax row is empty: an empty row
    gives NaN, and in eval mode PyTorch's fused path would spread it to real positions.
    """
    import torch

    length = padding.shape[1]
    causal = torch.triu(torch.ones(length, length, dtype=torch.bool, device=padding.device), 1)
    blocked = causal.unsqueeze(0) | padding.unsqueeze(1)  # [B, L(query), L(key)]
    diagonal = torch.eye(length, dtype=torch.bool, device=padding.device).unsqueeze(0)
    blocked = blocked & ~(diagonal & padding.unsqueeze(2))
    return blocked.repeat_interleave(heads, dim=0)


def right_aligned(sequences: list[np.ndarray], max_len: int) -> np.ndarray:
    """Stack sequences into [N, max_len], keeping each one's most recent `max_len` entries on the right."""
    out = np.zeros((len(sequences), max_len), dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = seq[-max_len:]
        if len(tail):
            out[row, -len(tail) :] = tail
    return out


def cosine_warmup(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
