"""Watch streams on the floor's MilvusRoleBindings, in a process of their own.

When the operator is measured, two clients watch its bindings: the operator (any
implementation must) and the benchmark (its instrument). Each write then also costs the API
server a watch event per stream, and each watcher's parsing a share of the two CPUs. The floor
is measured with the same two streams open on its own namespace, read and parsed here, so that
it runs in the same conditions; in its own process, so that their parsing never delays the
floor's own timing.

`python -m bench.watchers KUBECONFIG NAMESPACE [STREAMS]` runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from bench.kube import BindingWatch, Kube, KubeAccess
from milvus_rbac_operator.devenv import REPO_ROOT, processes

STREAMS = 2  # the operator's own watch, and the benchmark's


async def watch(kubeconfig: Path, namespace: str, streams: int) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Kube(KubeAccess.from_kubeconfig(kubeconfig)) as kube:
        watches = [BindingWatch(kube, namespace) for _ in range(streams)]
        for each in watches:
            each.start()
        await asyncio.gather(*(asyncio.wait_for(w.listed.wait(), 60) for w in watches))
        print("watching", flush=True)
        await stop.wait()
        for each in watches:
            await each.stop()


class WatchersProcess:
    """`async with WatchersProcess(...):` the streams are open and listed inside."""

    def __init__(
        self, kubeconfig: Path, namespace: str, log_path: Path, streams: int = STREAMS
    ) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "bench.watchers",
            str(kubeconfig),
            namespace,
            str(streams),
        ]
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> WatchersProcess:
        self._proc = processes.spawn(self._argv, self._log_path, cwd=REPO_ROOT)
        for _ in range(600):
            if "watching" in self._log_path.read_text(errors="replace"):
                return self
            if self._proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        await self.__aexit__(None, None, None)
        raise RuntimeError(f"the floor's watch streams did not start; see {self._log_path}")

    async def __aexit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            await asyncio.to_thread(processes.stop, self._proc, 10)
            self._proc = None


if __name__ == "__main__":
    asyncio.run(
        watch(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else STREAMS)
    )
