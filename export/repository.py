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
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from serving.bundle import MANIFEST, BundleError, Manifest, load_manifest, verify_files

log = logging.getLogger(__name__)

__all__ = [
    "MODEL_FILES",
    "MODELS",
    "TEMPLATES",
    "RepositoryError",
    "is_repository",
    "render_config",
    "validate_bundle",
    "write_repository",
]

#: The committed templates: ``<model>/config.pbtxt`` and, for python models, ``1/model.py``.
TEMPLATES = Path(__file__).resolve().parents[1] / "model_repository"
VERSION = "1"

#: Bundle files each model reads from its version folder (besides ``manifest.json``).
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "tokenizer": ("tokenizer.json",),
    "user_tower": ("user_tower.onnx", "item_ids.npy", "item_embeddings.npy", "user_history.npz"),
    "retriever": ("index.faiss",),
    "reranker": (
        "reranker.onnx",
        "tokenizer.json",
        "item_ids.npy",
        "item_tokens.npz",
        "item_titles.json",
        "popularity.npy",
        "blend.json",
    ),
    "item_tower": ("item_tower.onnx", "tokenizer.json"),
    "recommend": (),
}
#: Files a model reads when the bundle has them.
OPTIONAL_FILES: dict[str, tuple[str, ...]] = {"retriever": ("removed_ids.npy", "item_prior.npz")}
MODELS = tuple(MODEL_FILES)


class RepositoryError(RuntimeError):
    """The repository cannot be written (bad arguments, templates or target folder)."""


@dataclass(frozen=True)
class RepositorySettings:
    """Serving settings written into the configs.

    ``max_k``: largest K a request may ask for; ``n_candidates``: retriever depth;
    ``chunk_size``: candidates per cross-encoder call; ``item_batch``: the item tower's
    ``max_batch_size`` (rows per dynamic batch); ``intra_op_threads``: ONNX Runtime threads per
    session; ``reserve_ms``: part of each request's budget the reranker keeps for answering.
    """

    max_k: int
    n_candidates: int
    chunk_size: int = 16
    item_batch: int = 64
    intra_op_threads: int = 1
    reserve_ms: float = 1.0

    def __post_init__(self) -> None:
        for name in ("max_k", "n_candidates", "chunk_size", "item_batch", "intra_op_threads"):
            if int(getattr(self, name)) < 1:
                raise RepositoryError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.reserve_ms < 1000:
            raise RepositoryError(f"reserve_ms must be in [0, 1000), got {self.reserve_ms}")


def _with_side_files(bundle: Path, names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        out.append(name)
        if name.endswith(".onnx") and (bundle / f"{name}.data").exists():
            out.append(f"{name}.data")
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
    template: Path, model: str, manifest: Manifest, settings: RepositorySettings
) -> str:
    """The ``config.pbtxt`` text of ``model``: the template with its parameters filled in,
    keeping the template's leading comment lines. Raises :class:`RepositoryError` when the
    template does not parse as a Triton ``ModelConfig``."""
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
    for key, value in values.items():
        config.parameters[key].string_value = str(value)
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    body = text_format.MessageToString(config)
    return "\n".join([*header, body]) if header else body


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
        (out / model / "config.pbtxt").write_text(
            render_config(template, model, manifest, settings)
        )
        code = templates / model / VERSION / "model.py"
        if code.is_file():
            shutil.copy2(code, version / "model.py")
        elif model != "recommend":
            raise RepositoryError(f"template {code} is missing")
        for name in [MANIFEST, *model_files(bundle, model)]:
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
    templates: Path = TEMPLATES,
) -> Path:
    """Write the Triton repository for ``bundle`` to ``repository`` (replaced whole) and
    return ``repository``.

    ``max_k`` and ``n_candidates`` default to the manifest's; see :class:`RepositorySettings`
    for the others (``item_batch`` must be at least the client's re-embedding batch, 64).

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
