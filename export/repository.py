"""``towerserve export`` step 2: lay a bundle out as a Triton model repository.

For each model (``tokenizer``, ``user_tower``, ``retriever``, ``reranker``, ``item_tower`` and
the ``recommend`` ensemble) the writer copies the committed template
(``model_repository/<model>/config.pbtxt`` and ``1/model.py``), fills in the configuration
parameters (the bundle's ``model_version``, ``max_k``, chunk size, threads, ...) and places the
bundle files that model reads into its version folder ``<model>/1/``, with a copy of
``manifest.json``. Bundle files are hard-linked when the file system allows it (no extra disk;
safe because a bundle is replaced whole, never edited in place), copied otherwise; an
``<name>.onnx.data`` side file always travels with its ``<name>.onnx``.

Before anything is written the bundle is checked: every file a model needs must exist and
match its sha256 in the manifest (the error names the file). The repository is built in a
temporary folder beside the target and then renamed into place; an existing target is replaced
only if it looks like a model repository (every entry a folder with a ``config.pbtxt``), so a
wrong path never wipes unrelated files.

Warm-up (on by default; ``warmup=False`` turns it off). Triton's Python backend pays a cost on
the first ``execute`` of every model (14-36 ms each, measured in a fresh demo), on top of the
stages' own in-``initialize`` warm-up, which cannot reach it: the first request through the
``recommend`` ensemble took 87-125 ms against a 100 ms budget while later ones took 65-97 ms.
So each request-path model (``tokenizer``, ``user_tower``, ``retriever``, ``reranker``) and the
``item_tower`` get one Triton ``model_warmup`` sample in their ``config.pbtxt``: Triton runs it
through ``execute`` before it marks the model ready, and the first requests then took 77-82 ms
with normal reranking. (Rechecked on the demo bundle: with ``BUDGET_MS`` 0 the first request
took 42 ms without these samples and 5-8 ms with them, later ones 2-4 ms; with 100 ms the first
request cross-scored 32 candidates without them and 64 with them, as later ones do.) The
ensemble gets none: it has no ``execute`` of its own.

The sample's inputs are files in ``<model>/warmup/`` (raw little-endian tensor bytes; strings
as a 4-byte little-endian length then the UTF-8 bytes, per element), built from the bundle so
they are valid requests: the query "red shirt" (tokenized by the bundle's tokenizer for the
user tower), real item ids from ``item_ids.npy``, a unit user vector of the manifest's ``dim``,
``K = min(5, max_k)``, one chunk of candidates with a budget that easily scores it,
``START_NS`` 0. They must be valid: Triton refuses to load a model whose warm-up sample gets an
error response. Inputs are checked against the config's (names, types, shapes; every required
input present) when the repository is written.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from towers.bundle_contract import (
    BLEND_FILE,
    INDEX_FILE,
    ITEM_EMBEDDINGS_FILE,
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    ITEM_TOKENS_FILE,
    LEXICAL_FILES,
    MANIFEST_FILE,
    POPULARITY_FILE,
    PRIOR_BUNDLE_FILE,
    REMOVED_IDS_FILE,
    TOKENIZER_FILE,
    TRITON_DTYPES,
    USER_HISTORY_FILE,
    BundleError,
    Manifest,
    load_manifest,
    onnx_data_file,
    onnx_file,
    tensorrt_file,
    torch_program_file,
    verify_files,
)
from towers.features import CLS_ID, SEP_ID
from towers.text import load_tokenizer, query_inputs

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILES",
    "MODELS",
    "TEMPLATES",
    "WARMUP_FOLDER",
    "RepositoryError",
    "RepositorySettings",
    "encode_tensor",
    "is_repository",
    "render_config",
    "validate_bundle",
    "warmup_sample",
    "write_repository",
]


def _templates_folder() -> Path:
    """The ``model_repository`` package's folder: the source tree's in a checkout or an
    editable install, the installed package data after a plain ``pip install .``."""
    root = importlib.resources.files("model_repository")
    if not isinstance(root, Path):  # e.g. a zipped install: the writer copies real files
        raise ImportError(
            f"the model_repository templates are not a folder on disk ({root!r}); install "
            "towerserve unzipped (`pip install .`)"
        )
    return root.resolve()


#: The committed templates: ``<model>/config.pbtxt`` and, for python models, ``1/model.py``.
TEMPLATES = _templates_folder()
VERSION = "1"

#: Bundle files each model reads from its version folder (besides ``manifest.json``).
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "tokenizer": (TOKENIZER_FILE,),
    "user_tower": (
        onnx_file("user_tower"),
        ITEM_IDS_FILE,
        ITEM_EMBEDDINGS_FILE,
        USER_HISTORY_FILE,
    ),
    "retriever": (INDEX_FILE,),
    "reranker": (
        onnx_file("reranker"),
        TOKENIZER_FILE,
        ITEM_IDS_FILE,
        ITEM_TOKENS_FILE,
        ITEM_TITLES_FILE,
        POPULARITY_FILE,
        BLEND_FILE,
    ),
    "item_tower": (onnx_file("item_tower"), TOKENIZER_FILE),
    "recommend": (),
}
#: Files a model reads when the bundle has them.
OPTIONAL_FILES: dict[str, tuple[str, ...]] = {
    "retriever": (REMOVED_IDS_FILE, PRIOR_BUNDLE_FILE),
    "reranker": (*LEXICAL_FILES, torch_program_file("reranker"), tensorrt_file("reranker")),
    "user_tower": (torch_program_file("user_tower"), tensorrt_file("user_tower")),
    "item_tower": (torch_program_file("item_tower"), tensorrt_file("item_tower")),
}
#: Models that run on the GPU in a ``device="cuda"`` repository (the graphs and the index).
GPU_MODELS = ("user_tower", "retriever", "reranker", "item_tower")
#: The GPU form each graph needs in the bundle for ``device="cuda"`` (serving/graphs.py).
GPU_GRAPH_FILES = tuple(torch_program_file(g) for g in ("user_tower", "reranker", "item_tower"))
MODELS = tuple(MODEL_FILES)

#: Triton reads ``model_warmup`` input files from this folder of the model's folder.
WARMUP_FOLDER = "warmup"
#: Models that get a ``model_warmup`` sample (the ensemble has no ``execute`` of its own).
WARMUP_MODELS = ("tokenizer", "user_tower", "retriever", "reranker", "item_tower")
WARMUP_QUERY = "red shirt"
WARMUP_K = 5
#: Reranking budget of the warm-up sample, ms from arrival (``START_NS`` 0 means now): far
#: more than one chunk of candidates takes, so the sample runs the cross-encoder.
WARMUP_BUDGET_MS = 1000.0
#: Token ids of WARMUP_QUERY in the teacher's (BERT uncased) vocabulary, used only when the
#: bundle's tokenizer cannot be loaded (then the tokenizer model cannot load either).
WARMUP_QUERY_IDS = (CLS_ID, 2417, 3797, SEP_ID)
#: Unix times (s) of the warm-up history: one hour apart; only their differences matter.
WARMUP_TS = 1_700_000_000


class RepositoryError(RuntimeError):
    """The repository cannot be written (bad arguments, templates or target folder)."""


@dataclass(frozen=True)
class RepositorySettings:
    """Serving settings written into the configs.

    ``max_k``: largest K a request may ask for; ``n_candidates``: retriever depth;
    ``chunk_size``: candidates per cross-encoder call; ``item_batch``: the item tower's
    ``max_batch_size`` (rows per dynamic batch); ``intra_op_threads``: ONNX Runtime threads per
    session; ``reserve_ms``: part of each request's budget the reranker keeps for answering;
    ``warmup``: give each served model a Triton ``model_warmup`` sample (module docstring);
    ``device``: ``cpu`` (ONNX Runtime, faiss-cpu) or ``cuda`` (the graphs' torch programs or
    TensorRT engines and the index on GPU 0, ``KIND_GPU`` instances; serving/graphs.py);
    ``precision``: the GPU compute precision (fp16, bf16, fp32); ``cuda_graphs``: replay
    captured CUDA graphs in the towers and the reranker.
    """

    max_k: int
    n_candidates: int
    chunk_size: int = 16
    item_batch: int = 64
    intra_op_threads: int = 1
    reserve_ms: float = 1.0
    warmup: bool = True
    device: str = "cpu"
    precision: str = "fp16"
    cuda_graphs: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda"):
            raise RepositoryError(f"device must be cpu or cuda, got {self.device!r}")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise RepositoryError(f"precision must be fp32, fp16 or bf16, got {self.precision!r}")
        for name in ("max_k", "n_candidates", "chunk_size", "item_batch", "intra_op_threads"):
            if int(getattr(self, name)) < 1:
                raise RepositoryError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.reserve_ms < 1000:
            raise RepositoryError(f"reserve_ms must be in [0, 1000), got {self.reserve_ms}")


def _with_side_files(bundle: Path, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        out.append(name)
        if name.endswith(".onnx") and (bundle / onnx_data_file(name)).exists():
            out.append(onnx_data_file(name))
    return out


def model_files(bundle: Path, model: str) -> list[str]:
    """The bundle files ``model`` gets: required, ``.onnx.data`` side files, present optionals."""
    names = _with_side_files(bundle, MODEL_FILES[model])
    names += [n for n in OPTIONAL_FILES.get(model, ()) if (bundle / n).is_file()]
    return names


def validate_bundle(bundle: Path) -> Manifest:
    """The bundle's manifest, after checking every file a model needs exists and matches its
    checksum. Optional files the manifest has no checksum for are accepted with a warning
    (e.g. a ``removed_ids.npy`` added after export). Raises :class:`BundleError` naming the
    first bad file."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise BundleError(f"bundle folder {bundle} does not exist")
    manifest = load_manifest(bundle)
    required = sorted({n for m in MODELS for n in _with_side_files(bundle, MODEL_FILES[m])})
    verify_files(bundle, manifest, required)
    for name in sorted({n for names in OPTIONAL_FILES.values() for n in names}):
        if not (bundle / name).is_file():
            continue
        if name in manifest.checksums:
            verify_files(bundle, manifest, [name])
        else:
            log.warning("%s has no checksum in the manifest; using it as it is", bundle / name)
    return manifest


def render_config(
    template: Path,
    model: str,
    manifest: Manifest,
    settings: RepositorySettings,
    warmup: Mapping[str, np.ndarray] | None = None,
) -> str:
    """The ``config.pbtxt`` text of ``model``: the template with its parameters filled in and,
    when ``warmup`` (input arrays by name, see :func:`warmup_sample`) is given, a
    ``model_warmup`` sample reading them from ``warmup/<name>``; the template's leading comment
    lines are kept. Raises :class:`RepositoryError` when the template does not parse as a
    Triton ``ModelConfig`` or ``warmup`` does not fit its inputs."""
    return _render(template, model, manifest, settings, warmup)[0]


def _render(
    template: Path,
    model: str,
    manifest: Manifest,
    settings: RepositorySettings,
    warmup: Mapping[str, np.ndarray] | None,
) -> tuple[str, dict[str, bytes]]:
    """The config text and the warm-up files (contents by file name) of ``model``."""
    text = template.read_text()
    config = model_config_pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise RepositoryError(f"{template} is not a valid model config: {exc}") from exc
    if config.name != model:
        raise RepositoryError(f"{template} names model {config.name!r}, expected {model!r}")
    values: dict[str, object] = {}
    if config.backend == "python":
        values = {"model_version": manifest.model_version}
    if model in ("user_tower", "reranker", "item_tower"):
        values["intra_op_threads"] = settings.intra_op_threads
    if model in ("retriever", "reranker"):
        values["max_k"] = settings.max_k
    if model == "retriever":
        values["n_candidates"] = settings.n_candidates
    if model == "reranker":
        values["chunk_size"] = settings.chunk_size
        values["reserve_ms"] = settings.reserve_ms
    if model == "item_tower":
        config.max_batch_size = settings.item_batch
    if settings.device == "cuda" and model in GPU_MODELS:
        values["device"] = "cuda"
        if model != "retriever":
            values["precision"] = settings.precision
            values["cuda_graphs"] = int(settings.cuda_graphs)
        del config.instance_group[:]
        config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, count=1)
    for key, value in values.items():
        config.parameters[key].string_value = str(value)
    files = _add_warmup(config, warmup) if warmup else {}
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    body = text_format.MessageToString(config)
    return ("\n".join([*header, body]) if header else body), files


# -- warm-up -------------------------------------------------------------------------------


def encode_tensor(array: np.ndarray, data_type: str) -> bytes:
    """``array`` as Triton reads a warm-up ``input_data_file`` of type ``data_type`` (a
    ``TYPE_*`` name): row-major little-endian values; for ``TYPE_STRING`` each element as a
    4-byte little-endian length and its bytes (``str`` encoded as UTF-8)."""
    if data_type not in TRITON_DTYPES:
        raise RepositoryError(f"warm-up inputs of type {data_type} are not supported")
    if data_type == "TYPE_STRING":
        out = []
        for value in np.asarray(array, dtype=object).reshape(-1):
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            out.append(struct.pack("<I", len(data)) + data)
        return b"".join(out)
    dtype = np.dtype(TRITON_DTYPES[data_type]).newbyteorder("<")
    arr = np.asarray(array)
    converted = arr.astype(dtype)
    if not np.array_equal(converted, arr):
        raise RepositoryError(f"warm-up values {arr} do not fit {data_type}")
    return np.ascontiguousarray(converted).tobytes()


def _add_warmup(
    config: model_config_pb2.ModelConfig, sample: Mapping[str, np.ndarray]
) -> dict[str, bytes]:
    """Add one ``model_warmup`` sample (batch size 1, run once) reading ``sample`` from
    ``warmup/<name>`` to ``config``; return the files' contents by name. Every input must be
    one the config declares, with a shape its dims allow (a batching model's sample has the
    batch dimension, 1, first); every non-optional input must be there."""
    inputs = {i.name: i for i in config.input}
    unknown = sorted(set(sample) - set(inputs))
    if unknown:
        raise RepositoryError(f"{config.name}: warm-up inputs {unknown} are not in its config")
    missing = sorted(n for n, i in inputs.items() if not i.optional and n not in sample)
    if missing:
        raise RepositoryError(f"{config.name}: warm-up sample lacks inputs {missing}")
    entry = config.model_warmup.add(name="sample", batch_size=1, count=1)
    files = {}
    for name, value in sample.items():
        spec = inputs[name]
        shape = list(np.shape(value))
        if config.max_batch_size > 0:
            if not shape or shape[0] != 1:
                raise RepositoryError(
                    f"{config.name}: warm-up input {name} needs batch dimension 1 first, "
                    f"got shape {shape}"
                )
            shape = shape[1:]
        dims = list(spec.dims)
        if len(shape) != len(dims) or any(d not in (-1, s) for d, s in zip(dims, shape)):
            raise RepositoryError(
                f"{config.name}: warm-up input {name} has shape {shape}, config dims {dims}"
            )
        data_type = model_config_pb2.DataType.Name(spec.data_type)
        tensor = entry.inputs[name]
        tensor.data_type = spec.data_type
        tensor.dims.extend(shape)
        tensor.input_data_file = name
        files[name] = encode_tensor(value, data_type)
    return files


def _query_tokens(bundle: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``WARMUP_QUERY`` as the tokenizer model sends it to the user tower: input ids,
    attention mask (int64 ``[1, L]``) and has_query."""
    try:
        return query_inputs(load_tokenizer(Path(bundle) / TOKENIZER_FILE), WARMUP_QUERY)
    except Exception as exc:  # an unreadable tokenizer fails its own model, not the writer
        log.warning("warm-up: %s/%s unusable (%s); fixed token ids", bundle, TOKENIZER_FILE, exc)
        ids = np.array([WARMUP_QUERY_IDS], dtype=np.int64)
        return ids, np.ones_like(ids), 1.0


def warmup_sample(
    bundle: Path, model: str, manifest: Manifest, settings: RepositorySettings
) -> dict[str, np.ndarray]:
    """The warm-up request of ``model`` (input arrays by name, with the batch dimension for a
    batching model), built from ``bundle``; empty for a model without one (the ensemble) or
    a bundle without items. See the module docstring for the values."""
    if model not in WARMUP_MODELS:
        return {}
    item_ids = np.load(Path(bundle) / ITEM_IDS_FILE).astype(np.int64).reshape(-1)
    if len(item_ids) == 0:
        log.warning("warm-up: %s has no items; no warm-up samples", bundle)
        return {}
    query = np.array([WARMUP_QUERY], dtype=object)
    k = np.array([min(WARMUP_K, settings.max_k)], dtype=np.int32)
    history = item_ids[:2]
    if model == "tokenizer":
        return {"QUERY": query}
    if model == "item_tower":
        return {"ITEM_TEXT": np.array([[WARMUP_QUERY]], dtype=object)}
    if model == "user_tower":
        ids, mask, has_query = _query_tokens(bundle)
        return {
            "INPUT_IDS": ids,
            "ATTENTION_MASK": mask,
            "HAS_QUERY": np.array([[has_query]], dtype=np.float32),
            "USER_ID": np.array([-1], dtype=np.int64),
            "HISTORY_IDS": history,
            "HISTORY_TS": WARMUP_TS + 3600 * np.arange(len(history), dtype=np.int64),
        }
    if model == "retriever":
        dim = int(manifest.dim)
        return {
            "USER_VECTOR": np.full((1, dim), 1.0 / np.sqrt(dim), dtype=np.float32),
            "K": k,
            "HAS_QUERY": np.ones((1, 1), dtype=np.float32),
        }
    # reranker: one chunk of catalog items, in retrieval order
    candidates = item_ids[: settings.chunk_size]
    return {
        "QUERY": query,
        "HISTORY_IDS": history,
        "CANDIDATE_IDS": candidates,
        "CANDIDATE_SCORES": np.linspace(1.0, 0.0, len(candidates), dtype=np.float32),
        "K": k,
        "BUDGET_MS": np.array([WARMUP_BUDGET_MS], dtype=np.float32),
        "START_NS": np.zeros(1, dtype=np.int64),
    }


def is_repository(path: Path) -> bool:
    """Whether ``path`` is a folder that holds only model folders (each with a
    ``config.pbtxt``; hidden entries ignored), or nothing: safe to replace."""
    path = Path(path)
    if not path.is_dir():
        return False
    return all(
        entry.is_dir() and (entry / "config.pbtxt").is_file()
        for entry in path.iterdir()
        if not entry.name.startswith(".")
    )


def _place(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst``, or copy it when linking is not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _build(
    bundle: Path, out: Path, templates: Path, manifest: Manifest, settings: RepositorySettings
) -> None:
    for model in MODELS:
        template = templates / model / "config.pbtxt"
        if not template.is_file():
            raise RepositoryError(f"template {template} is missing")
        version = out / model / VERSION
        version.mkdir(parents=True)
        sample = warmup_sample(bundle, model, manifest, settings) if settings.warmup else None
        text, files = _render(template, model, manifest, settings, sample)
        (out / model / "config.pbtxt").write_text(text)
        if files:
            (out / model / WARMUP_FOLDER).mkdir()
            for name, data in files.items():
                (out / model / WARMUP_FOLDER / name).write_bytes(data)
        code = templates / model / VERSION / "model.py"
        if code.is_file():
            shutil.copy2(code, version / "model.py")
        elif model != "recommend":
            raise RepositoryError(f"template {code} is missing")
        for name in [MANIFEST_FILE, *model_files(bundle, model)]:
            _place(bundle / name, version / name)


def write_repository(
    bundle: Path,
    repository: Path,
    *,
    max_k: int | None = None,
    n_candidates: int | None = None,
    chunk_size: int = 16,
    item_batch: int = 64,
    intra_op_threads: int = 1,
    reserve_ms: float = 1.0,
    warmup: bool = True,
    templates: Path = TEMPLATES,
    device: str = "cpu",
    precision: str = "fp16",
    cuda_graphs: bool = True,
) -> Path:
    """Write the Triton repository for ``bundle`` to ``repository`` (replaced whole) and
    return ``repository``.

    ``max_k`` and ``n_candidates`` default to the manifest's; see :class:`RepositorySettings`
    for the others (``item_batch`` must be at least the client's re-embedding batch, 64;
    ``warmup=False`` leaves out the Triton ``model_warmup`` samples; ``device="cuda"``
    needs the graphs' torch programs in the bundle: ``towerserve export --device cuda``).

    Raises:
        BundleError: a needed bundle file is missing or does not match its checksum.
        RepositoryError: ``repository`` exists and is not a model repository, or is the
            template folder; a template is missing or invalid; a setting is out of range.
    """
    bundle, repository = Path(bundle), Path(repository)
    manifest = validate_bundle(bundle)
    settings = RepositorySettings(
        max_k=manifest.max_k if max_k is None else max_k,
        n_candidates=manifest.n_candidates if n_candidates is None else n_candidates,
        chunk_size=chunk_size,
        item_batch=item_batch,
        intra_op_threads=intra_op_threads,
        reserve_ms=reserve_ms,
        warmup=warmup,
        device=device,
        precision=precision,
        cuda_graphs=cuda_graphs,
    )
    missing = [n for n in GPU_GRAPH_FILES if not (bundle / n).is_file()]
    if settings.device == "cuda" and missing:
        raise RepositoryError(
            f"device cuda needs {', '.join(missing)} in {bundle}: export with "
            "`towerserve export --device cuda` (writes each graph's torch.export program)"
        )
    if repository.resolve() == Path(templates).resolve():
        raise RepositoryError(
            f"{repository} is the committed template folder: write the repository elsewhere"
        )
    if repository.exists() and not is_repository(repository):
        raise RepositoryError(
            f"{repository} exists and is not a model repository (it holds entries other than "
            "model folders with a config.pbtxt): refusing to replace it; pick another path"
        )
    repository.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repository.name}.", dir=repository.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
    try:
        _build(bundle, tmp, Path(templates), manifest, settings)
        if repository.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{repository.name}.old.", dir=repository.parent))
            os.replace(repository, old / "repository")
            os.replace(tmp, repository)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, repository)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "repository %s: model version %s, %d items, max_k %d",
        repository,
        manifest.model_version,
        manifest.n_items,
        settings.max_k,
    )
    return repository
