"""Triton model ``user_tower``: query tokens + recent items -> user vector
(logic: serving.user_tower)."""

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
from serving.stage_metrics import report_backend


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        params = parameters(config)
        self.dtypes = output_dtypes(config)
        self.stage = stage_params.user_encoder(version_dir(args), params)
        self.backend_metric = report_backend(pb_utils, "user_tower", self.stage.backend)
        warm_up(self.stage, model="user_tower")

    def execute(self, requests: list) -> list:
        return respond(pb_utils, requests, self.stage.infer, self.dtypes, model="user_tower")
