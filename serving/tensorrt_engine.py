"""A served graph as a TensorRT engine (``<graph>.plan``), run with torch CUDA buffers.

UNVERIFIED on this project's machines: the ``tensorrt`` package is neither installable on the
CPU machines nor present on the lent GPU machines (README, "GPU"). The code follows the
TensorRT 10 Python API (named I/O tensors, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) and is imported only when a ``.plan`` file is served on ``cuda``.

An engine built by ``export/tensorrt.py`` has one optimisation profile covering batch 1..max
and sequence 2..max; a call outside it is refused by TensorRT with an error naming the shape.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["TensorRTGraph"]


class TensorRTGraph:
    """``graph(**feeds) -> float32 numpy`` over a serialized TensorRT engine on ``cuda``."""

    def __init__(self, path: Path, *, expected_inputs: tuple[str, ...] | None = None) -> None:
        import tensorrt as trt

        path = Path(path)
        self.path = path
        self._trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path} is not a TensorRT engine this TensorRT can load")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = tuple(n for n in names if self.engine.get_tensor_mode(n) == mode)
        self.output_names = tuple(n for n in names if self.engine.get_tensor_mode(n) != mode)
        if expected_inputs is not None and set(expected_inputs) != set(self.input_names):
            raise ValueError(
                f"{path} has inputs {list(self.input_names)}, expected {list(expected_inputs)}"
            )
        log.info("opened TensorRT engine %s (inputs %s)", path, list(self.input_names))

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        return self.run(feeds)

    def _np_dtype(self, name: str) -> np.dtype:
        return np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the engine on ``feeds`` (input name -> array); its first output as float32."""
        keep = []  # device buffers must outlive the asynchronous run
        for name in self.input_names:
            arr = np.ascontiguousarray(np.asarray(feeds[name]).astype(self._np_dtype(name)))
            tensor = torch.from_numpy(arr).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(arr.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        out_name = self.output_names[0]
        shape = tuple(self.context.get_tensor_shape(out_name))
        out = torch.from_numpy(np.zeros(shape, self._np_dtype(out_name))).cuda()
        self.context.set_tensor_address(out_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed")
        stream.synchronize()
        return out.float().cpu().numpy()
