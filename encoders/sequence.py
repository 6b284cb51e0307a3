"""The `sequence` user tower: SASRec over item vectors that are text, id, or both.

Why this tower exists: on data such as MovieLens the order of a history predicts the next item far
better than its bag of texts (a plain SASRec doubles a text tower's NDCG@10 there), and a 2-layer,
64-wide causal transformer over *cached* item vectors trains in minutes on two CPU cores, while
pushing every history through the text transformer costs hours.

Item vectors (`SequenceConfig.items`):
- `id`: a learned embedding per item, SASRec exactly; an item unseen in training has none (a zero
  vector), so it is never recommended: the ablation that shows what text buys for cold items;
- `text`: a learned projection of the item's text vector (frozen or fine-tuned MiniLM);
- `hybrid` (default): projected text + a learned id embedding for warm items (seen in training).
  Cold items keep the text part alone, so an item added today is recommendable from its text.

The same item vectors are the transformer's inputs and the retrieval index's vectors (shared input
and output embeddings, as in SASRec), so a user vector ranks items by an inner product in FAISS.

Inputs are right-aligned windows of the most recent `max_len` items (0 = padding on the left).
Positions (`SequenceConfig.positions`):
- `from_start` (default, SASRec's and RecBole's): position 0 is the window's oldest real item and
  positions count forward. Training states are causal, so the state at slot j sees positions 0..j
  with its newest item at j: exactly what a served history of j + 1 items looks like. Every
  training target is therefore scored in the configuration serving will meet;
- `from_end` (the first rebuilt tower, kept so its stored models reload exactly): position 0 is
  the window's newest slot. Only the last state of each training window sees its newest item at
  position 0, as every served history does; the other states see it at 1, 2, ... (a position
  that says how many items are still to come), so most of the training signal comes from a
  configuration serving never shows.
A learned log-scale bucket of the time since the previous item is added when `time_gaps` is on.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recsys.errors import ConfigError

N_GAP_BUCKETS = 16
INPUT_INIT_STD = 0.02
ITEM_REPRESENTATIONS = ("hybrid", "id", "text")
POSITION_SCHEMES = ("from_start", "from_end")
# The early-stopped tower kept beside the served one for ranker training (`encoders.sequence_training`).
HOLDOUT_WEIGHTS = "holdout.pt"
HOLDOUT_MATRIX = "holdout_item_matrix.npy"


@dataclass
class SequenceConfig:
    """Hyper-parameters of the sequence tower; stored beside the weights so a load rebuilds it."""

    # 128 chosen on validation over RecBole's 64 (held-out NDCG@10 0.0759 vs 0.0744 hybrid, 0.0728 vs
    # 0.0687 id items; BENCHMARKS.md): wider, it also reaches its best epoch sooner (15-17 vs 29-33).
    dim: int = 128
    layers: int = 2
    heads: int = 2
    max_len: int = 200
    dropout: float = 0.5
    items: str = "hybrid"
    time_gaps: bool = True
    # Hybrid items: the share of items whose id embedding is dropped in each training step, so the
    # text part alone must score them, as it must for items never seen in training (cold items).
    id_dropout: float = 0.0
    # Where position 0 is (module doc). Stored configs without the key are `from_end` (`from_dict`).
    positions: str = "from_start"

    def __post_init__(self) -> None:
        if self.positions not in POSITION_SCHEMES:
            raise ConfigError(f"unknown position scheme {self.positions!r}; use one of {', '.join(POSITION_SCHEMES)}")
        if self.items not in ITEM_REPRESENTATIONS:
            raise ConfigError(
                f"unknown item representation {self.items!r}; use one of {', '.join(ITEM_REPRESENTATIONS)}"
            )
        if self.dim % self.heads:
            raise ConfigError(f"sequence dim {self.dim} is not a multiple of heads {self.heads}")
        if self.max_len < 2:
            raise ConfigError("sequence max_len must be at least 2")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SequenceConfig:
        """Rebuild from a stored config; keys of older formats that no longer exist are ignored.

        A config stored before `positions` existed was trained with positions counted from the end.
        """
        known = {f.name for f in fields(cls)}
        return cls(**{"positions": "from_end", **{k: v for k, v in values.items() if k in known}})

    @property
    def uses_text(self) -> bool:
        return self.items in ("text", "hybrid")

    @property
    def uses_ids(self) -> bool:
        return self.items in ("id", "hybrid")


def gap_buckets(seconds: np.ndarray) -> np.ndarray:
    """Log2 buckets of the time since the previous interaction (0 = same second or first)."""
    clipped = np.clip(seconds, 0, None).astype(np.float64)
    buckets = np.where(clipped < 1, 0, np.floor(np.log2(clipped + 1)).astype(np.int64) // 2 + 1)
    return np.minimum(buckets, N_GAP_BUCKETS - 1).astype(np.int64)


def gaps_of(seconds: np.ndarray) -> np.ndarray:
    """Gap buckets of a chronological array of Unix seconds; the first item's gap counts as 0."""
    secs = np.asarray(seconds, dtype=np.int64)
    if len(secs) == 0:
        return np.zeros(0, dtype=np.int64)
    return gap_buckets(np.diff(secs, prepend=secs[0]))


class CausalBlock(nn.Module):
    """Pre-norm transformer block with causal self-attention that ignores padding keys."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )
        x = x + self.dropout(self.out(attended.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.dropout(self.ff(self.norm2(x)))


def attention_allowed(items: torch.Tensor) -> torch.Tensor:
    """Boolean mask [B, 1, L, L] (True = may attend): causal, and never to a padding key.

    A padding query attends to itself only, so no softmax row is empty (an empty row is NaN).
    """
    length = items.shape[1]
    real = items > 0
    causal = torch.tril(torch.ones(length, length, dtype=torch.bool, device=items.device))
    allowed = causal.unsqueeze(0) & real.unsqueeze(1)
    allowed = allowed | (torch.eye(length, dtype=torch.bool, device=items.device).unsqueeze(0) & ~real.unsqueeze(2))
    return allowed.unsqueeze(1)


class SequenceTower(nn.Module):
    """Item vectors (text projection and/or id embedding) and a causal user tower, in one module.

    Row 0 of every item table is padding; row i is item i of the model's item list.
    """

    text: torch.Tensor  # buffers registered in __init__ (register_buffer does not tell the type checker)
    warm: torch.Tensor

    def __init__(self, n_rows: int, text_dim: int, config: SequenceConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("text", torch.zeros(n_rows, text_dim))
        self.register_buffer("warm", torch.zeros(n_rows, 1))
        self.text_proj = nn.Linear(text_dim, config.dim) if config.uses_text else None
        self.item_id = nn.Embedding(n_rows, config.dim, padding_idx=0) if config.uses_ids else None
        if self.item_id is not None:
            nn.init.normal_(self.item_id.weight, std=1.0 / math.sqrt(config.dim))
            with torch.no_grad():
                self.item_id.weight[0].zero_()
        # Small position and gap embeddings: nn.Embedding's default N(0, 1) would drown the item
        # vectors (~0.03 per dimension for projected text) after the input LayerNorm, and the state
        # would then hardly depend on which items the history holds (the defect of the first tower).
        self.position = nn.Embedding(config.max_len, config.dim)
        nn.init.normal_(self.position.weight, std=INPUT_INIT_STD)
        self.gap = None
        if config.time_gaps:
            self.gap = nn.Embedding(N_GAP_BUCKETS, config.dim)
            nn.init.normal_(self.gap.weight, std=INPUT_INIT_STD)
        self.input_norm = nn.LayerNorm(config.dim)
        self.input_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(CausalBlock(config.dim, config.heads, config.dropout) for _ in range(config.layers))
        self.output_norm = nn.LayerNorm(config.dim)

    def item_vectors(self, text: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        """Vectors of items given their text vectors and model rows (0 = an item the model never saw).

        An unseen or cold item gets no id part: `warm` is 0 on its row (and row 0 is all zero).
        """
        parts = []
        if self.text_proj is not None:
            if text is None:
                raise ConfigError("this sequence tower reads item text; pass the items' text vectors")
            parts.append(self.text_proj(text))
        if self.item_id is not None:
            parts.append(self.item_id(rows) * self.warm[rows])
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def item_matrix(self) -> torch.Tensor:
        """Vectors of every row (row 0 = padding, never scored); the same ones go to the retrieval index.

        In training with `id_dropout`, a random share of rows gets no id part for this step.
        """
        rows = torch.arange(self.text.shape[0], device=self.text.device)
        if self.training and self.config.id_dropout > 0 and self.text_proj is not None and self.item_id is not None:
            keep = (torch.rand(len(rows), 1, device=rows.device) >= self.config.id_dropout).float()
            return self.text_proj(self.text) + self.item_id(rows) * self.warm * keep
        return self.item_vectors(self.text, rows)

    def text_matrix(self) -> torch.Tensor:
        """Every row's text part alone: what a cold item is scored by (`text_loss` trains it so)."""
        if self.text_proj is None:
            raise ConfigError("this sequence tower has no text part")
        return self.text_proj(self.text)

    def states(
        self, items: torch.Tensor, gaps: torch.Tensor, matrix: torch.Tensor, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Causal states [B, L, dim] of right-aligned windows `items` [B, L] with gap buckets `gaps`.

        `items` index `matrix`; `padding` marks padded slots (default: `items == 0`, for callers
        that pass the full item matrix, whose row 0 is padding).
        """
        length = items.shape[1]
        if length > self.config.max_len:
            raise ConfigError(f"window of {length} items exceeds the tower's max_len {self.config.max_len}")
        real = items > 0 if padding is None else ~padding
        x = matrix[items] + self.position(self.slot_positions(real))
        if self.gap is not None:
            x = x + self.gap(gaps)
        x = self.input_dropout(self.input_norm(x))
        allowed = attention_allowed(real.long())
        for block in self.blocks:
            x = block(x, allowed)
        return self.output_norm(x)

    def slot_positions(self, real: torch.Tensor) -> torch.Tensor:
        """Position index [B, L] of every slot of right-aligned windows (`real` marks non-padding).

        `from_start`: the count of real items before the slot (padding slots get 0; they are never
        attended to). `from_end`: distance from the window's last slot.
        """
        length = real.shape[1]
        if self.config.positions == "from_end":
            return torch.arange(length - 1, -1, -1, device=real.device).expand(real.shape[0], length)
        return (real.long().cumsum(dim=1) - 1).clamp(min=0)

    def user_vectors(
        self, items: torch.Tensor, gaps: torch.Tensor, matrix: torch.Tensor, padding: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The newest slot's state: the vector that scores the next item by inner product."""
        return self.states(items, gaps, matrix, padding)[:, -1]


@dataclass
class SequenceHistories:
    """Users' histories as item-row arrays (1-based; 0 is padding), oldest first, with gap buckets."""

    user_ids: list[str]
    items: list[np.ndarray]
    gaps: list[np.ndarray]


def build_model(text_vectors: np.ndarray, warm: np.ndarray, config: SequenceConfig) -> SequenceTower:
    """A tower over `text_vectors` (row 0 = padding) with id embeddings on the `warm` rows."""
    model = SequenceTower(text_vectors.shape[0], text_vectors.shape[1], config)
    with torch.no_grad():
        model.text.copy_(torch.as_tensor(text_vectors, dtype=torch.float32))
        model.warm.copy_(torch.as_tensor(warm, dtype=torch.float32).reshape(-1, 1))
        model.warm[0] = 0.0
    return model


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


def user_vectors(model: SequenceTower, hist: SequenceHistories, max_len: int, batch_size: int = 256) -> np.ndarray:
    """The tower's output for each history's newest slot (one vector per user).

    Only the item vectors a batch reads are computed (not the whole catalog's), so one online
    history costs one forward pass over its own items, not a projection of every item. Histories
    are batched by length and each batch is padded only to its longest window (left padding is
    invisible to the tower: `tests/test_sequence_tower.py`), so short histories do not pay for
    `max_len` slots. Runs where the model is (the service keeps it on the CPU;
    `benchmarks/gpu_check.py` times it on a GPU).
    """
    model.eval()
    device = model.text.device
    out = np.zeros((len(hist.items), model.config.dim), dtype=np.float32)
    lengths = np.asarray([min(len(seq), max_len) for seq in hist.items], dtype=np.int64)
    order = np.argsort(lengths, kind="stable")
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            picked = order[start : start + batch_size]
            width = max(1, int(lengths[picked].max()))
            items = right_aligned([hist.items[i] for i in picked], width)
            gaps = torch.as_tensor(right_aligned([hist.gaps[i] for i in picked], width), device=device)
            rows, local = np.unique(items, return_inverse=True)  # row 0 (padding) maps to itself if present
            rows_t = torch.as_tensor(rows, device=device)
            matrix = model.item_vectors(model.text[rows_t], rows_t)
            local_t = torch.as_tensor(local.reshape(items.shape), device=device)
            padding = torch.as_tensor(items == 0, device=device)
            vectors = model.user_vectors(local_t, gaps, matrix, padding=padding)
            out[picked] = vectors.float().cpu().numpy()
    return out


def item_matrix(model: SequenceTower) -> np.ndarray:
    """Every row's item vector (row 0 = padding), as the index will hold them."""
    model.eval()
    with torch.inference_mode():
        return model.item_matrix().numpy()
