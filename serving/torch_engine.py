"""A served graph as a ``torch.export`` program on a GPU (or the CPU), in fp16, bf16 or fp32.

The only serving module that imports torch; ``serving.graphs`` imports it only when a stage is
asked to run on ``cuda`` (the layer contract allows this one exception).

The program (``<graph>.pt2``, written by ``export/torch_program.py``) holds the fp32 graph with
dynamic batch and sequence axes. At load it is moved to the device; each call runs it under
``torch.autocast`` in ``precision`` (matmuls and attention in fp16/bf16, reductions and the
final L2 normalisation as autocast decides) and returns float32 numpy.

CUDA graphs (``cuda_graphs=True``): a small model on a fast GPU spends most of a call launching
kernels, so shapes are padded to buckets (batch to a power of two, at least 8; sequence to a
multiple of 16; other axes to a multiple of 8) and each bucket's forward pass is captured once
and replayed. Padding is zeros: padded tokens have mask 0 and padded history items weight 0,
so real rows are unchanged; padded rows are dropped. At most ``MAX_GRAPHS`` buckets are kept
(the oldest captured is dropped first); batches above ``MAX_GRAPH_BATCH`` run eagerly.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

__all__ = ["MAX_GRAPHS", "TorchGraph", "bucket_shape"]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": None}
#: Captured CUDA graphs kept per model instance (each holds its static buffers).
MAX_GRAPHS = 64
#: Batches above this run eagerly even with CUDA graphs: they are compute-bound (nothing to
#: gain) and each captured bucket keeps its activations' memory.
MAX_GRAPH_BATCH = 256
#: Inputs whose second axis is a token sequence (padded to a multiple of 16).
SEQUENCE_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _round_up(n: int, step: int) -> int:
    return max(step, int(math.ceil(n / step)) * step)


def bucket_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The padded shape of input ``name``: batch (axis 0) to a power of two >= 8, the
    sequence axis of token inputs to a multiple of 16, any other axis >= 1 to a multiple of
    8 except a last axis of float features (kept)."""
    if not shape:
        return shape
    out = [max(8, 1 << max(0, int(shape[0]) - 1).bit_length())]
    for axis, n in enumerate(shape[1:], start=1):
        last = axis == len(shape) - 1
        if name in SEQUENCE_INPUTS and axis == 1:
            out.append(_round_up(int(n), 16))
        elif last and name not in SEQUENCE_INPUTS and len(shape) >= 3:
            out.append(int(n))  # e.g. the vector dimension of history_vectors
        elif name == "has_query":
            out.append(int(n))
        else:
            out.append(_round_up(int(n), 8))
    return tuple(out)


class TorchGraph:
    """``graph(**feeds) -> float32 numpy`` over a ``torch.export`` program.

    ``device``: ``cuda`` (or ``cuda:N``, or ``cpu`` for tests); ``precision``: ``fp16``,
    ``bf16`` or ``fp32``; ``expected_inputs``: the input names the caller feeds (a program
    with others is refused at load); ``cuda_graphs``: capture and replay (module docstring).
    """

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cuda",
        precision: str = "fp16",
        expected_inputs: tuple[str, ...] | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"torch program {path} is missing")
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        self.path = path
        self.device = torch.device(device)
        self.dtype = DTYPES[precision]
        self.precision = precision
        program = torch.export.load(str(path))
        self.input_names = tuple(
            spec.arg.name
            for spec in program.graph_signature.input_specs
            if spec.kind == torch.export.graph_signature.InputKind.USER_INPUT
        )
        if expected_inputs is not None and set(expected_inputs) != set(self.input_names):
            raise ValueError(
                f"{path} has inputs {list(self.input_names)}, expected {list(expected_inputs)}"
            )
        if self.device.type != "cpu":
            try:
                from torch.export.passes import move_to_device_pass
            except ImportError:  # older torch: move the unflattened module instead
                self.module = program.module().to(self.device)
            else:
                self.module = move_to_device_pass(program, self.device).module()
        else:
            self.module = program.module()
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self._graphs: OrderedDict[tuple, tuple] = OrderedDict()
        log.info(
            "opened %s on %s in %s%s",
            path,
            self.device,
            precision,
            " with CUDA graphs" if self.cuda_graphs else "",
        )

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        """Run the graph on ``feeds`` (input name -> array); float32 output, batch first."""
        return self.run(feeds)

    def _forward(self, args: list[torch.Tensor]) -> torch.Tensor:
        if self.dtype is None:
            return self.module(*args)
        with torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False):
            return self.module(*args)

    def _tensor(self, name: str, arr: np.ndarray) -> torch.Tensor:
        arr = np.ascontiguousarray(arr)
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on ``feeds``; raises ``KeyError`` naming a missing input."""
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise KeyError(f"{self.path.name} needs inputs {missing}")
        arrays = [np.asarray(feeds[n]) for n in self.input_names]
        with torch.inference_mode():
            if self.cuda_graphs and int(arrays[0].shape[0]) <= MAX_GRAPH_BATCH:
                return self._replay(arrays)
            out = self._forward([self._tensor(n, a) for n, a in zip(self.input_names, arrays)])
            return out.float().cpu().numpy()

    def _replay(self, arrays: list[np.ndarray]) -> np.ndarray:
        batch = int(arrays[0].shape[0])
        shapes = tuple(bucket_shape(n, a.shape) for n, a in zip(self.input_names, arrays))
        key = (shapes, tuple(a.dtype.str for a in arrays))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(shapes, arrays)
        else:
            self._graphs.move_to_end(key)
        graph, static_in, static_out = entry
        for buf, arr in zip(static_in, arrays):
            padded = np.zeros(buf.shape, dtype=arr.dtype)
            padded[tuple(slice(0, n) for n in arr.shape)] = arr
            buf.copy_(torch.from_numpy(padded), non_blocking=True)
        graph.replay()
        return static_out[:batch].float().cpu().numpy()

    def _capture(self, shapes: tuple, arrays: list[np.ndarray]) -> tuple:
        static_in = [
            torch.zeros(shape, dtype=torch.from_numpy(a[:0]).dtype, device=self.device)
            for shape, a in zip(shapes, arrays)
        ]
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up runs allocate what the captured run reuses
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        key = (shapes, tuple(a.dtype.str for a in arrays))
        self._graphs[key] = (graph, static_in, static_out)
        if len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        log.info("%s: captured a CUDA graph for input shapes %s", self.path.name, shapes)
        return self._graphs[key]
