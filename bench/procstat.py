"""Memory and CPU time of a process, from /proc (Linux)."""

from __future__ import annotations

import os
from pathlib import Path


def parse_status_kib(text: str, field: str) -> int:
    """A `VmRSS:   1234 kB`-style field of /proc/<pid>/status, in KiB."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0])
    raise KeyError(field)


def parse_stat_cpu_ticks(text: str) -> int:
    """utime + stime of /proc/<pid>/stat, in clock ticks.

    The command name (field 2) may hold spaces and parentheses, so fields are counted after
    its closing parenthesis: state is field 3, utime 14, stime 15.
    """
    after_comm = text[text.rindex(")") + 2 :].split()
    return int(after_comm[11]) + int(after_comm[12])


def rss_bytes(pid: int) -> int:
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    return parse_status_kib(Path(f"/proc/{pid}/status").read_text(), "VmHWM") * 1024


def cpu_seconds(pid: int) -> float:
    ticks = parse_stat_cpu_ticks(Path(f"/proc/{pid}/stat").read_text())
    return ticks / os.sysconf("SC_CLK_TCK")
