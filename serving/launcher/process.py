"""One ``tritonserver`` process: start, wait until ``/v2/health/ready``, stop (SIGINT, then
SIGKILL of the whole process group), never leaving an orphan (``__exit__``, ``atexit`` and, on
Linux, ``PR_SET_PDEATHSIG``).

With the wheel's binary the python backend built by :mod:`serving.launcher.binary` and the
environment of :mod:`serving.launcher.environment` are used. With another binary (the NGC
container) the server's default backend directory is used and only ``PYTHONPATH`` is set:
untested on these machines.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from serving.launcher.binary import (
    TritonServerError,
    _require_pytriton_root,
    build_python_backend,
    find_tritonserver,
    is_wheel_binary,
)
from serving.launcher.control import ControlKeyError, is_loopback, restricted_args
from serving.launcher.environment import build_server_env
from serving.launcher.ports import _connect_host

log = logging.getLogger(__name__)

ModelControlMode = Literal["none", "explicit", "poll"]

#: Bytes of the server log shown in error messages.
LOG_TAIL_BYTES = 6000

_PR_SET_PDEATHSIG = 1
#: Health checks go straight to the server, never through ``http_proxy``.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _pdeathsig_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` that sets ``PR_SET_PDEATHSIG`` to SIGTERM, or ``None`` off Linux.

    libc is resolved here, in the parent: between fork and exec the child only makes the call
    (loading a library there could deadlock in a multi-threaded parent).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


class TritonServer:
    """One ``tritonserver`` process, usable as a context manager (start + wait ready on enter,
    stop on exit).

    Args:
        repository: model repository folder (made absolute).
        grpc_port, http_port, metrics_port: TCP ports, 1-65535, all different.
        host: address all three endpoints bind to (``--grpc/http/metrics-address``).
        binary: ``tritonserver`` to run; default :func:`find_tritonserver`.
        model_control_mode: ``none`` (load everything at start), ``explicit`` (only
            ``load_models``; more via the model-control API) or ``poll``.
        load_models: models to load at start; only with ``model_control_mode="explicit"``.
        log_verbose: ``--log-verbose`` level (0 = off).
        log_file: file that receives the server's stdout and stderr (appended); default a
            temporary file, deleted after a clean stop.
        extra_args: further command-line flags, appended last (they win over the defaults).
        exit_timeout_s: ``--exit-timeout-secs``, seconds the server waits for in-flight
            requests on shutdown; keep it below ``stop(timeout_s)``.
        python_paths: folders ``model.py`` files can import from; default site-packages of
            this interpreter plus the project root.
        backend_directory: ``--backend-directory``; default a python backend built from the
            wheel (:func:`build_python_backend`) for the wheel's binary, the server's own
            default otherwise.
        cache_dir: cache for the backend and stub environment; default
            :func:`default_cache_dir`.
        gpu_metrics: ``--allow-gpu-metrics`` (off: no GPU here, and it only adds noise).
        die_with_parent: ask Linux to SIGTERM the server when the thread that started it dies
            (``PR_SET_PDEATHSIG``), so even a SIGKILLed parent leaves no orphan. Turn it off
            when ``start()`` runs in a short-lived thread.
        control_key: key the model-repository, shared-memory, trace and logging APIs require
            in the ``towerserve-control-key`` header (serving.launcher.control); needed when
            ``host`` is not loopback and the model control mode is not ``none``.
    """

    def __init__(
        self,
        repository: Path,
        *,
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        host: str = "127.0.0.1",
        binary: Path | None = None,
        model_control_mode: ModelControlMode = "none",
        load_models: list[str] | None = None,
        log_verbose: int = 0,
        log_file: Path | None = None,
        extra_args: list[str] | None = None,
        exit_timeout_s: int = 10,
        python_paths: Sequence[Path] | None = None,
        backend_directory: Path | None = None,
        cache_dir: Path | None = None,
        gpu_metrics: bool = False,
        die_with_parent: bool = True,
        control_key: str | None = None,
    ) -> None:
        repository = Path(repository).expanduser().resolve()
        if not repository.is_dir():
            raise FileNotFoundError(
                f"model repository {repository} is not a folder; pass the folder that holds "
                "one sub-folder per model (each with config.pbtxt and a version folder)"
            )
        ports = {"grpc_port": grpc_port, "http_port": http_port, "metrics_port": metrics_port}
        for name, port in ports.items():
            if not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"{name} must be an int in 1..65535, got {port!r}")
        if len(set(ports.values())) != 3:
            raise ValueError(f"grpc, http and metrics ports must all differ, got {ports}")
        if model_control_mode not in ("none", "explicit", "poll"):
            raise ValueError(
                f"model_control_mode must be 'none', 'explicit' or 'poll', "
                f"got {model_control_mode!r}"
            )
        if load_models and model_control_mode != "explicit":
            raise ValueError(
                "load_models only works with model_control_mode='explicit' (in 'none' and "
                "'poll' modes the server loads every model in the repository)"
            )
        if control_key is None and model_control_mode != "none" and not is_loopback(host):
            raise ControlKeyError(
                f"host {host} is reachable from other machines and model control mode "
                f"{model_control_mode!r} lets a client load models: pass control_key (or bind "
                "127.0.0.1)"
            )
        if log_verbose < 0:
            raise ValueError(f"log_verbose must be >= 0, got {log_verbose}")
        if exit_timeout_s < 0:
            raise ValueError(f"exit_timeout_s must be >= 0 seconds, got {exit_timeout_s}")
        self.repository = repository
        self.grpc_port, self.http_port, self.metrics_port = grpc_port, http_port, metrics_port
        self.host = host
        self.binary = find_tritonserver(binary)
        self.model_control_mode: ModelControlMode = model_control_mode
        self.load_models = list(load_models or [])
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args or [])
        self.exit_timeout_s = exit_timeout_s
        self.python_paths = list(python_paths) if python_paths is not None else None
        self.backend_directory = backend_directory
        self.cache_dir = cache_dir
        self.gpu_metrics = gpu_metrics
        self.die_with_parent = die_with_parent
        self.control_key = control_key
        self._log_file_given = log_file is not None
        self.log_path: Path | None = Path(log_file).resolve() if log_file is not None else None
        self._log_offset = 0
        self._log_handle: IO[bytes] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- URLs ---------------------------------------------------------------------------------

    @property
    def url_grpc(self) -> str:
        """``host:port`` for ``tritonclient.grpc`` and ``perf_analyzer -u`` (no scheme)."""
        return f"{_connect_host(self.host)}:{self.grpc_port}"

    @property
    def url_http(self) -> str:
        """``http://host:port`` (``tritonclient.http`` wants it without ``http://``)."""
        return f"http://{_connect_host(self.host)}:{self.http_port}"

    @property
    def url_metrics(self) -> str:
        """Prometheus text endpoint, ``http://host:port/metrics``."""
        return f"http://{_connect_host(self.host)}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, else ``None``."""
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """Whether the server process has been started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once the process has exited (negative: killed by that signal)."""
        return self._proc.poll() if self._proc is not None else None

    # -- command line and environment -----------------------------------------------------------

    def command(self) -> list[str]:
        """The full command line (resolves the backend directory, which may build it)."""
        args = [
            str(self.binary),
            f"--model-repository={self.repository}",
            f"--model-control-mode={self.model_control_mode}",
            *[f"--load-model={name}" for name in self.load_models],
            "--strict-readiness=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            "--allow-metrics=true",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            f"--allow-gpu-metrics={'true' if self.gpu_metrics else 'false'}",
            f"--log-verbose={self.log_verbose}",
        ]
        backend_dir = self.backend_directory
        if backend_dir is None and is_wheel_binary(self.binary):
            backend_dir = build_python_backend(
                None if self.cache_dir is None else self.cache_dir / "backends"
            )
            caches = _require_pytriton_root() / "tritonserver" / "caches"
            if caches.is_dir():
                args.append(f"--cache-directory={caches}")
        if backend_dir is not None:
            args.append(f"--backend-directory={Path(backend_dir).resolve()}")
        return args + restricted_args(self.control_key) + self.extra_args

    def environment(self) -> dict[str, str]:
        """Environment the server runs with (see :func:`build_server_env`)."""
        return build_server_env(
            self.binary, python_paths=self.python_paths, cache_dir=self.cache_dir
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> TritonServer:
        """Start the process (does not wait for readiness: see :meth:`wait_ready`).

        Raises:
            TritonServerError: already running.
        """
        if self.is_running:
            raise TritonServerError(f"tritonserver already running (pid {self.pid})")
        cmd = self.command()
        env = self.environment()
        cwd = env.get("TOWERSERVE_STUB_ENV", str(self.repository))
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_handle = self.log_path.open("ab")
        self._log_offset = self._log_handle.tell()
        log.debug("starting %s", " ".join(cmd))
        try:
            self._proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() can signal stubs too
                preexec_fn=_pdeathsig_hook() if self.die_with_parent else None,
            )
        except BaseException:
            self._close_log()
            raise
        atexit.register(self._stop_at_exit)
        log.info("tritonserver started (pid %d), log %s", self._proc.pid, self.log_path)
        return self

    def log_tail(self, max_bytes: int = LOG_TAIL_BYTES) -> str:
        """The last ``max_bytes`` of this run's server output (empty if none yet)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(self._log_offset, end - max_bytes))
            return f.read().decode("utf-8", errors="replace")

    def _ready(self, timeout_s: float) -> bool:
        url = f"{self.url_http}/v2/health/ready"
        try:
            with _NO_PROXY.open(url, timeout=timeout_s) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0, poll_s: float = 0.2) -> None:
        """Poll ``GET /v2/health/ready`` until HTTP 200 (every model loaded, thanks to
        ``--strict-readiness``).

        Raises:
            TritonServerError: not started, or the process exited (message ends with the log
                tail: e.g. a model that failed to load, with ``--exit-on-error``).
            TimeoutError: not ready after ``timeout_s`` seconds (the process is left running;
                call :meth:`stop`).
        """
        if self._proc is None:
            raise TritonServerError("wait_ready() before start(): call start() first")
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                raise TritonServerError(
                    f"tritonserver exited with status {code} before becoming ready "
                    f"(log {self.log_path}); last output:\n{self.log_tail()}"
                )
            if self._ready(timeout_s=min(2.0, max(0.1, deadline - time.monotonic()))):
                log.info("tritonserver ready: grpc %s, http %s", self.url_grpc, self.url_http)
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"tritonserver not ready after {timeout_s:.0f} s (log {self.log_path}); "
                    f"raise timeout_s if models are large. Last output:\n{self.log_tail()}"
                )
            time.sleep(poll_s)

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop the server: SIGINT (graceful, waits up to ``--exit-timeout-secs`` for in-flight
        requests), then after ``timeout_s`` seconds SIGKILL to its whole process group (the
        Python stubs included). Safe to call twice or when not started.

        Returns:
            The exit status, or ``None`` if it was never started.
        """
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "tritonserver (pid %d) ignored SIGINT for %.0f s: killing it",
                    proc.pid,
                    timeout_s,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Stubs still alive in the group after the server has gone would be orphans.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.returncode
        atexit.unregister(self._stop_at_exit)  # only now: an interrupted stop is retried at exit
        self._close_log()
        if code == 0 and not self._log_file_given and self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None
        log.info("tritonserver (pid %d) stopped with status %s", proc.pid, code)
        return code

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout_s=10.0)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
