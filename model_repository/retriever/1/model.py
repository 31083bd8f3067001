"""Triton model ``retriever``: FAISS top candidates for a user vector
(logic: serving.retriever)."""

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
from serving.bundle import load_manifest
from serving.item_changes import optional_watcher
from serving.item_metrics import IndexMetrics
from serving.stage_metrics import report_backend
from serving.versions import served_by, version_parameters


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        config = model_config(args)
        params = version_parameters(version_dir(args), parameters(config))
        self.dtypes = output_dtypes(config)
        # Raises (the model does not load) for an index of another model version.
        self.stage = stage_params.retriever(version_dir(args), params)
        self.backend_metric = report_backend(pb_utils, "retriever", self.stage.backend)
        # Item changes between rebuilds (serving.item_changes): polled, searched beside.
        self.stage.delta = optional_watcher(version_dir(args), params, dim=self.stage.dim)
        manifest = load_manifest(version_dir(args))
        self.index_metrics = IndexMetrics(
            pb_utils,
            self.stage,
            model_version=manifest.model_version,
            created_at=manifest.created_at,
        )
        warm_up(self.stage, model="retriever")
        # Refuses a user vector of another model version (a mixed-version request).
        self.infer = served_by(self.stage.infer, version_dir(args), require_same_model=True)

    def execute(self, requests: list) -> list:
        responses = respond(pb_utils, requests, self.infer, self.dtypes, model="retriever")
        self.index_metrics.update()
        return responses
