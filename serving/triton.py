"""Launch the real NVIDIA ``tritonserver`` 2.51 (from the ``nvidia-pytriton`` wheel), no Docker.

This module is the public import path; the code lives in :mod:`serving.launcher`, one job per
module (``binary``, ``environment``, ``ports``, ``process``, ``foreground``).

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

from serving.launcher.binary import (
    PYTHON_BACKEND_FILES,
    STUB_NAME,
    TritonServerError,
    build_python_backend,
    default_cache_dir,
    find_tritonserver,
    is_wheel_binary,
    pytriton_root,
    wheel_libs_dir,
)
from serving.launcher.environment import (
    build_server_env,
    build_stub_env,
    default_python_paths,
    project_root,
)
from serving.launcher.foreground import run_foreground
from serving.launcher.ports import free_port, free_ports
from serving.launcher.process import LOG_TAIL_BYTES, ModelControlMode, TritonServer

__all__ = [
    "LOG_TAIL_BYTES",
    "PYTHON_BACKEND_FILES",
    "STUB_NAME",
    "ModelControlMode",
    "TritonServer",
    "TritonServerError",
    "build_python_backend",
    "build_server_env",
    "build_stub_env",
    "default_cache_dir",
    "default_python_paths",
    "find_tritonserver",
    "free_port",
    "free_ports",
    "is_wheel_binary",
    "project_root",
    "pytriton_root",
    "run_foreground",
    "wheel_libs_dir",
]
