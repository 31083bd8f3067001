"""Triton model ``reranker``: cross-encoder reranking within the request's budget, blended
(logic: serving.reranker)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from serving.backend import (
    float_parameter,
    int_parameter,
    log_to_triton,
    model_config,
    output_dtypes,
    parameters,
    respond,
    version_dir,
    warm_up,
)
from serving.graphs import runtime_from_params
from serving.reranker import Reranker
from serving.stage_metrics import report_backend


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        params = parameters(config)
        self.dtypes = output_dtypes(config)
        self.stage = Reranker.from_dir(
            version_dir(args),
            model_version=params.get("model_version"),
            chunk_size=int_parameter(params, "chunk_size", 16),
            max_k=int_parameter(params, "max_k", 0, low=0) or None,
            runtime=runtime_from_params(params, int_parameter(params, "intra_op_threads", 1)),
            reserve_ms=float_parameter(params, "reserve_ms", 1.0),
        )
        self.backend_metric = report_backend(pb_utils, "reranker", self.stage.backend)
        warm_up(self.stage, model="reranker")

    def execute(self, requests: list) -> list:
        return respond(pb_utils, requests, self.stage.infer, self.dtypes, model="reranker")
