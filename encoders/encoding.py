"""The one batched encoding loop: texts or token rows -> unit vectors, rows in the caller's order.

Every path that embeds with a `TextEncoder` comes through here: `TextEncoder.encode`, training
evaluation (`TextTowerTrainer.item_vectors` / `user_vectors`), the bundle (`EncoderBundle.encode_items`,
`EncoderBundle.user_vectors_text`) and the nightly job's engines (`jobs.nightly_embed.LocalEngine`,
`jobs.ray_engine.EncodeActor`). So precision, batching and padding cannot drift between training,
serving and the nightly index.

How one window of rows is encoded:
- rows are sorted by token length (stable) and cut into batches from the short end; each batch is
  padded only to its own longest row, which on short, uneven texts does far less padded work than
  padding everything to the longest. The batches then run longest first, so a batch that does not fit
  in memory fails at once rather than at the end;
- the model runs in eval mode (the previous mode is restored) under `torch.inference_mode`, with bf16
  autocast on CUDA (pooling and normalisation stay fp32, `encoders.text_encoder.mean_pool`) and fp32
  on CPU; int8 is the dynamic-int8 CPU copy from `int8_encoder` (`encoders.export.quantize_int8`),
  swapped in once at load time (`encoders.registry.resolve_encoder(int8=True)`), not per call.

Two entry points:
- `encode_rows`: token ids the caller already has (training evaluation, the bundle's history and item
  rows). All rows form one window: they are in memory already, and sorting them all removes the most
  padding. It runs in the calling thread (the service's single encoder thread relies on that).
- `encode_chunks` / `encode_texts`: raw texts, tokenised with `encoder.token_ids(texts, max_length)`
  (the rule training used), in windows of `WINDOW_BATCHES` batches. With `workers` > 0, background
  threads tokenise (the fast tokenizer releases the GIL), sort and pad the next windows (pinned memory
  on CUDA) while this thread runs the model on the current one. A window never spans two chunks, so
  a chunk always gets the same batches whatever came before it: a resumed nightly run reproduces an
  uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.errors import ConfigError

if TYPE_CHECKING:
    from encoders.text_encoder import TextEncoder

CPU_BATCH = 128
CUDA_BATCH = 512
# Texts tokenised, length-sorted and padded together: the unit the background threads work ahead
# by. Long enough that sorting removes most padding, short enough to overlap with the model.
WINDOW_BATCHES = 16

Batch = tuple[np.ndarray, dict[str, torch.Tensor]]  # (row positions in the window, padded inputs)


def default_batch_size(encoder: TextEncoder) -> int:
    """128 on CPU, 512 on CUDA."""
    return CUDA_BATCH if encoder.device.type == "cuda" else CPU_BATCH


def default_tokenizer_workers(encoder: TextEncoder) -> int:
    """Tokenising threads: one on CPU (the cores are busy with the model), more in front of a GPU."""
    return max(1, min(4, (os.cpu_count() or 2) // 2)) if encoder.device.type == "cuda" else 1


def int8_encoder(encoder: TextEncoder) -> TextEncoder:
    """The dynamic-int8 copy of `encoder` (`encoders.export.quantize_int8`); CPU only."""
    if encoder.device.type != "cpu":
        raise ConfigError(
            "--int8 is a CPU option (dynamic int8 kernels): add --device cpu; on CUDA the "
            "encoder runs in bf16 without it"
        )
    # local (a): encoders.export imports text_encoder, which imports this module (a cycle)
    from encoders.export import quantize_int8

    return quantize_int8(encoder)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Row positions per batch: sorted by length (stable), cut from the short end, longest batch first."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)][::-1]


def _padded(encoder: TextEncoder, rows: Sequence[Sequence[int]], batch_size: int, pin: bool) -> Iterator[Batch]:
    for positions in length_batches([len(row) for row in rows], batch_size):
        batch = encoder.pad([rows[i] for i in positions])
        if pin:
            batch = {key: value.pin_memory() for key, value in batch.items()}
        yield positions, batch


def _run(
    encoder: TextEncoder,
    batches: Iterable[Batch],
    out: np.ndarray,
    offset: int,
    on_batch: Callable[[int], object] | None,
) -> None:
    """Forward each batch (inference mode, bf16 autocast on CUDA) into `out[offset + positions]`.

    The caller has put the encoder in eval mode. The inference/autocast contexts are entered here, per
    window, never held across a generator's `yield` (they are thread state the caller would inherit).
    """
    device = encoder.device
    cuda = device.type == "cuda"
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for positions, batch in batches:
            vectors = encoder(
                batch["input_ids"].to(device, non_blocking=cuda), batch["attention_mask"].to(device, non_blocking=cuda)
            )
            out[offset + positions] = vectors.float().cpu().numpy()
            if on_batch is not None:
                on_batch(len(positions))


@contextlib.contextmanager
def _eval_mode(encoder: TextEncoder) -> Iterator[None]:
    was_training = encoder.training
    encoder.eval()
    try:
        yield
    finally:
        encoder.train(was_training)


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _progress(total: int, enabled: bool, description: str, unit: str = "text") -> Any:
    return tqdm(total=total, disable=not enabled, desc=description, unit=unit, leave=False, dynamic_ncols=True)


def encode_rows(
    encoder: TextEncoder,
    rows: Sequence[Sequence[int]],
    batch_size: int = 128,
    progress: bool = False,
    description: str = "encode",
) -> np.ndarray:
    """Embed pre-tokenized rows (one length-sorted window, this thread): float32 [len(rows), dim], input order."""
    _check_batch_size(batch_size)
    out = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    if not len(rows):
        return out
    bar = _progress(len(rows), progress, description)
    with _eval_mode(encoder):
        _run(encoder, _padded(encoder, rows, batch_size, pin=False), out, 0, bar.update)
    bar.close()
    return out


def encode_chunks(
    encoder: TextEncoder,
    chunks: Iterable[Sequence[str]],
    *,
    max_length: int | None = None,
    batch_size: int,
    on_batch: Callable[[int], object] | None = None,
    workers: int | None = None,
    prefetch: int = 2,
) -> Generator[np.ndarray, None, None]:
    """Encode each chunk of texts; yields one float32 [len(chunk), dim] array per chunk, in order.

    `max_length` defaults to the encoder's own; `workers=None` takes `default_tokenizer_workers`,
    `workers=0` tokenises in this thread. Module doc: windows, background threads, resumability.
    """
    _check_batch_size(batch_size)
    pin = encoder.device.type == "cuda"
    window = batch_size * WINDOW_BATCHES
    workers = default_tokenizer_workers(encoder) if workers is None else int(workers)

    def prepare(texts: Sequence[str]) -> list[Batch]:
        return list(_padded(encoder, encoder.token_ids(texts, max_length=max_length), batch_size, pin))

    def windows() -> Iterator[tuple[int, int, list[str] | None]]:
        """(chunk size, offset, texts) per window; texts None marks the end of a chunk."""
        for chunk in chunks:
            texts = list(chunk)
            for offset in range(0, len(texts), window):
                yield len(texts), offset, texts[offset : offset + window]
            yield len(texts), len(texts), None

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="recsys-tokenize") if workers > 0 else None
    pending: deque[tuple[int, int, Future | list[Batch] | None]] = deque()
    source = windows()
    out: np.ndarray | None = None
    was_training = encoder.training
    encoder.eval()
    try:
        while True:
            while len(pending) < (workers + prefetch if pool is not None else 1):
                item = next(source, None)
                if item is None:
                    break
                size, offset, texts = item
                work = None if texts is None else (pool.submit(prepare, texts) if pool else prepare(texts))
                pending.append((size, offset, work))
            if not pending:
                return
            size, offset, work = pending.popleft()
            if out is None:
                out = np.empty((size, encoder.dim), dtype=np.float32)
            if work is None:  # the chunk is complete
                yield out
                out = None
                continue
            _run(encoder, work.result() if isinstance(work, Future) else work, out, offset, on_batch)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        encoder.train(was_training)


def encode_texts(
    encoder: TextEncoder,
    texts: Sequence[str],
    *,
    max_length: int | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    progress: bool = False,
    description: str = "encode",
) -> np.ndarray:
    """`encode_chunks` for one list of texts: float32 [len(texts), dim], rows in input order."""
    _check_batch_size(batch_size)
    if not len(texts):
        return np.zeros((0, encoder.dim), dtype=np.float32)
    bar = _progress(len(texts), progress, description)
    with contextlib.closing(
        encode_chunks(
            encoder, [texts], max_length=max_length, batch_size=batch_size, on_batch=bar.update, workers=workers
        )
    ) as pieces:
        vectors = next(pieces)
    bar.close()
    return vectors
