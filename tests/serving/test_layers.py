"""The serving stages' import rule, checked at run time as well as by ``lint-imports``.

The stages run inside Triton's Python stubs: importing every ``serving`` module in a fresh
interpreter must load neither torch nor transformers nor the ``export`` or ``client`` packages
(an external package could pull them in where the static import graph cannot see it). The two
GPU runtime modules (``serving/torch_engine.py``, ``serving/tensorrt_engine.py``) are the
exception: ``serving.graphs`` imports them only for a graph asked to run on torch or TensorRT;
every other module that touches torch does so inside a function.
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "export", "client")
#: Imported only on the GPU path (serving.graphs.open_graph), where torch is the point.
GPU_RUNTIME_MODULES = ("torch_engine", "tensorrt_engine")

PROGRAM = """
import importlib, json, pkgutil, sys
import serving
for info in pkgutil.iter_modules(serving.__path__):
    if info.name not in {gpu!r}:
        importlib.import_module("serving." + info.name)
print(json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def test_importing_every_serving_module_loads_no_forbidden_package() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(forbidden=FORBIDDEN, gpu=GPU_RUNTIME_MODULES)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_cpu_stages_load_no_gpu_runtime(untrained_bundle) -> None:
    """Opening every stage on the CPU (the default) loads neither torch nor the GPU modules."""
    program = (
        "import sys, json\n"
        "from serving.pipeline import InProcessRecommend\n"
        "from serving.item_tower import ItemEncoder\n"
        f"InProcessRecommend({str(untrained_bundle)!r})('red shirt', k=3)\n"
        f"ItemEncoder.from_dir({str(untrained_bundle)!r}).embed(['red shirt'])\n"
        "print(json.dumps(sorted(m for m in ('torch', 'serving.torch_engine', "
        "'serving.tensorrt_engine') if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
