"""``torch.export`` programs of the towers and the reranker: the GPU form of each graph.

``export_program`` writes ``<graph>.pt2`` (fp32 weights, dynamic batch, sequence and history
axes) that ``serving/torch_engine.py`` loads onto a GPU and runs in fp16/bf16 under autocast.
``torch.export`` replaces ``torch.jit.trace`` (deprecated in this torch). A program is read
by the torch version that wrote it or a newer one: export on the serving machine's torch.
``check_program_parity`` reloads the file and compares it with the module in fp32 on the CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.onnx import PARITY_TOL, ParityError, io_spec, sample_inputs

log = logging.getLogger(__name__)

__all__ = ["MAX_BATCH", "MAX_SEQ", "check_program_parity", "export_program"]

#: Largest batch and sequence the programs accept (the towers truncate far below this).
MAX_BATCH = 8192
MAX_SEQ = 512
MAX_HISTORY = 1024


def _dynamic_shapes(kind: str) -> dict[str, dict[int, torch.export.Dim]]:
    names, _, axes = io_spec(kind)
    dims = {
        "batch": torch.export.Dim("batch", min=1, max=MAX_BATCH),
        "seq": torch.export.Dim("seq", min=2, max=MAX_SEQ),
        "history": torch.export.Dim("history", min=1, max=MAX_HISTORY),
    }
    return {n: {axis: dims[label] for axis, label in axes[n].items()} for n in names}


def export_program(kind: str, module: nn.Module, path: Path) -> Path:
    """Write ``module`` (``item_tower``, ``user_tower`` or ``reranker``) as a ``torch.export``
    program to ``path`` (atomically) and return it."""
    module = module.float().eval()
    inputs = sample_inputs(kind, module)
    names, _, _ = io_spec(kind)
    dynamic = _dynamic_shapes(kind)
    with torch.no_grad():
        program = torch.export.export(
            module, inputs, dynamic_shapes=tuple(dynamic[n] for n in names)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.pt2")
    torch.export.save(program, str(tmp))
    os.replace(tmp, path)
    return path


def check_program_parity(
    kind: str, module: nn.Module, path: Path, tol: float = PARITY_TOL
) -> float:
    """Largest absolute difference between the saved program and the module (fp32, CPU) on
    inputs of another shape than the export's; raises :class:`ParityError` above ``tol``."""
    module = module.float().eval()
    inputs = sample_inputs(kind, module, batch=5, seq=19)
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        expected = module(*inputs).numpy()
        got = loaded(*inputs).numpy()
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tol:
        raise ParityError(f"{path.name}: program differs from PyTorch by {diff:.2e} > {tol:.0e}")
    log.info("%s parity: max abs diff %.2e", path.name, diff)
    return diff
