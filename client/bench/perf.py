"""perf_analyzer (from the ``tritonclient==2.51.0`` wheel): its environment, one run, its files.

The binary needs ``libcudart.so.12`` and ``libb64.so.0d`` even on a CPU-only machine. As
``benchmarks/perf_env.sh`` does, :func:`perf_environment` takes ``libcudart.so.12`` from the
pip package ``nvidia-cuda-runtime-cu12`` and ``libb64.so.0d`` from the system (Debian package
``libb64-0d``); where either is missing it symlinks the copies bundled (under hashed names) in
the ``nvidia-pytriton`` wheel's ``nvidia_pytriton.libs/`` under their real names into
``${XDG_CACHE_HOME:-~/.cache}/towerserve/perf-libs/``.

A run is one concurrency on one input-data file: ``-f`` writes the latency CSV (the stable
windows' p50/p90/p95/p99 in microseconds), ``--profile-export-file`` every request with its
timestamps and outputs (read here for the latency per request kind and ``N_SCORED`` /
``DEGRADED`` under load). perf_analyzer exits with status 2 and writes neither file when it
fails to stabilise; :func:`run_perf` then retries once with the stability check relaxed and
marks the point ``stable: false``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: What to tell a user whose perf_analyzer is missing or cannot load its libraries.
INSTALL_HINT = (
    "install it with `pip install -e '.[bench]'` (tritonclient[all]==2.51.0 ships perf_analyzer, "
    "nvidia-cuda-runtime-cu12 its libcudart.so.12) and `apt-get install -y libb64-0d`"
)
#: Stability percentage of the retry after a failed stabilisation: any three windows pass.
RELAXED_STABILITY_PCT = 1000.0
_UNSTABLE = "Failed to obtain stable measurement"


class PerfAnalyzerUnavailable(RuntimeError):
    """perf_analyzer is not installed or cannot start here; the message says how to fix it."""


class PerfAnalyzerFailed(RuntimeError):
    """A perf_analyzer run failed (requests refused, server gone, ...); message has its output."""


def perf_libs_cache() -> Path:
    """Folder for the symlinked fallback libraries."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "towerserve" / "perf-libs"


def find_perf_analyzer() -> Path:
    """The perf_analyzer next to this interpreter (the venv's ``bin/``), else on ``PATH``.

    Raises:
        PerfAnalyzerUnavailable: found nowhere.
    """
    beside = Path(sys.executable).parent / "perf_analyzer"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise PerfAnalyzerUnavailable(
        f"perf_analyzer not found next to {sys.executable} nor on PATH; {INSTALL_HINT}"
    )


def _system_has(lib: str) -> bool:
    for ldconfig in ("/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"):
        try:
            out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        return lib in out.stdout
    return False


def _wheel_libs() -> Path | None:
    from serving.triton import TritonServerError, wheel_libs_dir

    try:
        return wheel_libs_dir()
    except TritonServerError:
        return None


def perf_library_dirs(site_packages: Path | None = None, shim: Path | None = None) -> list[Path]:
    """Folders to put on ``LD_LIBRARY_PATH`` for perf_analyzer (may create the shim folder).

    Raises:
        PerfAnalyzerUnavailable: a library is neither installed nor in the pytriton wheel.
    """
    site = site_packages or Path(sysconfig.get_paths()["purelib"])
    shim = shim or perf_libs_cache()
    dirs: list[Path] = []
    use_shim = False
    cudart = site / "nvidia" / "cuda_runtime" / "lib"
    wheel = _wheel_libs()
    if (cudart / "libcudart.so.12").exists():
        dirs.append(cudart)
    else:
        hits = sorted(wheel.glob("libcudart-*.so.12*")) if wheel else []
        if not hits:
            raise PerfAnalyzerUnavailable(f"libcudart.so.12 not found; {INSTALL_HINT}")
        _link(hits[0], shim / "libcudart.so.12")
        use_shim = True
    if not _system_has("libb64.so.0d"):
        hits = sorted(wheel.glob("libb64-*.so.0d")) if wheel else []
        if not hits:
            raise PerfAnalyzerUnavailable(f"libb64.so.0d not found; {INSTALL_HINT}")
        _link(hits[0], shim / "libb64.so.0d")
        use_shim = True
    if use_shim:
        dirs.append(shim)
    return dirs


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(link.name + f".{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def perf_environment() -> tuple[Path, dict[str, str]]:
    """perf_analyzer's path and the environment it runs with (checked by starting it once).

    Loopback addresses bypass any HTTP proxy (``no_proxy``).

    Raises:
        PerfAnalyzerUnavailable: missing, or it cannot load its libraries.
    """
    exe = find_perf_analyzer()
    env = dict(os.environ)
    dirs = [str(d) for d in perf_library_dirs()]
    if env.get("LD_LIBRARY_PATH"):
        dirs.append(env["LD_LIBRARY_PATH"])
    if dirs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs)
    loopback = "127.0.0.1,localhost,::1"
    for name in ("no_proxy", "NO_PROXY"):
        env[name] = f"{loopback},{env[name]}" if env.get(name) else loopback
    try:
        probe = subprocess.run(
            [str(exe), "--version"], env=env, capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PerfAnalyzerUnavailable(f"{exe} does not start ({exc}); {INSTALL_HINT}") from exc
    text = probe.stdout + probe.stderr
    if "error while loading shared libraries" in text or probe.returncode not in (0, 1):
        raise PerfAnalyzerUnavailable(
            f"{exe} does not start: {text.strip()[-500:]}; {INSTALL_HINT}"
        )
    return exe, env


# -- one run ----------------------------------------------------------------------------------


@dataclass
class PerfPoint:
    """One perf_analyzer measurement: latencies in ms, throughput in requests per second.

    ``by_kind`` holds p50/p99 per request kind (search, homepage) and ``n_scored`` /
    ``degraded`` summaries of every answered request of the run (all trials, not only the
    stable windows), from the profile export.
    """

    concurrency: int
    budget_ms: float
    stable: bool
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    server_queue_ms: float
    server_compute_ms: float
    client_overhead_ms: float
    n_requests: int = 0
    errors: int = 0
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    n_scored: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_latency_csv(path: Path) -> dict[str, float]:
    """The first row of perf_analyzer's ``-f`` CSV, microsecond columns converted to ms."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise PerfAnalyzerFailed(f"{path} has no measurement row")
    row = {k.strip(): float(v) for k, v in rows[0].items() if k and v not in (None, "")}

    def ms(name: str) -> float:
        return row.get(name, float("nan")) / 1000.0

    return {
        "throughput_rps": row.get("Inferences/Second", float("nan")),
        "p50_ms": ms("p50 latency"),
        "p90_ms": ms("p90 latency"),
        "p95_ms": ms("p95 latency"),
        "p99_ms": ms("p99 latency"),
        "avg_ms": ms("Avg latency"),
        "server_queue_ms": ms("Server Queue"),
        "server_compute_ms": ms("Server Compute Input")
        + ms("Server Compute Infer")
        + ms("Server Compute Output"),
        "client_overhead_ms": ms("Client Send") + ms("Client Recv"),
    }


@dataclass
class ProfileRequests:
    """Per request of a profile export: latency (ms), kind, N_SCORED, DEGRADED, send time (s)."""

    latency_ms: np.ndarray
    kinds: list[str]
    n_scored: np.ndarray  # -1 where the answer had none
    degraded: np.ndarray  # bool
    sent_s: np.ndarray
    errors: int


def read_profile_export(path: Path) -> ProfileRequests:
    """Every request of every experiment in a ``--profile-export-file`` JSON.

    A request without a response timestamp counts as an error. The kind is ``homepage`` for
    an empty ``QUERY``, ``search`` otherwise.
    """
    doc = json.loads(path.read_text())
    lat, kinds, scored, degraded, sent = [], [], [], [], []
    errors = 0
    for exp in doc.get("experiments", []):
        for req in exp.get("requests", []):
            stamps = req.get("response_timestamps") or []
            if not stamps:
                errors += 1
                continue
            lat.append((int(stamps[-1]) - int(req["timestamp"])) / 1e6)
            sent.append(int(req["timestamp"]) / 1e9)
            query = (req.get("request_inputs") or {}).get("QUERY", "")
            kinds.append("homepage" if query in ("", [""]) else "search")
            outs = (req.get("response_outputs") or [{}])[-1]
            scored.append(_scalar(outs.get("N_SCORED"), -1))
            degraded.append(bool(_scalar(outs.get("DEGRADED"), 0)))
    return ProfileRequests(
        np.asarray(lat, dtype=np.float64),
        kinds,
        np.asarray(scored, dtype=np.int64),
        np.asarray(degraded, dtype=bool),
        np.asarray(sent, dtype=np.float64),
        errors,
    )


def _scalar(value: Any, default: int) -> int:
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return default
    return int(value)


def latency_summary(latency_ms: np.ndarray) -> dict[str, float]:
    """count, p50, p90, p99 and mean of latencies in ms (NaN when empty)."""
    if len(latency_ms) == 0:
        return {"count": 0, "p50_ms": float("nan"), "p90_ms": float("nan"), "p99_ms": float("nan")}
    p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
    return {
        "count": int(len(latency_ms)),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": float(latency_ms.mean()),
    }


def scored_summary(n_scored: np.ndarray, degraded: np.ndarray) -> dict[str, float]:
    """Median, p10, p90 and mean of N_SCORED and the share of DEGRADED answers, over the
    answers that needed the cross-encoder. An answer with N_SCORED 0 that is not DEGRADED
    needed none (a request without a query whose blend keeps the retrieval order,
    serving/reranker.py): counted as ``unneeded`` and left out of the rest."""
    ok = n_scored >= 0
    unneeded = ok & (n_scored == 0) & ~np.asarray(degraded, dtype=bool)
    used = ok & ~unneeded
    if not used.any():
        return {"count": 0, "unneeded": int(unneeded.sum())}
    vals = n_scored[used].astype(np.float64)
    p10, p50, p90 = np.percentile(vals, [10, 50, 90])
    return {
        "count": int(used.sum()),
        "unneeded": int(unneeded.sum()),
        "median": float(p50),
        "p10": float(p10),
        "p90": float(p90),
        "mean": float(vals.mean()),
        "share_degraded": float(degraded[used].mean()),
    }


def run_perf(
    exe: Path,
    env: dict[str, str],
    *,
    url: str,
    model: str,
    input_data: Path,
    concurrency: int,
    budget_ms: float,
    measurement_interval_ms: int,
    stability_pct: float,
    max_trials: int,
    work_dir: Path,
    timeout_s: float = 600.0,
    retry_unstable: bool = True,
) -> PerfPoint:
    """Run perf_analyzer once over gRPC and return its measurement.

    ``work_dir`` receives ``c{concurrency}_b{budget}.csv``, ``.profile.json`` and ``.log``
    (perf_analyzer's printed report).

    Raises:
        PerfAnalyzerFailed: it exited with an error other than failing to stabilise (or still
            failed with the relaxed check), or wrote no CSV.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    stem = f"c{concurrency}_b{budget_ms:g}"
    csv_path, profile = work_dir / f"{stem}.csv", work_dir / f"{stem}.profile.json"
    stable = True
    start = time.perf_counter()
    for attempt, pct in enumerate((stability_pct, RELAXED_STABILITY_PCT)):
        for p in (csv_path, profile):
            p.unlink(missing_ok=True)
        cmd = [
            str(exe),
            "-m",
            model,
            "-u",
            url,
            "-i",
            "grpc",
            "--input-data",
            str(input_data),
            "--concurrency-range",
            str(concurrency),
            "--measurement-interval",
            str(measurement_interval_ms),
            "--stability-percentage",
            f"{pct:g}",
            "--max-trials",
            str(max_trials if attempt == 0 else 3),
            "-f",
            str(csv_path),
            "--profile-export-file",
            str(profile),
        ]
        log.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise PerfAnalyzerFailed(
                f"perf_analyzer (concurrency {concurrency}, budget {budget_ms:g} ms) ran past "
                f"{timeout_s:.0f} s"
            ) from exc
        output = proc.stdout + proc.stderr
        (work_dir / f"{stem}.log").write_text(output)  # perf_analyzer's own report
        if proc.returncode == 0 and csv_path.is_file():
            break
        if _UNSTABLE in output and attempt == 0 and retry_unstable:
            log.warning(
                "perf_analyzer did not stabilise within %d%% at concurrency %d, budget %g ms: "
                "retrying with the stability check relaxed (the point is marked unstable)",
                stability_pct,
                concurrency,
                budget_ms,
            )
            stable = False
            continue
        raise PerfAnalyzerFailed(
            f"perf_analyzer failed (status {proc.returncode}, concurrency {concurrency}, budget "
            f"{budget_ms:g} ms): {output.strip()[-3000:]}"
        )
    fields = read_latency_csv(csv_path)
    point = PerfPoint(
        concurrency=concurrency,
        budget_ms=budget_ms,
        stable=stable,
        throughput_rps=fields["throughput_rps"],
        p50_ms=fields["p50_ms"],
        p90_ms=fields["p90_ms"],
        p95_ms=fields["p95_ms"],
        p99_ms=fields["p99_ms"],
        avg_ms=fields["avg_ms"],
        server_queue_ms=fields["server_queue_ms"],
        server_compute_ms=fields["server_compute_ms"],
        client_overhead_ms=fields["client_overhead_ms"],
    )
    if profile.is_file():
        reqs = read_profile_export(profile)
        point.n_requests = int(len(reqs.latency_ms))
        point.errors = reqs.errors
        kinds = np.asarray(reqs.kinds)
        point.by_kind = {
            kind: latency_summary(reqs.latency_ms[kinds == kind])
            for kind in ("search", "homepage")
            if (kinds == kind).any()
        }
        point.n_scored = scored_summary(reqs.n_scored, reqs.degraded)
    point.seconds = time.perf_counter() - start
    return point
