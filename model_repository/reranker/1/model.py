"""Triton model ``reranker``: cross-encoder reranking within the request's budget, blended
(logic: serving.reranker)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from serving import stage_params
from serving.backend import (
    log_to_triton,
    model_config,
    output_dtypes,
    parameters,
    respond,
    version_dir,
    warm_up,
)
from serving.item_changes import RerankerDelta
from serving.stage_metrics import report_backend
from serving.versions import served_by, version_parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        params = version_parameters(version_dir(args), parameters(config))
        self.dtypes = output_dtypes(config)
        self.stage = stage_params.reranker(version_dir(args), params)
        self.backend_metric = report_backend(pb_utils, "reranker", self.stage.backend)
        warm_up(self.stage, model="reranker")
        self.infer = served_by(self.stage.infer, version_dir(args))
        # Items changed while serving (serving.item_changes): their tokens and titles.
        self.items_delta = RerankerDelta.attach(self.stage, version_dir(args), params)

    def execute(self, requests: list) -> list:
        self.items_delta.refresh()
        return respond(pb_utils, requests, self.infer, self.dtypes, model="reranker")
