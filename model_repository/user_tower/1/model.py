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
    single_threaded_blas,
    version_dir,
    warm_up,
)
from serving.stage_metrics import report_backend
from serving.versions import served_by, version_parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        single_threaded_blas()  # the history's numpy work is tiny matmuls (serving.backend)
        config = model_config(args)
        params = version_parameters(version_dir(args), parameters(config))
        self.dtypes = output_dtypes(config)
        self.stage = stage_params.user_encoder(version_dir(args), params)
        self.backend_metric = report_backend(pb_utils, "user_tower", self.stage.backend)
        warm_up(self.stage, model="user_tower")
        self.infer = served_by(self.stage.infer, version_dir(args))  # which version answered

    def execute(self, requests: list) -> list:
        return respond(pb_utils, requests, self.infer, self.dtypes, model="user_tower")
