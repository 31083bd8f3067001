"""Triton model ``tokenizer``: QUERY text -> user-tower token ids
(logic: serving.tokenizer)."""

from __future__ import annotations

import triton_python_backend_utils as pb_utils

from serving.backend import (
    log_to_triton,
    model_config,
    output_dtypes,
    respond,
    version_dir,
    warm_up,
)
from serving.tokenizer import QueryTokenizer


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        log_to_triton(pb_utils)
        self.dtypes = output_dtypes(model_config(args))
        self.stage = QueryTokenizer.from_dir(version_dir(args))
        warm_up(self.stage, model="tokenizer")

    def execute(self, requests: list) -> list:
        return respond(pb_utils, requests, self.stage.infer, self.dtypes, model="tokenizer")
