"""ONNX Runtime sessions for the served graphs (CPU), opened the same way by every stage.

Each Triton model instance owns one session with ``intra_op_threads`` threads (default 1:
on a small CPU several model instances and stages share the cores, so one thread per session
avoids oversubscription), sequential execution and every graph optimisation. A graph saved
with an external-data side file (``<name>.onnx.data``) loads as long as the side file sits
next to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

__all__ = ["OnnxModel", "session_options"]


def session_options(intra_op_threads: int = 1) -> ort.SessionOptions:
    """Options: ``intra_op_threads`` (>= 1) threads, sequential, ``ORT_ENABLE_ALL``."""
    if intra_op_threads < 1:
        raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class OnnxModel:
    """A CPU session over one graph with a single output; call it with its inputs by name.

    ``path`` is the ``.onnx`` file. ``expected_inputs`` (optional) are the input names the
    caller will feed; a graph with other inputs is refused at load, naming both lists.
    """

    def __init__(
        self,
        path: Path,
        *,
        intra_op_threads: int = 1,
        expected_inputs: tuple[str, ...] | None = None,
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX graph {path} is missing")
        self.path = path
        self.session = ort.InferenceSession(
            str(path),
            sess_options=session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
        self.input_names = tuple(i.name for i in self.session.get_inputs())
        self.output_name = self.session.get_outputs()[0].name
        if expected_inputs is not None and set(expected_inputs) != set(self.input_names):
            raise ValueError(
                f"{path} has inputs {list(self.input_names)}, expected {list(expected_inputs)}"
            )
        log.info("opened %s (%d intra-op threads)", path, intra_op_threads)

    def __call__(self, **feeds: np.ndarray) -> np.ndarray:
        """Run the graph on ``feeds`` (input name -> array) and return its first output."""
        return self.run(feeds)

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the graph on ``feeds`` (input name -> array) and return its first output."""
        return self.session.run([self.output_name], dict(feeds))[0]
