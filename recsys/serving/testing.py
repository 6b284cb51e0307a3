"""Build a small real serving world in seconds, and run the real server as a subprocess.

For tests and benchmarks (like `encoders.testing`): a synthetic dataset, encoders trained for one
step over a tiny random BERT (`encoders.testing.make_tiny_bert`), a nightly store published by the
real job, and `ServerProcess`, which starts `recsys serve` on a free loopback port and waits for
`/readyz`. Nothing here is a stand-in: every part is the production code path at a tiny size.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.nightly_embed import EmbedReport
    from recsys.data.dataset import Dataset

ACTIVE_DAYS = 400.0


@dataclass
class World:
    """Folders of one tiny serving world (see the module doc)."""

    root: Path
    data: Path
    dataset: Dataset
    bert: Path
    encoders: dict[str, Path]
    store: Path
    report: EmbedReport


def train_tiny_encoder(dataset: Dataset, out: Path, bert: Path, tower: str = "text") -> Path:
    """A `train_encoder` run over the tiny BERT: frozen text tower, or one LoRA step plus the user tower."""
    from encoders.sequence import SequenceConfig
    from encoders.sequence_training import SequenceTrainConfig
    from encoders.text_training import TextTrainConfig
    from jobs.train_encoder import train_encoder
    from recsys.splits import leave_last_out

    method = "lora" if tower == "sequence" else "frozen"
    config = TextTrainConfig(method=method, max_steps=1, batch_size=8, eval_every=1, history_tokens=48,
                             item_tokens=16, checkpoint_every=1, threads=1)
    train_encoder(dataset, leave_last_out(dataset.interactions), out, tower=tower, base_model=str(bert),
                  text_config=config, sequence_config=SequenceConfig(dim=16, max_len=20, layers=1),
                  sequence_train_config=SequenceTrainConfig(epochs=2, eval_every=1, threads=1), progress=False)
    return out


def embed_config(**overrides: Any):
    """The nightly settings tests use: one thread, no MLflow, no progress bars."""
    from jobs.nightly_embed import EmbedConfig

    values: dict[str, Any] = {"log": False, "progress": False, "threads": 1, "active_days": ACTIVE_DAYS}
    values.update(overrides)
    return EmbedConfig(**values)


def build_world(root: str | Path, *, towers: tuple[str, ...] = ("text",), n_interactions: int = 1500,
                n_users: int = 60, n_items: int = 120, seed: int = 3) -> World:
    """Dataset + tiny encoders (one a tower) + a nightly store published with the first tower's encoder."""
    import torch

    from encoders.testing import make_tiny_bert
    from jobs.nightly_embed import run_nightly
    from recsys.data.synthetic import generate

    torch.set_num_threads(1)
    root = Path(root)
    dataset = generate(n_interactions=n_interactions, n_users=n_users, n_items=n_items, seed=seed)
    dataset.save(root / "data")
    bert = make_tiny_bert(root / "bert", seed=0)
    encoders = {tower: train_tiny_encoder(dataset, root / f"enc-{tower}", bert, tower) for tower in towers}
    report = run_nightly(root / "data", encoders[towers[0]], root / "store", embed_config())
    return World(root, root / "data", dataset, bert, encoders, root / "store", report)


def wait_for_readyz(client: Any, condition: Callable[[dict], bool], timeout: float = 60.0) -> dict:
    """Poll `client.get("/readyz")` (an httpx client on a served app) until `condition(status)` holds.

    Raises AssertionError with the last status when it does not within `timeout` seconds: tests use
    it to wait for a hot swap or a fallback without sleeping a fixed time.
    """
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = client.get("/readyz").json()
        if condition(status):
            return status
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s; last /readyz: {status}")


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """`recsys serve` in a subprocess on 127.0.0.1; logs go to `log_file`. Use as a context manager."""

    store: Path
    data: Path
    encoder: str
    log_file: Path
    ranker: str = "none"
    api_keys: tuple[str, ...] = ()
    poll_interval: float = 0.2
    threads: int = 1
    extra_args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0, ready_path: str = "/readyz") -> ServerProcess:
        """Start and wait until `ready_path` answers 200 (`/healthz` for a server that cannot be ready yet)."""
        import httpx

        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("this server is already running")
        self.port = self.port or free_port()
        args = [sys.executable, "-m", "recsys.cli", "serve", "--store", str(self.store), "--data", str(self.data),
                "--encoder", self.encoder, "--ranker", self.ranker, "--host", "127.0.0.1", "--port", str(self.port),
                "--poll-interval", str(self.poll_interval), "--threads", str(self.threads), *self.extra_args]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **self.env}
        if self.api_keys:
            env["RECSYS_API_KEYS"] = ",".join(self.api_keys)  # by environment: never on a command line
        self._log = open(self.log_file, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}{ready_path}", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready within {timeout} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def log_text(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
