"""OpenVINO runtime for the served graphs on the CPU: the exported ONNX graph, compiled in bf16
(AMX on CPUs that have it) or fp32.

OpenVINO reads ``<graph>.onnx`` as it is (no second export). Compiled with
``INFERENCE_PRECISION_HINT`` (``bf16`` or ``f32``), ``PERFORMANCE_HINT=LATENCY``, one stream
and ``intra_op_threads`` inference threads. Thread pinning is off: a Triton server runs each
model instance in its own process, and pinned threads of two processes would share a core while
another idles. Shapes stay dynamic (batch and sequence length); OpenVINO keeps compiled kernels
for shapes it has seen, so the first call at a new shape is slower (warm-up covers the common
ones).

Measured on this project's 2-core Sapphire Rapids machine (benchmarks/model_bench.py, README):
bf16 is the fastest CPU runtime for the reranker and the towers, and within the quality gate
of fp32 (NDCG@10, Recall@100). bf16 logits are not bit-equal to fp32 ones (about 1e-2 apart):
compare on rankings, not on 1e-4 parity.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["OPENVINO_PRECISIONS", "OpenVinoGraph", "cpu_has_bf16", "openvino_available"]

#: Precision names (serving.graphs) -> OpenVINO's ``INFERENCE_PRECISION_HINT``. ``int8`` is
#: a quantized graph (``<graph>.int8.xml``, client/int8_export.py) whose matrix
#: multiplications run in int8 and the rest in bf16.
OPENVINO_PRECISIONS = {"bf16": "bf16", "fp32": "f32", "int8": "bf16"}


def openvino_available() -> bool:
    """True when the ``openvino`` package can be found (it is not imported here)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def cpu_has_bf16() -> bool:
    """True when OpenVINO's CPU plugin computes in bf16 natively here (AVX512-BF16 or AMX)."""
    import openvino as ov

    try:
        caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # an exotic build without the CPU plugin
        return False
    return "BF16" in caps


class OpenVinoGraph:
    """One compiled graph with a single output; call it with its inputs by name.

    ``path``: the ``.onnx`` file (or, for ``int8``, the quantized ``.int8.xml`` IR);
    ``precision``: ``bf16``, ``fp32`` or ``int8``; ``intra_op_threads``:
    inference threads (>= 1); ``expected_inputs``: the input names the caller will feed (a
    graph with other inputs is refused at load, naming both lists). Not thread-safe: one
    infer request is reused, as one Triton model instance runs one request at a time.
    """

    def __init__(
        self,
        path: Path,
        *,
        precision: str = "bf16",
        intra_op_threads: int = 1,
        expected_inputs: tuple[str, ...] | None = None,
    ) -> None:
        import openvino as ov

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"graph {path} is missing")
        if precision not in OPENVINO_PRECISIONS:
            raise ValueError(
                f"OpenVINO on the CPU runs {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}"
            )
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        core = ov.Core()
        model = core.read_model(str(path))
        self.path = path
        self.precision = precision
        self.input_names = tuple(p.get_any_name() for p in model.inputs)
        if expected_inputs is not None and set(expected_inputs) != set(self.input_names):
            raise ValueError(
                f"{path} has inputs {list(self.input_names)}, expected {list(expected_inputs)}"
            )
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(intra_op_threads),
            "ENABLE_CPU_PINNING": "NO",
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        log.info("opened %s in OpenVINO %s (%d threads)", path, precision, intra_op_threads)

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        """Run the graph on ``feeds`` (input name -> array); its first output as float32."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on ``feeds`` (input name -> array); its first output as float32."""
        self.request.infer({name: np.ascontiguousarray(v) for name, v in feeds.items()})
        return np.array(self.request.get_output_tensor(0).data, dtype=np.float32, copy=True)
