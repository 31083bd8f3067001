"""Which runtime runs a served graph (item tower, user tower, cross-encoder), chosen at load.

Every graph is exported once as ONNX (``<graph>.onnx``, the portable form) and, for GPU
serving, as a ``torch.export`` program (``<graph>.pt2``) and optionally a TensorRT engine
(``<graph>.plan``). :func:`open_graph` opens one of them for a :class:`Runtime`:

* ``device="cpu"``: ONNX Runtime on the CPU (``serving.onnx_session``), fp32: the default
  of :class:`Runtime`. The served repository's default on the CPU is ``engine="openvino"``
  (``serving.openvino_engine``: the same ONNX graph compiled by OpenVINO in ``bf16``,
  ``fp32``, or for the reranker ``int8`` from its quantized IR), measured fastest here
  (README, "Fast path"). Neither needs torch in the serving process.
* ``device="cuda"``: the TensorRT engine when ``<graph>.plan`` exists and the ``tensorrt``
  package imports (``serving.tensorrt_engine``), else the ``torch.export`` program on the GPU
  in ``precision`` (fp16 by default, bf16 or fp32; ``serving.torch_engine``).
* ``device="auto"``: ``cuda`` when torch sees a CUDA device and ``<graph>.pt2`` exists, else
  ``cpu``.

``engine`` overrides the choice of runtime on a device: ``onnxruntime`` (CPU only),
``openvino`` (CPU only), ``torch`` (the ``.pt2`` program on either device: on the CPU in bf16
it uses AMX where the CPU has it) or ``tensorrt`` (GPU only); ``auto`` (the default) picks as
above.

A runtime that cannot be had (no GPU, no ``.pt2`` file, an unknown precision) is refused with
an error that says what is missing and how to get it; nothing falls back silently except
``auto``. Every graph object is called the same way: ``graph(**feeds) -> np.ndarray`` (float32)
with the ONNX input names, so the stages do not know which runtime they hold.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from towers.bundle_contract import (
    context_once_file,
    int8_files,
    onnx_file,
    tensorrt_file,
    torch_program_file,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEVICES",
    "PRECISIONS",
    "Graph",
    "Runtime",
    "GraphRuntimeError",
    "cuda_available",
    "open_graph",
    "runtime_from_params",
]

DEVICES = ("cpu", "cuda", "auto")
ENGINES = ("auto", "onnxruntime", "openvino", "torch", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")

#: ``graph(**feeds) -> float32 array``: what every runtime's graph object is.
Graph = Callable[..., np.ndarray]


class GraphRuntimeError(RuntimeError):
    """The asked-for runtime cannot run here (no GPU, a missing file or package)."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a stage runs its graph.

    ``device``: ``cpu``, ``cuda`` or ``auto`` (module docstring); ``precision``: the compute
    precision (GPU: ``fp16``, ``bf16`` or ``fp32``; OpenVINO on the CPU: ``bf16``, ``fp32`` or
    ``int8``; ONNX Runtime is always fp32);
    ``intra_op_threads``: CPU threads per ONNX Runtime session (>= 1); ``cuda_graphs``:
    replay captured CUDA graphs for repeated input shapes (torch runtime on cuda only; on by
    default: on an H200 it took the reranker's 100 candidates from 2.6 to 1.1 ms, README);
    ``engine``: the runtime (module docstring).
    """

    device: str = "cpu"
    precision: str = "fp16"
    intra_op_threads: int = 1
    cuda_graphs: bool = True
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {self.intra_op_threads}")


def runtime_from_params(params: Mapping[str, str], intra_op_threads: int = 1) -> Runtime:
    """A :class:`Runtime` from a Triton model's ``parameters`` (``device``, ``precision``,
    ``cuda_graphs``, ``engine``; absent: cpu, fp16, on, auto). ``intra_op_threads`` is parsed
    by the caller."""
    return Runtime(
        device=str(params.get("device", "cpu")).strip().lower() or "cpu",
        engine=str(params.get("engine", "auto")).strip().lower() or "auto",
        precision=str(params.get("precision", "fp16")).strip().lower() or "fp16",
        intra_op_threads=intra_op_threads,
        cuda_graphs=str(params.get("cuda_graphs", "1")).strip().lower() in ("1", "true", "yes"),
    )


def cuda_available() -> bool:
    """True when torch is installed and sees at least one CUDA device (imports torch)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def tensorrt_available() -> bool:
    """True when the ``tensorrt`` Python package can be found (it is not imported here)."""
    return importlib.util.find_spec("tensorrt") is not None


def resolve_device(device: str, folder: Path, name: str) -> str:
    """``cpu`` or ``cuda`` for ``device`` (``auto`` picks cuda when a GPU and the torch
    program ``<name>.pt2`` or engine ``<name>.plan`` are there)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device != "auto":
        return device
    has_gpu_form = (folder / torch_program_file(name)).is_file() or (
        folder / tensorrt_file(name)
    ).is_file()
    return "cuda" if has_gpu_form and cuda_available() else "cpu"


def cpu_onnx_path(folder: Path, name: str) -> Path:
    """The ONNX file the CPU runtimes run for graph ``name``: the reranker's context-once form
    when the bundle has it (export/onnx.py; serving/reranker.py reads the form from the
    graph's inputs), else ``<name>.onnx``."""
    if name == "reranker" and (folder / context_once_file(name)).is_file():
        return folder / context_once_file(name)
    return folder / onnx_file(name)


def open_graph(
    folder: Path,
    name: str,
    runtime: Runtime,
    *,
    expected_inputs: tuple[str, ...] | None,
) -> Graph:
    """Open graph ``name`` (``item_tower``, ``user_tower`` or ``reranker``) from ``folder``
    in ``runtime``, refusing a graph whose inputs are not ``expected_inputs`` (``None``: any;
    the caller checks, as the reranker does for its two forms); raises
    :class:`GraphRuntimeError` naming what is missing."""
    folder = Path(folder)
    device = resolve_device(runtime.device, folder, name)
    engine = runtime.engine
    if engine == "auto":
        engine = "onnxruntime" if device == "cpu" else "gpu-auto"
    if engine == "openvino":
        if device != "cpu":
            raise GraphRuntimeError(
                f"{name}: engine openvino runs on the CPU here; on cuda use torch or tensorrt"
            )
        from serving.openvino_engine import OPENVINO_PRECISIONS, OpenVinoGraph, openvino_available

        if not openvino_available():
            raise GraphRuntimeError(
                f"{name}: engine openvino needs the openvino package (pip install openvino)"
            )
        if runtime.precision not in OPENVINO_PRECISIONS:
            raise GraphRuntimeError(
                f"{name}: engine openvino runs {', '.join(OPENVINO_PRECISIONS)} on the CPU, "
                f"not {runtime.precision}"
            )
        path = cpu_onnx_path(folder, name)
        if runtime.precision == "int8":
            path = folder / int8_files(name)[0]
            if not path.is_file():
                raise GraphRuntimeError(
                    f"{name}: precision int8 needs {path}: export with `towerserve export "
                    "--rerank-precision int8` (the reranker only)"
                )
        return OpenVinoGraph(
            path,
            precision=runtime.precision,
            intra_op_threads=runtime.intra_op_threads,
            expected_inputs=expected_inputs,
        )
    if engine == "onnxruntime":
        if runtime.precision == "int8":
            raise GraphRuntimeError(f"{name}: precision int8 runs on engine openvino only")
        if device != "cpu":
            raise GraphRuntimeError(
                f"{name}: engine onnxruntime runs on the CPU only here; on cuda use torch or "
                "tensorrt"
            )
        from serving.onnx_session import OnnxModel

        return OnnxModel(
            cpu_onnx_path(folder, name),
            intra_op_threads=runtime.intra_op_threads,
            expected_inputs=expected_inputs,
        )
    if runtime.precision == "int8":
        raise GraphRuntimeError(f"{name}: precision int8 runs on engine openvino (CPU) only")
    if device == "cuda" and not cuda_available():
        raise GraphRuntimeError(
            f"{name}: device 'cuda' needs torch with a CUDA device, and none is visible here "
            "(install the [gpu] extra on a GPU machine, or serve with device 'cpu')"
        )
    plan = folder / tensorrt_file(name)
    if engine in ("tensorrt", "gpu-auto") and device == "cuda":
        if plan.is_file() and tensorrt_available():
            from serving.tensorrt_engine import TensorRTGraph

            return TensorRTGraph(plan, expected_inputs=expected_inputs)
        if engine == "tensorrt":
            raise GraphRuntimeError(
                f"{name}: engine tensorrt needs {plan} and the tensorrt package "
                f"({'present' if plan.is_file() else 'missing'} / "
                f"{'installed' if tensorrt_available() else 'not installed'}): "
                "`towerserve export --engine tensorrt` on a GPU machine with the [gpu] extra"
            )
        if plan.is_file():
            log.warning("%s: %s is there but tensorrt is not installed: using torch", name, plan)
    elif engine == "tensorrt":
        raise GraphRuntimeError(f"{name}: engine tensorrt runs on device cuda only")
    program = folder / torch_program_file(name)
    if not program.is_file():
        raise GraphRuntimeError(
            f"{program} is missing: the torch runtime runs the torch.export program of each "
            "graph; write it with `towerserve export --device cuda`"
        )
    from serving.torch_engine import TorchGraph

    return TorchGraph(
        program,
        device=device,
        precision=runtime.precision,
        expected_inputs=expected_inputs,
        cuda_graphs=runtime.cuda_graphs,
    )
