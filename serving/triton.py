"""Launch the real NVIDIA ``tritonserver`` 2.51 (from the ``nvidia-pytriton`` wheel), no Docker.

What this module takes care of, all verified by running the server on Python 3.11 / Debian 12:

* finding the binary: an explicit path, else the one inside the installed ``nvidia-pytriton``
  wheel (``pytriton/tritonserver/bin/tritonserver``), else ``tritonserver`` on ``PATH`` (e.g.
  the NGC container);
* a python-backend directory (``<dir>/python/`` with ``libtriton_python.so``,
  ``triton_python_backend_utils.py`` and the ``triton_python_backend_stub`` built for the
  *running* Python minor version), built once in a cache folder;
* the environment the server and its Python stubs need:

  - ``LD_LIBRARY_PATH``: the running interpreter's ``LIBDIR`` (``libpython3.X.so``) and the
    wheel's ``nvidia_pytriton.libs/`` (the stub copied out of the wheel loses its ``$ORIGIN``
    RPATH);
  - the stub embeds Python with an *isolated* ``PyConfig``: it ignores ``PYTHONPATH`` and
    ``PYTHONHOME`` and finds its prefix by looking up ``python3`` on ``PATH``. With the system
    ``/usr/bin/python3`` first on ``PATH`` it picks the system stdlib and dies with
    ``No module named '_struct'``. So the launcher builds a tiny *stub environment* (a
    ``pyvenv.cfg`` pointing at the running base interpreter, ``bin/python3`` and a ``.pth``
    file listing the venv's site-packages plus the project root) and puts its ``bin/`` first
    on ``PATH``; ``model.py`` files can then ``import numpy``, ``import serving`` and
    ``import towers``. ``PYTHONPATH`` is set as well, for any plain Python subprocess;
  - the server runs with its working directory set to that stub environment, because the stub
    puts ``''`` (the working directory) first on ``sys.path``.

* :class:`TritonServer`: start, wait until ``/v2/health/ready``, stop (SIGINT, then SIGKILL of
  the whole process group), never leaving an orphan (``__exit__``, ``atexit`` and, on Linux,
  ``PR_SET_PDEATHSIG``).

Limits: Linux x86_64 only (that is what the wheel ships); the wheel's python backend is only
used with the wheel's own binary. With another binary (the NGC container) the server's default
backend directory is used and only ``PYTHONPATH`` is set: untested on these machines.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import filecmp
import hashlib
import importlib.metadata
import importlib.util
import ipaddress
import logging
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Literal

log = logging.getLogger(__name__)

ModelControlMode = Literal["none", "explicit", "poll"]

#: Files of the python backend, relative to ``pytriton/tritonserver/backends/python/``.
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB_NAME = "triton_python_backend_stub"
#: Bytes of the server log shown in error messages.
LOG_TAIL_BYTES = 6000


class TritonServerError(RuntimeError):
    """The server could not be found, prepared, started or made ready."""


# --------------------------------------------------------------------------------------------
# Locating the wheel and the binary
# --------------------------------------------------------------------------------------------


def pytriton_root() -> Path | None:
    """Folder of the installed ``pytriton`` package (without importing it), or ``None``."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _require_pytriton_root() -> Path:
    root = pytriton_root()
    if root is None:
        raise TritonServerError(
            "the nvidia-pytriton wheel is not installed in this Python environment "
            f"({sys.prefix}); install it with `pip install nvidia-pytriton==0.7.0` "
            "(it ships tritonserver 2.51 and its python backend)"
        )
    return root


def wheel_libs_dir(root: Path | None = None) -> Path:
    """The wheel's bundled shared libraries (``nvidia_pytriton.libs/``, or ``external_libs``
    for an editable install of pytriton)."""
    root = root if root is not None else _require_pytriton_root()
    for candidate in (root.parent / "nvidia_pytriton.libs", root / "tritonserver/external_libs"):
        if candidate.is_dir():
            return candidate
    raise TritonServerError(
        f"no nvidia_pytriton.libs folder next to {root}: the nvidia-pytriton install looks "
        "broken; reinstall it with `pip install --force-reinstall nvidia-pytriton==0.7.0`"
    )


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def is_wheel_binary(binary: Path) -> bool:
    """Whether ``binary`` is the ``tritonserver`` shipped inside the installed pytriton wheel."""
    root = pytriton_root()
    return root is not None and _is_within(binary, root / "tritonserver")


def find_tritonserver(explicit: Path | None = None) -> Path:
    """Path of the ``tritonserver`` executable to run.

    Order: ``explicit`` (must exist and be executable), else the binary inside the installed
    ``nvidia-pytriton`` wheel, else ``tritonserver`` on ``PATH``.

    Raises:
        FileNotFoundError: ``explicit`` does not exist or is not an executable file, or no
            binary was found at all (the message says how to get one).
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"tritonserver binary {path} does not exist or is not a file; pass the path of "
                "the executable, or leave it out to use the one in the nvidia-pytriton wheel"
            )
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(
                f"tritonserver binary {path} is not executable; `chmod +x` it or pass another"
            )
        return path.resolve()
    root = pytriton_root()
    if root is not None:
        candidate = root / "tritonserver" / "bin" / "tritonserver"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        log.warning("pytriton is installed at %s but has no executable %s", root, candidate)
    on_path = shutil.which("tritonserver")
    if on_path is not None:
        return Path(on_path).resolve()
    raise FileNotFoundError(
        "no tritonserver found: install the wheel that ships it "
        "(`pip install nvidia-pytriton==0.7.0`), run inside the NGC container "
        "nvcr.io/nvidia/tritonserver:<yy.mm>-py3, or pass the binary's path explicitly"
    )


# --------------------------------------------------------------------------------------------
# Cache folders: python backend and stub environment
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/towerserve`` or ``~/.cache/towerserve``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "towerserve"


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _copy_atomic(src: Path, dst: Path) -> bool:
    """Copy ``src`` to ``dst`` (mode kept) unless an identical file is there; safe when several
    processes do it at once (copy to a unique temporary name, then ``os.replace``).

    Returns whether a copy was made.
    """
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


def build_python_backend(dest: Path | None = None) -> Path:
    """Build a backend directory for ``--backend-directory`` from the installed wheel.

    Creates ``<dest>/python/`` holding ``libtriton_python.so``,
    ``triton_python_backend_utils.py`` and the ``triton_python_backend_stub`` built for the
    running Python (``3.X``). Idempotent (identical files are left alone) and safe if two
    processes build the same folder at once.

    Args:
        dest: folder that will hold ``python/``; default
            ``<cache>/triton/<pytriton version>-py3.X/backends``.

    Returns:
        ``dest`` (the value to pass as ``--backend-directory``).

    Raises:
        TritonServerError: the wheel is missing, or has no stub for this Python version.
    """
    root = _require_pytriton_root()
    server_dir = root / "tritonserver"
    stub = server_dir / "python_backend_stubs" / _python_tag() / STUB_NAME
    if not stub.is_file():
        have = sorted(p.name for p in (server_dir / "python_backend_stubs").glob("3.*"))
        raise TritonServerError(
            f"the nvidia-pytriton wheel has no python backend stub for Python {_python_tag()} "
            f"(it has {', '.join(have) or 'none'}); run with one of those Python versions"
        )
    if dest is None:
        version = importlib.metadata.version("nvidia-pytriton")
        dest = default_cache_dir() / "triton" / f"{version}-py{_python_tag()}" / "backends"
    python_dir = Path(dest) / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [server_dir / "backends" / "python" / name for name in PYTHON_BACKEND_FILES]
    copied = [_copy_atomic(src, python_dir / src.name) for src in sources]
    copied.append(_copy_atomic(stub, python_dir / STUB_NAME))
    if any(copied):
        log.info("python backend for Python %s prepared in %s", _python_tag(), python_dir)
    return Path(dest)


def project_root() -> Path:
    """The folder that holds the ``serving`` package (so ``import serving``/``towers`` work)."""
    return Path(__file__).resolve().parent.parent


def default_python_paths() -> list[Path]:
    """Site-packages folders of the running interpreter, then the project root."""
    paths = [Path(p) for p in site.getsitepackages()]
    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        paths.append(Path(site.getusersitepackages()))
    paths.append(project_root())
    unique: list[Path] = []
    for p in paths:
        if p not in unique:
            unique.append(p)
    return unique


def build_stub_env(python_paths: Sequence[Path], cache_dir: Path | None = None) -> Path:
    """A minimal virtual-environment layout that makes the python backend stub use *this*
    interpreter's stdlib and see ``python_paths``.

    The stub ignores ``PYTHONPATH``/``PYTHONHOME`` (isolated ``PyConfig``) and locates its
    prefix from ``python3`` on ``PATH``; putting ``<result>/bin`` first on ``PATH`` makes it
    read ``<result>/pyvenv.cfg`` (home = the running base interpreter) and the ``.pth`` file
    in ``<result>/lib/python3.X/site-packages``, which lists ``python_paths``.

    The folder name is a hash of the interpreter and the paths, so different environments do
    not clash; building is idempotent and safe across processes (temp folder + rename).

    Returns:
        The stub environment folder (``<cache>/stub-env/<hash>``).
    """
    base_exe = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    paths = [str(Path(p).resolve()) for p in python_paths]
    key = hashlib.sha256("\n".join([str(base_exe), sys.version, *paths]).encode()).hexdigest()
    parent = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "stub-env"
    final = parent / key[:16]
    if (final / "pyvenv.cfg").is_file():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:16]}.", dir=parent))
    try:
        (tmp / "bin").mkdir()
        for name in ("python3", f"python{_python_tag()}"):
            (tmp / "bin" / name).symlink_to(base_exe)
        (tmp / "pyvenv.cfg").write_text(
            f"home = {base_exe.parent}\n"
            "include-system-site-packages = false\n"
            f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
            f"executable = {base_exe}\n"
        )
        site_dir = tmp / "lib" / f"python{_python_tag()}" / "site-packages"
        site_dir.mkdir(parents=True)
        # .pth lines are added to sys.path in order; other site-packages' own .pth files (e.g.
        # editable installs) are processed too because addsitedir is used for them.
        lines = [f"import site; site.addsitedir({p!r})" for p in paths]
        (site_dir / "_towerserve_paths.pth").write_text("\n".join(lines) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "pyvenv.cfg").is_file():  # not a concurrent builder's win
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.debug("stub environment for python paths %s in %s", paths, final)
    return final


def _prepend(env: dict[str, str], name: str, entries: Sequence[str | Path]) -> None:
    parts = [str(e) for e in entries]
    if env.get(name):
        parts.append(env[name])
    env[name] = os.pathsep.join(parts)


def build_server_env(
    binary: Path,
    *,
    python_paths: Sequence[Path] | None = None,
    cache_dir: Path | None = None,
    base_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Environment for running ``binary`` so python-backend models can import the project.

    For the wheel's binary: ``LD_LIBRARY_PATH`` gets the interpreter's ``LIBDIR`` and the
    wheel's libs, ``PATH`` gets the stub environment's ``bin`` first (see
    :func:`build_stub_env`) and ``PYTHONPATH`` gets ``python_paths``. For any other binary only
    ``PYTHONPATH`` is set.

    Args:
        binary: the ``tritonserver`` that will run.
        python_paths: folders importable from ``model.py``; default
            :func:`default_python_paths` (site-packages + project root).
        cache_dir: cache folder for the stub environment; default :func:`default_cache_dir`.
        base_env: environment to extend; default ``os.environ``.
    """
    env = dict(os.environ if base_env is None else base_env)
    paths = list(python_paths) if python_paths is not None else default_python_paths()
    _prepend(env, "PYTHONPATH", paths)
    if not is_wheel_binary(binary):
        return env
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        log.warning(
            "this Python (%s) is built without libpython3.X.so; the python backend stub may "
            "load a different libpython and fail. Use a Python built with --enable-shared.",
            sys.executable,
        )
    libdir = sysconfig.get_config_var("LIBDIR")
    _prepend(env, "LD_LIBRARY_PATH", [p for p in (libdir, wheel_libs_dir()) if p])
    stub_env = build_stub_env(paths, cache_dir)
    _prepend(env, "PATH", [stub_env / "bin"])
    env["TOWERSERVE_STUB_ENV"] = str(stub_env)
    return env


# --------------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------------


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports the OS reports free on ``host`` right now.

    All sockets are held open together so the ports differ, then closed: another process may
    still take one before the caller binds it (fine for tests; not a reservation).
    """
    if n < 1:
        raise ValueError(f"free_ports needs n >= 1, got {n}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One TCP port the OS reports free on ``host`` (see :func:`free_ports`)."""
    return free_ports(1, host)[0]


def _connect_host(host: str) -> str:
    """Host to connect to for a server bound to ``host`` (wildcards become loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    return host


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

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
        return args + self.extra_args

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


class _Shutdown(Exception):
    """Raised from the signal handler of :func:`run_foreground` before the server is ready."""


def run_foreground(
    repository: Path,
    *,
    ready_timeout_s: float = 300.0,
    on_ready: Callable[[TritonServer], None] | None = None,
    **server_kwargs: Any,
) -> int:
    """Run a server until Ctrl-C (SIGINT) or SIGTERM, then stop it cleanly.

    Args:
        repository: model repository folder.
        ready_timeout_s: seconds to wait for readiness (every model loaded).
        on_ready: called once the server is ready (e.g. to print a banner).
        server_kwargs: passed to :class:`TritonServer` (ports, host, binary, ...).

    Returns:
        0 after a requested stop; the server's own exit status (non-zero) if it died.

    Raises:
        TritonServerError, TimeoutError: it did not become ready (the log tail is in the
            message; the process is stopped).
    """
    if ready_timeout_s <= 0:
        raise ValueError(f"ready_timeout_s must be > 0 seconds, got {ready_timeout_s}")
    server = TritonServer(repository, **server_kwargs)
    # Until the server is ready a signal aborts the start at once (an exception); after that
    # it only sets ``stop``: an exception raised in the middle of ``Popen.poll`` can leave
    # the Popen's wait lock held, and the ``stop()`` that follows would then block forever.
    stop = threading.Event()
    ready = False

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        if not ready:
            raise _Shutdown
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    old = (
        {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        if in_main
        else {}
    )
    try:
        server.start()
        try:
            server.wait_ready(ready_timeout_s)
            ready = True
            log.info(
                "serving %s | gRPC %s | HTTP %s | metrics %s | Ctrl-C to stop",
                server.repository,
                server.url_grpc,
                server.url_http,
                server.url_metrics,
            )
            if on_ready is not None:
                on_ready(server)
            while server.is_running:
                if stop.wait(0.5):
                    log.info("tritonserver stopped on request")
                    return 0
            code = server.returncode
            log.error(
                "tritonserver exited on its own with status %s; last output:\n%s",
                code,
                server.log_tail(),
            )
            return code if code else 1
        finally:
            server.stop()  # whatever the reason: request, crash, startup error
    except (KeyboardInterrupt, _Shutdown):
        log.info("tritonserver stopped on request")
        return 0
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
