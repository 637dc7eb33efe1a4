"""A private network namespace with a loopback-only forwarder into it.

The embedded Milvus binary listens on every interface and offers no bind-address setting.
Running it inside its own network namespace (only `lo` there) keeps it off the machine's
other addresses; a small TCP forwarder on 127.0.0.1 is the only way in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import socket
import subprocess
import threading
from pathlib import Path

from milvus_rbac_operator.devenv import processes

_CLONE_NEWNET = 0x40000000


class NetworkNamespace:
    """A loopback-only network namespace, held open by a sleeping child process."""

    def __init__(self, log_path: Path) -> None:
        self._holder = processes.spawn(
            ["unshare", "--net", "--", "sh", "-c", "ip link set lo up && exec sleep infinity"],
            log_path,
        )
        processes.wait_until(self._lo_is_up, "network namespace", 10, self._alive, log_path)

    @property
    def path(self) -> str:
        return f"/proc/{self._holder.pid}/ns/net"

    def _alive(self) -> bool:
        return self._holder.poll() is None

    def _lo_is_up(self) -> bool:
        # `exec sleep` replaced the shell only after `ip link set lo up` succeeded.
        try:
            return Path(f"/proc/{self._holder.pid}/comm").read_text().strip() == "sleep"
        except OSError:
            return False

    def command(self, argv: list[str]) -> list[str]:
        """`argv` wrapped to run inside this namespace."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def close(self) -> None:
        processes.stop(self._holder, grace_seconds=2)


def _enter(netns_path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns_path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class Forwarder:
    """Forwards 127.0.0.1:<host_port> to 127.0.0.1:<target_port> inside a network namespace."""

    def __init__(self, netns: NetworkNamespace, target_port: int, host_port: int = 0) -> None:
        self.target_port = target_port
        self.host_port = host_port or processes.free_port()
        # setns() changes only the calling thread: one dialer thread lives inside the namespace,
        # and sockets it creates stay there whichever thread uses them afterwards.
        self._dialer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, initializer=_enter, initargs=(netns.path,)
        )
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fwd-{self.host_port}", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"forwarder on 127.0.0.1:{self.host_port} did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.host_port, reuse_address=True)
        )
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    def _dial(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        sock.settimeout(None)
        sock.setblocking(False)
        return sock

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            inner = await self._loop.run_in_executor(self._dialer, self._dial)
        except OSError:
            writer.close()  # the server inside is down: refuse like a closed port would
            return
        inner_reader, inner_writer = await asyncio.open_connection(sock=inner)
        await asyncio.gather(_pump(reader, inner_writer), _pump(inner_reader, writer))

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._dialer.shutdown(wait=False)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def available() -> bool:
    """Whether this machine lets us create network namespaces (root, unshare present)."""
    try:
        subprocess.run(["unshare", "--net", "true"], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True
