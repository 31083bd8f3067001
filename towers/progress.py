"""Progress bars for long offline work (rich), quiet when logging is not interactive."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar on a terminal; plain iteration otherwise.

    Set ``TOWERSERVE_PROGRESS=0`` to silence bars, ``=1`` to force them.
    """
    flag = os.environ.get("TOWERSERVE_PROGRESS")
    show = flag == "1" or (flag is None and sys.stderr.isatty())
    if not show:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, total=total, transient=True)
