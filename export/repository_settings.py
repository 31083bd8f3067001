"""Settings of a Triton repository written by ``export/repository.py``, and its error."""

from __future__ import annotations

from dataclasses import dataclass

from towers.features import LONG_HISTORY, MAX_ITEM_TOKENS

__all__ = ["CPU_ENGINES", "RERANK_ITEM_TOKENS", "RepositoryError", "RepositorySettings"]

#: Item-text tokens the served cross-encoder reads per pair by default. Measured on the demo
#: data (benchmarks/rerank_levers.py, README "Fast path on the CPU"): cutting the item text
#: from its full length (median 27, at most 41 tokens) to 24 raised pairs/s 1.5x at -0.002
#: NDCG@10 (gate: -0.005); 16 tokens gained only 1.1x more. 23, not 24, since the
#: context-once graph (serving/reranker.py): an item's tokens plus its [SEP] then fill a
#: width of 24, a multiple of the padding step, where 24 + 1 padded to 32 (1.17x more pairs/s
#: in the served stage, NDCG@10 0.9718 vs 0.9719 with all 100 scored, 300 demo queries).
RERANK_ITEM_TOKENS = 23

#: Runtimes of the graphs on the CPU (serving/graphs.py).
CPU_ENGINES = ("openvino", "onnxruntime")


class RepositoryError(RuntimeError):
    """The repository cannot be written (bad arguments, templates or target folder)."""


@dataclass(frozen=True)
class RepositorySettings:
    """Serving settings written into the configs.

    ``max_k``: largest K a request may ask for; ``n_candidates``: retriever depth;
    ``chunk_size``: candidates per cross-encoder call; ``item_batch``: the item tower's
    ``max_batch_size`` (rows per dynamic batch; 256: a re-embedding client's requests of 256
    rows ran at 78-91% of in-process against 74-78% for 64,
    benchmarks/results/embed_engines_2026-11-29.md); ``intra_op_threads``: ONNX Runtime threads per
    session; ``reserve_ms``: part of each request's budget the reranker keeps for answering;
    ``warmup``: give each served model a Triton ``model_warmup`` sample (module docstring);
    ``device``: ``cpu`` (ONNX Runtime, faiss-cpu) or ``cuda`` (the graphs' torch programs or
    TensorRT engines and the index on GPU 0, ``KIND_GPU`` instances; serving/graphs.py);
    ``precision``: the GPU compute precision (fp16, bf16, fp32); ``cuda_graphs``: replay
    captured CUDA graphs in the towers and the reranker; ``cpu_engine``: the runtime of the
    graphs on the CPU (``openvino`` or ``onnxruntime``; serving/graphs.py); ``cpu_precision``:
    its precision (``bf16`` or ``fp32``; onnxruntime is always fp32; OpenVINO computes bf16 on
    CPUs with AVX512-BF16 or AMX and falls back to fp32 elsewhere); ``rerank_threads``: CPU
    threads of the cross-encoder (the other graphs take ``intra_op_threads``);
    ``rerank_precision``: the cross-encoder's precision when it differs from ``cpu_precision``
    (``int8``: its quantized OpenVINO IR, which the bundle must hold; "" = ``cpu_precision``);
    ``rerank_max_call``: most candidates the cross-encoder scores in one call (whole chunks of
    ``chunk_size``, as many as the budget allows; serving/reranker.py);
    ``rerank_item_tokens``: item-text tokens per cross-encoder pair (1 to ``MAX_ITEM_TOKENS``;
    :data:`RERANK_ITEM_TOKENS`); ``rerank_instances``: Triton instances of the cross-encoder
    (each its own process with ``rerank_threads`` threads; requests queue for a free one);
    ``rerank_depth``: most candidates cross-scored per request (0: all the budget allows);
    ``item_instances``: Triton instances of the item tower on the CPU (each its own process
    with ``intra_op_threads`` threads): a server that re-embeds catalogs (``towerserve embed
    --engine triton``) runs one per core, which kept it at 85-91% of the in-process engine
    against 62-78% for one (benchmarks/results/embed_engines_2026-11-29.md);
    ``user_engine``: the CPU runtime of the user tower (``onnxruntime``, fp32, or
    ``openvino`` at ``cpu_precision``): it runs one short query a request, where ONNX Runtime
    was 1.10-1.55x faster than OpenVINO bf16 at the median in-process and tied through the
    server (benchmarks/results/user_tower_engine_2026-11-29.md);
    ``exclude_recent``: requests without a query never get back the newest that many items of
    the history they carry (serving/retriever.py; 0 to 1000, 1000: all of it). 0 by default:
    items a user met earlier are often what they take next (on the demo data, excluding the
    whole history cut the served Recall@50 from 0.246 to 0.185; README, "Excluding the
    history").
    """

    max_k: int
    n_candidates: int
    chunk_size: int = 8
    item_batch: int = 256
    intra_op_threads: int = 1
    reserve_ms: float = 1.0
    warmup: bool = True
    device: str = "cpu"
    precision: str = "fp16"
    cuda_graphs: bool = True
    cpu_engine: str = "openvino"
    cpu_precision: str = "bf16"
    rerank_threads: int = 2
    rerank_max_call: int = 64
    rerank_precision: str = ""
    rerank_item_tokens: int = RERANK_ITEM_TOKENS
    rerank_instances: int = 1
    rerank_depth: int = 0
    item_instances: int = 1
    user_engine: str = "onnxruntime"
    exclude_recent: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise RepositoryError(f"device must be cpu or cuda, got {self.device!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise RepositoryError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")
        if self.cpu_engine not in CPU_ENGINES:
            raise RepositoryError(
                f"cpu_engine must be {' or '.join(CPU_ENGINES)}, got {self.cpu_engine!r}"
            )
        if self.user_engine not in CPU_ENGINES:
            raise RepositoryError(
                f"user_engine must be {' or '.join(CPU_ENGINES)}, got {self.user_engine!r}"
            )
        if self.cpu_precision not in ("bf16", "fp32"):
            raise RepositoryError(f"cpu_precision must be bf16 or fp32, got {self.cpu_precision!r}")
        if self.rerank_precision not in ("", "bf16", "fp32", "int8"):
            raise RepositoryError(
                f"rerank_precision must be bf16, fp32 or int8, got {self.rerank_precision!r}"
            )
        if self.rerank_precision == "int8" and self.cpu_engine != "openvino":
            raise RepositoryError("rerank_precision int8 needs cpu_engine openvino")
        if self.cpu_engine == "onnxruntime" and self.rerank_precision == "bf16":
            raise RepositoryError("cpu_engine onnxruntime runs fp32 only: rerank_precision bf16")
        if self.cpu_engine == "onnxruntime" and self.cpu_precision != "fp32":
            raise RepositoryError(
                "cpu_engine onnxruntime runs fp32 only: use cpu_precision fp32, or cpu_engine "
                "openvino for bf16"
            )
        for name in (
            "max_k",
            "n_candidates",
            "chunk_size",
            "item_batch",
            "intra_op_threads",
            "rerank_threads",
            "rerank_max_call",
            "rerank_instances",
            "item_instances",
        ):
            if int(getattr(self, name)) < 1:
                raise RepositoryError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 1 <= self.rerank_item_tokens <= MAX_ITEM_TOKENS:
            raise RepositoryError(
                f"rerank_item_tokens must be in 1..{MAX_ITEM_TOKENS}, got {self.rerank_item_tokens}"
            )
        if not 0 <= self.exclude_recent <= LONG_HISTORY:
            raise RepositoryError(
                f"exclude_recent must be in 0..{LONG_HISTORY} (history items), got "
                f"{self.exclude_recent}"
            )
        if self.rerank_depth < 0:
            raise RepositoryError(
                f"rerank_depth must be >= 0 (0: all candidates), got {self.rerank_depth}"
            )
        if not 0 <= self.reserve_ms < 1000:
            raise RepositoryError(f"reserve_ms must be in [0, 1000), got {self.reserve_ms}")
