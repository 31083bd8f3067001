"""Finding ``tritonserver`` and its python backend: the ``nvidia-pytriton`` wheel, the binary,
and a ``--backend-directory`` built from the wheel for the running Python version.

Order for the binary: an explicit path, else the one inside the installed ``nvidia-pytriton``
wheel (``pytriton/tritonserver/bin/tritonserver``), else ``tritonserver`` on ``PATH`` (e.g.
the NGC container). The python-backend directory (``<dir>/python/`` with
``libtriton_python.so``, ``triton_python_backend_utils.py`` and the
``triton_python_backend_stub`` built for the *running* Python minor version) is built once in
a cache folder. Linux x86_64 only (that is what the wheel ships).
"""

from __future__ import annotations

import contextlib
import filecmp
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

#: Files of the python backend, relative to ``pytriton/tritonserver/backends/python/``.
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
STUB_NAME = "triton_python_backend_stub"


class TritonServerError(RuntimeError):
    """The server could not be found, prepared, started or made ready."""


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
