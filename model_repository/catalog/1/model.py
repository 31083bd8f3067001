"""Triton model ``catalog``: add, update and delete items while serving
(logic: serving.item_changes)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from serving.backend import (
    log_to_triton,
    model_config,
    output_dtypes,
    parameters,
    respond,
    version_dir,
    warm_up,
)
from serving.item_changes import catalog_stage
from serving.versions import version_parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        self.dtypes = output_dtypes(config)
        self.stage = catalog_stage(
            version_dir(args), version_parameters(version_dir(args), parameters(config))
        )
        warm_up(self.stage, model="catalog")

    def execute(self, requests: list) -> list:
        return respond(pb_utils, requests, self.stage.infer, self.dtypes, model="catalog")

    def finalize(self) -> None:
        self.stage.changes.close()
