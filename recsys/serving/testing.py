"""Run the real server as a subprocess, and wait for what it reports.

For tests and benchmarks (like `encoders.testing`): `ServerProcess` starts `recsys serve` on a free
loopback port and waits for `/readyz`; `wait_for_readyz` polls an app until a hot swap shows. The
tiny serving world they serve (a synthetic dataset, one-step encoders, a nightly store) is built by
`jobs.testing.build_world`: it runs the batch jobs, which the service never imports.
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
from typing import Any

import httpx


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

    def start(self, timeout: float = 300.0, ready_path: str = "/readyz") -> ServerProcess:
        """Start and wait until `ready_path` answers 200 (`/healthz` for a server that cannot be ready yet).

        The default wait is long: on a shared 2-core box busy with training, importing torch and loading the
        models of even the tiny test world took 90-110 s (a few seconds when the box is idle).
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("this server is already running")
        self.port = self.port or free_port()
        args = [
            sys.executable,
            "-m",
            "recsys.cli",
            "serve",
            "--store",
            str(self.store),
            "--data",
            str(self.data),
            "--encoder",
            self.encoder,
            "--ranker",
            self.ranker,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--poll-interval",
            str(self.poll_interval),
            "--threads",
            str(self.threads),
            *self.extra_args,
        ]
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
