"""`python -m milvus_rbac_operator run` as its own process, with its metrics and /proc figures."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench import procstat
from bench.promtext import OperatorMetrics, operator_metrics
from milvus_rbac_operator.devenv import processes


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_path: Path,
        drift_interval: float,
        namespace: str,
        profile_to: Path | None = None,
    ) -> None:
        self.port = processes.free_port()
        self.log_path = log_path
        self._kubeconfig = kubeconfig
        self._namespace = namespace
        self._drift_interval = drift_interval
        self._profile_to = profile_to
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.metrics_available: bool | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        # Settings from the caller's shell (MRBO_NAMESPACES, say) would change what is measured.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MRBO_")}
        return env | {
            "MRBO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "MRBO_HEALTH_LISTEN": f"127.0.0.1:{self.port}",
            "MRBO_DRIFT_INTERVAL_SECONDS": f"{self._drift_interval:g}",
            "MRBO_LOG_LEVEL": "WARNING",  # logging costs; the benchmark measures the work
        }

    def argv(self) -> list[str]:
        command = [
            "-m",
            "milvus_rbac_operator",
            "run",
            f"--kubeconfig={self._kubeconfig}",
            f"--namespace={self._namespace}",
        ]
        if self._profile_to is None:
            return [sys.executable, *command]
        # pyinstrument runs the module in-process and writes its report when the operator exits;
        # a .pyisession file can be rendered again later (`pyinstrument --load=FILE`).
        renderer = {".html": "html", ".pyisession": "session"}.get(self._profile_to.suffix, "text")
        return [
            sys.executable,
            "-m",
            "pyinstrument",
            f"--renderer={renderer}",
            f"--outfile={self._profile_to}",
            *command,
        ]

    async def start(self, timeout: float = 60) -> None:
        self._proc = processes.spawn(self.argv(), self.log_path, env=self.env())
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the operator exited at start; see {self.log_path}")
            if await self._get("/readyz") is not None:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"the operator was not ready within {timeout:.0f}s; see {self.log_path}")

    async def _get(self, path: str) -> str | None:
        assert self._session is not None
        try:
            async with self._session.get(f"http://127.0.0.1:{self.port}{path}") as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def metrics(self) -> OperatorMetrics | None:
        """The operator's mrbo_* series; None while it does not export them (shown as n/a)."""
        text = await self._get("/metrics")
        available = text is not None and "mrbo_" in text
        self.metrics_available = bool(self.metrics_available) or available
        return operator_metrics(text) if text is not None and available else None

    def rss_bytes(self) -> int | None:
        return procstat.rss_bytes(self.pid) if self.alive() else None

    def peak_rss_bytes(self) -> int | None:
        return procstat.peak_rss_bytes(self.pid) if self.alive() else None

    def cpu_seconds(self) -> float | None:
        return procstat.cpu_seconds(self.pid) if self.alive() else None

    async def stop(self) -> int | None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._proc is None:
            return None
        # Writing a profile of a long run takes a while.
        await asyncio.to_thread(processes.stop, self._proc, 120 if self._profile_to else 20)
        return self._proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
