"""TensorRT engines (``<graph>.plan``) built from the exported ONNX graphs, FP16.

UNVERIFIED on this project's machines: the ``tensorrt`` package is not installable on the CPU
machines and is absent from the lent GPU machines, whose transfer limit (64 MiB) is far below
its wheels' size (README, "GPU"). :func:`require_tensorrt` says so clearly; the tests that need
it skip with that reason. The builder follows the TensorRT 10 Python API: an explicit-batch
network parsed from ONNX, one optimisation profile (batch ``1..max_batch``, sequence
``2..max_seq``, history ``1..max_history``, optimum at ``opt_*``), the FP16 flag.

INT8 is not built: TensorRT 10 deprecates implicit (calibrator) INT8, and explicit INT8 needs
Q/DQ nodes in the ONNX graph (e.g. NVIDIA ModelOpt), which no machine here can check.
``check_engine_parity`` compares an engine with ONNX Runtime on the CPU, the gate used for
every other runtime.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TensorRTUnavailable", "build_engine", "check_engine_parity", "require_tensorrt"]

#: Largest absolute difference from ONNX Runtime fp32 accepted for an FP16 engine: the
#: towers' outputs are unit vectors, the reranker's logits are of order 1-10.
FP16_PARITY_TOL = 5e-2


class TensorRTUnavailable(RuntimeError):
    """The ``tensorrt`` package (or a GPU) is not there."""


def require_tensorrt() -> None:
    """Raise :class:`TensorRTUnavailable`, saying what to install, unless TensorRT and a CUDA
    device are both usable."""
    if importlib.util.find_spec("tensorrt") is None:
        raise TensorRTUnavailable(
            "the tensorrt package is not installed: on a machine with an NVIDIA GPU, install "
            "the [gpu] extra (`pip install -e '.[gpu]'`, which brings tensorrt-cu12) or use "
            "the NGC Triton container; `towerserve export --device cuda` without --engine "
            "tensorrt serves the torch programs instead"
        )
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailable("TensorRT engines are built on the GPU they run on: none here")


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    *,
    max_batch: int = 256,
    max_seq: int = 128,
    max_history: int = 64,
    opt_batch: int = 16,
    opt_seq: int = 32,
) -> Path:
    """Build an FP16 engine for ``onnx_path`` and write it to ``plan_path``."""
    require_tensorrt()
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {'; '.join(errors)}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = list(tensor.shape)
        lo, opt, hi = [], [], []
        for axis, size in enumerate(shape):
            if size != -1:
                lo.append(size), opt.append(size), hi.append(size)
            elif axis == 0:
                lo.append(1), opt.append(opt_batch), hi.append(max_batch)
            elif tensor.name.startswith("history"):
                lo.append(1), opt.append(8), hi.append(max_history)
            else:
                lo.append(2), opt.append(opt_seq), hi.append(max_seq)
        profile.set_shape(tensor.name, lo, opt, hi)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine for {onnx_path}")
    plan_path.write_bytes(bytes(serialized))
    log.info("TensorRT FP16 engine %s (%d bytes)", plan_path, plan_path.stat().st_size)
    return plan_path


def check_engine_parity(
    onnx_path: Path,
    run_engine: Callable[[dict[str, np.ndarray]], np.ndarray],
    feeds: dict[str, np.ndarray],
    tol: float = FP16_PARITY_TOL,
) -> float:
    """Largest absolute difference between ``run_engine(feeds)`` (e.g. the ``run`` of
    ``serving.tensorrt_engine.TensorRTGraph``) and ONNX Runtime (CPU, fp32) on ``feeds``;
    raises ``RuntimeError`` above ``tol``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)[0]
    got = np.asarray(run_engine(feeds), np.float32)
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= tol:
        raise RuntimeError(f"{onnx_path.name}: engine differs from ONNX by {diff:.2e} > {tol}")
    return diff
