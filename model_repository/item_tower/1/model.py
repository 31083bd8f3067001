"""Triton model ``item_tower``: item text (and optional item id) -> item vector; one tower run
per dynamic batch (logic: serving.item_tower)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from serving import stage_params
from serving.backend import (
    log_to_triton,
    model_config,
    output_dtypes,
    parameters,
    request_tensors,
    responses_for,
    version_dir,
    warm_up,
)
from serving.stage_metrics import report_backend
from serving.versions import version_parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        params = version_parameters(version_dir(args), parameters(config))
        self.dtypes = output_dtypes(config)
        self.stage = stage_params.item_encoder(
            version_dir(args), params, batch_size=max(1, int(config.get("max_batch_size", 64)))
        )
        self.backend_metric = report_backend(pb_utils, "item_tower", self.stage.backend)
        warm_up(self.stage, model="item_tower")

    def execute(self, requests: list) -> list:
        results = self.stage.embed_requests([request_tensors(r) for r in requests])
        return responses_for(pb_utils, results, self.dtypes, model="item_tower")
