"""The serving stages' import rule, checked at run time as well as by ``lint-imports``.

The stages run inside Triton's Python stubs: importing every ``serving`` module in a fresh
interpreter must load neither torch nor transformers nor the ``export`` or ``client`` packages
(an external package could pull them in where the static import graph cannot see it). A module
that opts in to torch lazily (the planned ``serving/torch_engine.py``) must do so inside a
function, so importing it still loads no torch.
"""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "export", "client")

PROGRAM = """
import importlib, json, pkgutil, sys
import serving
for info in pkgutil.iter_modules(serving.__path__):
    importlib.import_module("serving." + info.name)
print(json.dumps(sorted(m for m in {forbidden!r} if m in sys.modules)))
"""


def test_importing_every_serving_module_loads_no_forbidden_package() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
