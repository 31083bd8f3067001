"""Settings of one ``towerserve bench`` run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and where; counts are counts, times carry their unit in the name.

    The catalog is either generated (``catalog_items`` items, ``n_users`` users and
    ``n_queries`` queries with ``seed``; cached under ``cache_dir`` by those values) or an
    existing data set (``data_dir``). The trained model in ``artifacts`` is exported over it
    (cached by model and catalog). ``sections`` names the parts to run (see
    :mod:`client.bench.sections`); ``soak_minutes > 0`` adds the soak. ``cpu_engine``,
    ``cpu_precision`` and ``rerank_precision`` are the repository's serving settings
    (``rerank_precision="auto"``: ``cpu_precision``, measured as fast as int8 here; ``int8``
    quantizes the reranker once into the cached bundle).
    """

    artifacts: Path = Path("runs/artifacts")
    out_dir: Path = Path("runs/bench")
    catalog_items: int | None = 100_000
    data_dir: Path | None = None
    cache_dir: Path = Path("runs/bench-cache")
    seed: int = 7
    n_users: int = 2000
    n_queries: int = 1500
    index: str = "auto"
    nprobe: int = 32
    # -- how the CPU server runs its graphs (see export.repository_settings)
    cpu_engine: str = "openvino"
    cpu_precision: str = "bf16"
    user_engine: str = "onnxruntime"  # the user tower's CPU runtime
    rerank_precision: str = "auto"  # auto: cpu_precision; int8 is quantized into the cached bundle
    rerank_instances: int = 1
    rerank_threads: int = 2
    rerank_depth: int = 0  # most candidates cross-scored per request (0: all the budget allows)
    rerank_max_call: int = 64  # most candidates per cross-encoder call
    sections: tuple[str, ...] = ("serving",)
    # -- the request mix
    n_requests: int = 200  # distinct requests in perf_analyzer's input data
    search_share: float = 0.5  # share of them that are search requests (the rest homepage)
    k: int = 10
    # -- perf_analyzer
    concurrencies: tuple[int, ...] = (1, 4, 8)
    budgets_ms: tuple[float, ...] = (0.0, 25.0, 50.0)
    measurement_interval_ms: int = 5000
    stability_pct: float = 25.0
    max_trials: int = 6
    perf_timeout_s: float = 600.0
    # -- the client sweep (sequential gRPC requests per budget)
    sweep_requests: int = 100
    client_timeout_s: float = 30.0
    # -- the soak
    soak_minutes: float = 0.0
    soak_window_s: float = 60.0
    soak_concurrency: int = 8
    soak_budget_ms: float = 25.0
    # -- the host's noise floor (client/bench/jitter.py), measured before the server starts
    jitter_s: float = 10.0  # seconds of fixed single-threaded work timed; 0 skips it
    # -- the server
    server_ready_timeout_s: float = 600.0
    reserve_ms: float = 1.0  # part of each budget the reranker keeps for answering
    keep_raw: bool = False  # keep perf_analyzer's CSV and profile exports under out_dir/raw

    def __post_init__(self) -> None:
        if self.catalog_items is None and self.data_dir is None:
            raise ValueError("give a catalog size (catalog_items) or a data set (data_dir)")
        if self.catalog_items is not None and self.data_dir is not None:
            raise ValueError("give either a catalog size or a data set, not both")
        if self.catalog_items is not None and self.catalog_items < 200:
            raise ValueError(f"catalog_items must be at least 200, got {self.catalog_items}")
        if not self.concurrencies or any(c < 1 for c in self.concurrencies):
            raise ValueError(f"concurrencies must be >= 1, got {self.concurrencies}")
        if not self.budgets_ms or any(b < 0 for b in self.budgets_ms):
            raise ValueError(f"budgets_ms must be >= 0, got {self.budgets_ms}")
        if self.n_requests < 2:
            raise ValueError(f"n_requests must be at least 2, got {self.n_requests}")
        if not 0.0 <= self.search_share <= 1.0:
            raise ValueError(f"search_share must be in 0..1, got {self.search_share}")
        if self.measurement_interval_ms < 100:
            raise ValueError(
                f"measurement_interval_ms must be at least 100, got {self.measurement_interval_ms}"
            )
        if self.max_trials < 3:
            raise ValueError(
                f"max_trials must be at least 3 (perf_analyzer), got {self.max_trials}"
            )
        if self.soak_minutes < 0 or self.soak_window_s < 3:
            raise ValueError("soak_minutes must be >= 0 and soak_window_s at least 3 s")
        if self.rerank_precision not in ("auto", "", "bf16", "fp32", "int8"):
            raise ValueError(
                f"rerank_precision must be auto, bf16, fp32 or int8, got {self.rerank_precision!r}"
            )
        if not 0 <= self.jitter_s <= 600:
            raise ValueError(f"jitter_s must be in [0, 600] seconds, got {self.jitter_s}")
        if self.soak_concurrency < 1:
            raise ValueError(f"soak_concurrency must be >= 1, got {self.soak_concurrency}")
        from export.repository_settings import RepositoryError, RepositorySettings

        try:  # the serving settings, checked before the (slow) catalog and export
            RepositorySettings(
                max_k=1,
                n_candidates=1,
                cpu_engine=self.cpu_engine,
                cpu_precision=self.cpu_precision,
                user_engine=self.user_engine,
                rerank_precision="" if self.rerank_precision == "auto" else self.rerank_precision,
                rerank_instances=self.rerank_instances,
                rerank_threads=self.rerank_threads,
                rerank_max_call=self.rerank_max_call,
                rerank_depth=self.rerank_depth,
                reserve_ms=self.reserve_ms,
            )
        except RepositoryError as exc:
            raise ValueError(str(exc)) from None
