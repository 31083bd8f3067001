"""Triton model ``user_tower``: query tokens + recent items -> user vector
(logic: serving.user_tower)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from serving.backend import (
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
from serving.stage_metrics import report_backend
from serving.user_tower import UserEncoder


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        params = parameters(config)
        self.dtypes = output_dtypes(config)
        self.stage = UserEncoder.from_dir(
            version_dir(args),
            model_version=params.get("model_version"),
            runtime=runtime_from_params(params, int_parameter(params, "intra_op_threads", 1)),
        )
        self.backend_metric = report_backend(pb_utils, "user_tower", self.stage.backend)
        warm_up(self.stage, model="user_tower")

    def execute(self, requests: list) -> list:
        return respond(pb_utils, requests, self.stage.infer, self.dtypes, model="user_tower")
