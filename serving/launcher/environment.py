"""The environment ``tritonserver`` and its python backend stubs run with.

- ``LD_LIBRARY_PATH``: the running interpreter's ``LIBDIR`` (``libpython3.X.so``) and the
  wheel's ``nvidia_pytriton.libs/`` (the stub copied out of the wheel loses its ``$ORIGIN``
  RPATH);
- the stub embeds Python with an *isolated* ``PyConfig``: it ignores ``PYTHONPATH`` and
  ``PYTHONHOME`` and finds its prefix by looking up ``python3`` on ``PATH``. With the system
  ``/usr/bin/python3`` first on ``PATH`` it picks the system stdlib and dies with
  ``No module named '_struct'``. So a tiny *stub environment* is built (a ``pyvenv.cfg``
  pointing at the running base interpreter, ``bin/python3`` and a ``.pth`` file listing the
  venv's site-packages plus the project root) and its ``bin/`` goes first on ``PATH``;
  ``model.py`` files can then ``import numpy``, ``import serving`` and ``import towers``.
  ``PYTHONPATH`` is set as well, for any plain Python subprocess;
- the server runs with its working directory set to that stub environment (the
  ``TOWERSERVE_STUB_ENV`` variable names it), because the stub puts ``''`` (the working
  directory) first on ``sys.path``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import site
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from serving.launcher.binary import _python_tag, default_cache_dir, is_wheel_binary, wheel_libs_dir

log = logging.getLogger(__name__)


def project_root() -> Path:
    """The folder that holds the ``serving`` package (so ``import serving``/``towers`` work)."""
    return Path(__file__).resolve().parents[2]  # serving/launcher/environment.py


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
