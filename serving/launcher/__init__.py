"""Launching the real NVIDIA ``tritonserver`` without Docker, one job per module:

- :mod:`.binary`: finding the ``nvidia-pytriton`` wheel, the binary and its python backend;
- :mod:`.environment`: the environment the server and its Python stubs need;
- :mod:`.ports`: free ports and connect addresses;
- :mod:`.control`: who may use the control APIs (loopback, or a key for another host);
- :mod:`.process`: :class:`~serving.launcher.process.TritonServer`, one server process;
- :mod:`.foreground`: :func:`~serving.launcher.foreground.run_foreground` (``towerserve serve``).

The public names are re-exported by :mod:`serving.triton`, the import path callers use.
"""
