"""Helpers the format converters share: finding and reading source files with errors that
name them, stable text-hash splits, text clean-up, and writing the converted data set."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from towers.data.dataset import Dataset
from towers.data.loader import save_dataset
from towers.data.schema import SCHEMA_VERSION, TABLES, DataError, coerce_table, empty_table

__all__ = [
    "ConvertReport",
    "check_fraction",
    "clip_text",
    "drop_rows",
    "fill_titles",
    "find_file",
    "hash_fraction",
    "map_labels",
    "read_csv_checked",
    "require_columns",
    "sniff_separator",
    "split_by_text",
    "text_fractions",
    "text_key",
    "to_int_column",
    "write_dataset",
]

logger = logging.getLogger(__name__)

#: Characters a description is cut to (at a word boundary, with "..." appended).
DESCRIPTION_CHARS = 300


@dataclass
class ConvertReport:
    """What a conversion wrote: rows per table, rows dropped per reason, and where."""

    format: str
    source: Path
    out: Path
    rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    details: dict[str, object] = field(default_factory=dict)

    def summary(self) -> str:
        """One line, e.g. ``"movielens -> out: 9 items, 4 users, 12 events; dropped 1 ..."``."""
        rows = ", ".join(f"{n} {t}" for t, n in self.rows.items())
        text = f"{self.format} {self.source} -> {self.out}: {rows}"
        dropped = {k: v for k, v in self.dropped.items() if v}
        if dropped:
            text += "; dropped " + ", ".join(f"{v} {k}" for k, v in dropped.items())
        return text


def find_file(root: Path, names: Iterable[str]) -> Path | None:
    """The first of ``names`` that is a file in ``root``, or None."""
    for name in names:
        if (root / name).is_file():
            return root / name
    return None


def check_fraction(name: str, value: float, upper: float = 1.0) -> None:
    """Raise ValueError unless ``0 <= value < upper``."""
    if not 0.0 <= value < upper:
        raise ValueError(f"{name} must be at least 0 and below {upper}, got {value}")


def sniff_separator(path: Path) -> str:
    """``"\\t"`` when the header line of ``path`` holds a tab, else ``","``.

    The WANDS files are tab-separated despite their ``.csv`` names; a re-saved copy may use
    commas. Only the header is looked at.
    """
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            header = fh.readline()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    return "\t" if "\t" in header else ","


def read_csv_checked(
    path: Path, what: str, encodings: tuple[str, ...] = ("utf-8", "latin-1"), **kwargs: object
) -> pd.DataFrame:
    """``pd.read_csv(path, **kwargs)``, any failure raised as a DataError naming ``path``.

    ``what`` describes the expected layout for the message (e.g. "tab-separated
    user id, item id, rating, timestamp"). Each of ``encodings`` is tried in turn while the
    bytes do not decode (the older MovieLens files are latin-1).
    """
    if not encodings:
        raise ValueError("read_csv_checked needs at least one encoding")
    for i, encoding in enumerate(encodings):
        try:
            return pd.read_csv(path, encoding=encoding, **kwargs)  # type: ignore[call-overload]
        except UnicodeDecodeError as exc:
            if i + 1 < len(encodings):
                logger.info("%s: not %s, trying %s", path, encoding, encodings[i + 1])
                continue
            raise DataError(f"{path}: cannot decode as {' or '.join(encodings)}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file to the user
            raise DataError(f"{path}: cannot parse as {what}: {exc}") from exc
    raise DataError(f"{path}: cannot read")  # not reached: the last encoding returns or raises


def require_columns(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    """Raise DataError naming ``path`` and the missing columns unless all are in ``df``."""
    columns = list(columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)} "
            f"(found: {', '.join(map(str, df.columns)) or 'none'})"
        )


def to_int_column(values: pd.Series, path: Path, column: str) -> pd.Series:
    """``values`` as int64; DataError naming file, column and bad examples otherwise."""
    num = pd.to_numeric(values, errors="coerce")
    bad = (num.isna() | (num % 1 != 0)).to_numpy()
    if bad.any():
        shown = ", ".join(repr(v) for v in values[bad].head(3).tolist())
        raise DataError(
            f"{path}: column {column!r} must hold integers; {int(bad.sum())} bad value(s), "
            f"e.g. {shown}"
        )
    return num.astype(np.int64)


def text_key(texts: pd.Series) -> pd.Series:
    """Case-folded text with runs of whitespace collapsed: the unit kept in one split."""
    return texts.astype("str").str.casefold().str.split().str.join(" ")


def hash_fraction(texts: Iterable[str]) -> np.ndarray:
    """A number in [0, 1) per text from its SHA-1 (stable across runs and machines, unlike
    Python's salted ``hash()``)."""
    out = [
        int.from_bytes(hashlib.sha1(t.encode("utf-8")).digest()[:8], "big") / 2.0**64 for t in texts
    ]
    return np.asarray(out, dtype=np.float64)


def text_fractions(texts: pd.Series) -> np.ndarray:
    """Per row, the :func:`hash_fraction` of its :func:`text_key` (equal keys, equal values)."""
    keys = text_key(texts)
    distinct = pd.unique(keys)
    u = pd.Series(hash_fraction(distinct), index=distinct)
    return u.reindex(keys.to_numpy()).to_numpy(np.float64)


def split_by_text(texts: pd.Series, valid_frac: float, test_frac: float) -> pd.Series:
    """``train`` / ``valid`` / ``test`` per row, decided per distinct (case-folded) text by its
    hash, so a text never lands in two splits: fraction below ``test_frac`` -> test, below
    ``test_frac + valid_frac`` -> valid, else train."""
    frac = text_fractions(texts)
    split = np.where(
        frac < test_frac, "test", np.where(frac < test_frac + valid_frac, "valid", "train")
    )
    return pd.Series(split, index=texts.index, dtype="str")


def drop_rows(
    df: pd.DataFrame, bad: np.ndarray, report: ConvertReport, reason: str, source: Path
) -> pd.DataFrame:
    """``df`` without the ``bad`` rows; the count goes to ``report.dropped[reason]`` and,
    when not zero, to a warning naming ``source``."""
    n = int(np.count_nonzero(bad))
    report.dropped[reason] = report.dropped.get(reason, 0) + n
    if n:
        logger.warning("%s: dropped %d of %d rows: %s", source, n, len(df), reason)
        df = df[~bad].reset_index(drop=True)
    return df


def map_labels(values: pd.Series, mapping: dict[str, int], source: Path, column: str) -> np.ndarray:
    """Graded labels (int8) from text labels, matched case-insensitively after stripping.

    Raises:
        DataError: a value is not a key of ``mapping``; the message lists the allowed ones.
    """
    keys = values.astype("str").fillna("").str.strip().str.casefold()
    lookup = {k.casefold(): v for k, v in mapping.items()}
    labels = keys.map(lookup)
    bad = labels.isna().to_numpy()
    if bad.any():
        shown = ", ".join(repr(v) for v in pd.unique(values[bad])[:5])
        raise DataError(
            f"{source}: column {column!r} has {int(bad.sum())} value(s) outside "
            f"{', '.join(mapping)} (e.g. {shown})"
        )
    return labels.to_numpy().astype(np.int8)


def fill_titles(titles: pd.Series, fallback: pd.Series) -> pd.Series:
    """Stripped ``titles``, with ``fallback`` where a title is missing or blank (the loader
    rejects empty titles)."""
    t = titles.astype("str").fillna("").str.strip()
    return t.where(t != "", fallback.astype("str"))


_TAG = r"<[^>]{0,200}>"
_ENTITIES = {"&nbsp;": " ", "&amp;": "&", "&quot;": '"', "&#39;": "'", "&lt;": "<", "&gt;": ">"}


def clip_text(texts: pd.Series, n_chars: int = DESCRIPTION_CHARS) -> pd.Series:
    """HTML tags removed, common entities decoded, whitespace collapsed, and text longer than
    ``n_chars`` cut at the last word boundary with ``"..."`` appended; missing -> ``""``."""
    s = texts.astype("str").fillna("")
    s = s.str.replace(_TAG, " ", regex=True)
    for entity, char in _ENTITIES.items():
        s = s.str.replace(entity, char, regex=False)
    s = s.str.replace(r"\s+", " ", regex=True).str.strip()
    long = s.str.len() > n_chars
    cut = s[long].str.slice(0, n_chars + 1).str.replace(r"\s*\S*$", "", regex=True)
    # a single word longer than n_chars: cut it hard
    cut = cut.where(cut.str.len() > 0, s[long].str.slice(0, n_chars))
    s[long] = cut.str.rstrip(" ,;:.") + "..."
    return s


def write_dataset(
    out: Path,
    tables: dict[str, pd.DataFrame],
    report: ConvertReport,
    options: dict[str, object],
) -> ConvertReport:
    """Coerce ``tables`` to the schema, write them as Parquet (absent tables as empty ones)
    with a ``meta.json`` recording the source and options, and fill ``report.rows``."""
    coerced = {name: coerce_table(df, name, f"converted {name}") for name, df in tables.items()}
    full = {name: coerced.get(name, empty_table(name)) for name in TABLES}
    report.rows = {name: len(df) for name, df in full.items()}
    meta = {
        "schema_version": SCHEMA_VERSION,
        "converter": f"towerserve data convert --format {report.format}",
        "source": str(Path(report.source).resolve()),
        "options": dict(options),
        "details": report.details,
        "counts": report.rows,
        "dropped": report.dropped,
    }
    dataset = Dataset(meta=meta, **full)
    save_dataset(dataset, out, fmt="parquet")
    logger.info("%s", report.summary())
    return report
