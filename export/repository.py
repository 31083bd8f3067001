"""``towerserve export`` step 2: lay a bundle out as a Triton model repository.

For each model (``tokenizer``, ``user_tower``, ``retriever``, ``reranker``, ``item_tower``,
``events`` and the ``recommend`` ensemble) the writer copies the committed template
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

Warm-up samples (on by default; ``warmup=False`` turns them off): see ``export/warmup.py``.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import py_compile
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from export.repository_settings import RERANK_ITEM_TOKENS, RepositoryError, RepositorySettings
from export.warmup import (
    WARMUP_FOLDER,
    WARMUP_MODELS,
    add_warmup,
    encode_tensor,
    warmup_sample,
)
from towers.bundle_contract import (
    BLEND_FILE,
    COVISIT_FILE,
    INDEX_FILE,
    ITEM_EMBEDDINGS_FILE,
    ITEM_ID_VECTORS_FILE,
    ITEM_IDS_FILE,
    ITEM_TITLES_FILE,
    ITEM_TOKENS_FILE,
    LEXICAL_FILES,
    MANIFEST_FILE,
    POPULARITY_FILE,
    PRIOR_BUNDLE_FILE,
    REMOVED_IDS_FILE,
    TOKENIZER_FILE,
    USER_HISTORY_FILE,
    USER_HISTORY_HEAD_FILE,
    USER_HISTORY_SEQUENCE_FILE,
    BundleError,
    Manifest,
    context_once_file,
    int8_files,
    load_manifest,
    onnx_data_file,
    onnx_file,
    tensorrt_file,
    torch_program_file,
    verify_files,
)

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILES",
    "MODELS",
    "TEMPLATES",
    "WARMUP_FOLDER",
    "WARMUP_MODELS",
    "RepositoryError",
    "RepositorySettings",
    "encode_tensor",
    "is_repository",
    "render_config",
    "validate_bundle",
    "warmup_sample",
    "write_model_version",
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
    "events": (ITEM_IDS_FILE,),  # live user events (serving/events): checks ids against it
    # item changes while serving (serving/item_changes.py): embeds upserts, checks ids
    "catalog": (onnx_file("item_tower"), TOKENIZER_FILE, ITEM_IDS_FILE),
}
#: Files a model reads when the bundle has them.
OPTIONAL_FILES: dict[str, tuple[str, ...]] = {
    "retriever": (REMOVED_IDS_FILE, PRIOR_BUNDLE_FILE, COVISIT_FILE),
    "reranker": (
        *LEXICAL_FILES,
        context_once_file("reranker"),
        torch_program_file("reranker"),
        tensorrt_file("reranker"),
        *int8_files("reranker"),
    ),
    "user_tower": (
        torch_program_file("user_tower"),
        tensorrt_file("user_tower"),
        USER_HISTORY_HEAD_FILE,
        USER_HISTORY_SEQUENCE_FILE,
    ),
    "item_tower": (
        torch_program_file("item_tower"),
        tensorrt_file("item_tower"),
        ITEM_ID_VECTORS_FILE,
    ),
    "catalog": (REMOVED_IDS_FILE,),
}
#: Models that run on the GPU in a ``device="cuda"`` repository (the graphs and the index).
GPU_MODELS = ("user_tower", "retriever", "reranker", "item_tower")
#: The GPU form each graph needs in the bundle for ``device="cuda"`` (serving/graphs.py).
GPU_GRAPH_FILES = tuple(torch_program_file(g) for g in ("user_tower", "reranker", "item_tower"))
MODELS = tuple(MODEL_FILES)


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
    if model in ("user_tower", "reranker", "item_tower", "catalog"):
        values["intra_op_threads"] = (
            settings.rerank_threads if model == "reranker" else settings.intra_op_threads
        )
        if settings.device == "cpu":
            values["engine"] = settings.cpu_engine
            values["precision"] = settings.cpu_precision
            if model == "reranker" and settings.rerank_precision:
                values["precision"] = settings.rerank_precision
            if model == "user_tower":
                values["engine"] = settings.user_engine
                if settings.user_engine == "onnxruntime":
                    values["precision"] = "fp32"
    if model in ("retriever", "reranker"):
        values["max_k"] = settings.max_k
    if model == "retriever":
        values["n_candidates"] = settings.n_candidates
        values["exclude_recent"] = settings.exclude_recent
    if model == "reranker":
        values["chunk_size"] = settings.chunk_size
        values["max_call"] = settings.rerank_max_call
        values["reserve_ms"] = settings.reserve_ms
        values["max_item_tokens"] = settings.rerank_item_tokens
        values["max_scored"] = settings.rerank_depth
        if settings.device == "cpu":
            for group in config.instance_group:
                group.count = settings.rerank_instances
    if model == "item_tower":
        config.max_batch_size = settings.item_batch
        if settings.device == "cpu":
            for group in config.instance_group:
                group.count = settings.item_instances
    if settings.device == "cuda" and model in GPU_MODELS:
        values["device"] = "cuda"
        if model != "retriever":
            values["precision"] = settings.precision
            values["cuda_graphs"] = int(settings.cuda_graphs)
        del config.instance_group[:]
        config.instance_group.add(kind=model_config_pb2.ModelInstanceGroup.KIND_GPU, count=1)
    for key, value in values.items():
        config.parameters[key].string_value = str(value)
    files = add_warmup(config, warmup) if warmup else {}
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    body = text_format.MessageToString(config)
    return ("\n".join([*header, body]) if header else body), files


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
    chunk_size: int = 8,
    item_batch: int = 256,
    intra_op_threads: int = 1,
    reserve_ms: float = 1.0,
    warmup: bool = True,
    templates: Path = TEMPLATES,
    device: str = "cpu",
    precision: str = "fp16",
    cuda_graphs: bool = True,
    cpu_engine: str = "openvino",
    cpu_precision: str = "bf16",
    rerank_threads: int = 2,
    rerank_max_call: int = 64,
    rerank_precision: str = "",
    rerank_item_tokens: int = RERANK_ITEM_TOKENS,
    rerank_instances: int = 1,
    rerank_depth: int = 0,
    item_instances: int = 1,
    user_engine: str = "onnxruntime",
    exclude_recent: int = 0,
) -> Path:
    """Write the Triton repository for ``bundle`` to ``repository`` (replaced whole) and
    return ``repository``.

    ``max_k`` and ``n_candidates`` default to the manifest's; see :class:`RepositorySettings`
    for the others (``item_batch``, the item tower's most rows per request, 256;
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
        cpu_engine=cpu_engine,
        cpu_precision=cpu_precision,
        rerank_threads=rerank_threads,
        rerank_max_call=rerank_max_call,
        rerank_precision=rerank_precision,
        rerank_item_tokens=rerank_item_tokens,
        rerank_instances=rerank_instances,
        item_instances=item_instances,
        rerank_depth=rerank_depth,
        user_engine=user_engine,
        exclude_recent=exclude_recent,
    )
    if settings.device == "cpu" and settings.rerank_precision == "int8":
        absent = [n for n in int8_files("reranker") if not (bundle / n).is_file()]
        if absent:
            raise RepositoryError(
                f"rerank_precision int8 needs {', '.join(absent)} in {bundle}: export with "
                "`towerserve export --rerank-precision int8` (quantizes the reranker)"
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


def write_model_version(
    bundle: Path, repository: Path, model: str, version: int, *, templates: Path = TEMPLATES
) -> Path:
    """Place version folder ``<repository>/<model>/<version>`` for an already validated
    ``bundle``: the template's ``model.py``, the bundle files the model reads and
    ``manifest.json``, as :func:`write_repository` lays them out. It is built under a hidden
    name beside it and renamed into place; the model's ``config.pbtxt`` is left alone
    (``towerserve publish``, client/publish.py, rewrites it). Raises :class:`RepositoryError`
    for an unknown model, a version below 1 or a folder that already exists."""
    if model not in MODEL_FILES or model == "recommend":
        raise RepositoryError(
            f"model must be one of {sorted(set(MODELS) - {'recommend'})}, got {model!r}"
        )
    if version < 1:
        raise RepositoryError(f"version must be >= 1, got {version}")
    target = Path(repository) / model / str(version)
    if target.exists():
        raise RepositoryError(f"{target} already exists: pick a new version number")
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        shutil.copy2(Path(templates) / model / VERSION / "model.py", tmp / "model.py")
        # The Python stub would write model.py's __pycache__ into the folder after the load;
        # Triton then takes the model as modified and reloads every version of it on the next
        # load of a model that depends on it (seen on 2.51). Compiled here, it is not rewritten
        # (a stub of this Python version).
        py_compile.compile(
            str(tmp / "model.py"),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        )
        for name in [MANIFEST_FILE, *model_files(bundle, model)]:
            _place(Path(bundle) / name, tmp / name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
