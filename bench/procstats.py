"""What both benchmarks need from the machine: dropping the page cache, and what a process used."""

from __future__ import annotations

import os
from pathlib import Path


def drop_caches() -> bool:
    """Write back and drop the page cache (root only); False if it could not be dropped."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def process_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and peak resident memory in bytes of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, resident_memory(pid)[1]


def resident_memory(pid: int) -> tuple[int, int]:
    """(resident now, peak resident) in bytes: VmRSS and VmHWM of a live process."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]
