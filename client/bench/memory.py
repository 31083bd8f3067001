"""Server memory from ``/proc``: the tritonserver process and every descendant (the python
backend stubs, one per model instance), RSS and PSS in MB.

RSS counts shared pages once per process, so the RSS sum over-counts what the stubs share
(libraries, the python runtime); PSS splits shared pages between the processes that map them
and sums to the real footprint. Linux only; elsewhere the samples are empty.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@dataclass
class ProcessMemory:
    """One process: ``name`` is ``tritonserver`` or the model a stub serves."""

    pid: int
    name: str
    rss_mb: float
    pss_mb: float


@dataclass
class MemorySample:
    """The whole server at unix time ``t_s``."""

    t_s: float
    rss_mb: float
    pss_mb: float
    processes: list[ProcessMemory] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _children(proc: Path = PROC) -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        kids.setdefault(int(fields[1]), []).append(int(entry.name))
    return kids


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and every process below it."""
    kids = _children(proc)
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _kb(text: str, key: str) -> float:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return 0.0


def _name(pid: int, proc: Path) -> str:
    try:
        args = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [a.decode("utf-8", "replace") for a in args if a]
    if not words:
        return "?"
    exe = Path(words[0]).name
    if exe == "triton_python_backend_stub" and len(words) > 1:
        model_py = Path(words[1])  # <repository>/<model>/<version>/model.py
        return model_py.parent.parent.name if len(model_py.parts) >= 3 else exe
    return exe


def process_memory(pid: int, proc: Path = PROC) -> ProcessMemory | None:
    """RSS and PSS of one process, or ``None`` if it is gone or unreadable."""
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return None
    rss_kb = _kb(status, "VmRSS")
    try:
        pss_kb = _kb((proc / str(pid) / "smaps_rollup").read_text(), "Pss")
    except OSError:
        pss_kb = rss_kb
    return ProcessMemory(pid, _name(pid, proc), rss_kb / 1024, pss_kb / 1024)


def sample_memory(server_pid: int | None, proc: Path = PROC) -> MemorySample:
    """The server's memory now (an empty sample when there is no pid or no ``/proc``)."""
    now = time.time()
    if server_pid is None or not (proc / str(server_pid)).is_dir():
        return MemorySample(now, 0.0, 0.0)
    procs = [m for p in descendants(server_pid, proc) if (m := process_memory(p, proc))]
    return MemorySample(now, sum(m.rss_mb for m in procs), sum(m.pss_mb for m in procs), procs)


def growth_pct(first: float, last: float) -> float:
    """Relative change from ``first`` to ``last`` in percent (NaN when ``first`` is 0)."""
    return (last / first - 1.0) * 100.0 if first > 0 else float("nan")
