"""Converters from public data sets, already on disk, into a towerserve data set directory.

Nothing is downloaded: point a converter at the unpacked files and it writes Parquet tables
in the schema of :mod:`towers.data.schema` (plus ``meta.json`` naming the source and
options), ready for :func:`towers.data.load_dataset`::

    from towers.data.converters import convert

    report = convert("movielens", Path("ml-1m"), Path("data/ml-1m"), rating_threshold=4.0)
    print(report.summary())

Formats (details, file layouts and limits in each module's docstring):

``movielens`` (:func:`convert_movielens`)
    ml-100k, ml-1m or ml-latest / ml-25m ratings -> items, users, events (high ratings are
    "click" positives, the rest "view" history). Options: ``layout``,
    ``rating_threshold``, ``session_gap_s``.
``esci`` (:func:`convert_esci`)
    Amazon Shopping Queries examples + products Parquet -> items, queries, graded qrels.
    Options: ``locale``, ``small_version``, ``valid_frac``.
``wands`` (:func:`convert_wands`)
    Wayfair WANDS product / query / label files -> items, queries, graded qrels. Options:
    ``valid_frac``, ``test_frac``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from towers.data.converters.common import ConvertReport
from towers.data.converters.esci import convert_esci
from towers.data.converters.movielens import convert_movielens
from towers.data.converters.wands import convert_wands

__all__ = [
    "FORMATS",
    "ConvertReport",
    "convert",
    "convert_esci",
    "convert_movielens",
    "convert_wands",
    "format_options",
]

#: Format name -> converter ``(src, out, **options) -> ConvertReport``.
FORMATS: dict[str, Callable[..., ConvertReport]] = {
    "movielens": convert_movielens,
    "esci": convert_esci,
    "wands": convert_wands,
}


def format_options(fmt: str) -> dict[str, object]:
    """The options of format ``fmt`` with their defaults.

    Raises:
        ValueError: ``fmt`` is not a known format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data format {fmt!r}; allowed: {', '.join(FORMATS)}")
    params = inspect.signature(FORMATS[fmt]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def convert(fmt: str, src: Path, out: Path, **options: object) -> ConvertReport:
    """Convert the files in ``src`` from format ``fmt`` into a data set in ``out``.

    Raises:
        ValueError: an unknown format, or an option the format does not take (the message
            lists the allowed ones).
        DataError: a source file is missing or malformed (a ValueError too).
    """
    allowed = format_options(fmt)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} do not apply to format {fmt!r}; "
            f"its options: {', '.join(allowed)}"
        )
    return FORMATS[fmt](Path(src), Path(out), **options)
