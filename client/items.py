"""Changing items in a running server (the ``catalog`` model, serving/item_changes.py).

```python
from client.items import ItemsClient
with ItemsClient("localhost:8001") as items:
    items.add({900001: "red waterproof hiking jacket"})
    items.update({900001: "blue waterproof hiking jacket"})
    items.delete([900001])
```

A request is applied whole or not at all: when one change is bad (add of an id that exists,
update or delete of an unknown id, an empty text, the same id twice) the server refuses all of
it and :class:`client.grpc_client.TowerServeError` says which and why. An acknowledged change
is durable (fsynced) and the retriever serves it within its poll interval (0.5 s by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from client.grpc_client import TowerServeError

__all__ = ["OPS", "ItemsClient"]

#: Change kinds the server takes.
OPS = ("add", "update", "delete")


class ItemsClient:
    """Calls the ``catalog`` model over gRPC at ``url`` (``host:port``); ``timeout_s`` bounds
    each call."""

    def __init__(
        self, url: str = "localhost:8001", *, timeout_s: float = 30.0, model: str = "catalog"
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.model = model
        self._client = grpcclient.InferenceServerClient(url=url)

    def __enter__(self) -> ItemsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def change(self, item_ids: Sequence[int], ops: Sequence[str], texts: Sequence[str]) -> int:
        """Send one batch (one op and text per id; empty text for a delete); the server's
        change-log version after it. Raises :class:`TowerServeError` when refused (nothing of
        the batch applied) or ``ValueError`` for lists of different lengths."""
        if not (len(item_ids) == len(ops) == len(texts)):
            raise ValueError(
                f"need one op and text per item id; got {len(item_ids)} ids, {len(ops)} ops, "
                f"{len(texts)} texts"
            )
        inputs = [
            _tensor("ITEM_IDS", np.asarray(list(item_ids), np.int64), "INT64"),
            _tensor("OPS", np.array([o.encode() for o in ops], object), "BYTES"),
            _tensor("ITEM_TEXTS", np.array([t.encode() for t in texts], object), "BYTES"),
        ]
        try:
            result = self._client.infer(
                self.model,
                inputs,
                outputs=[grpcclient.InferRequestedOutput("VERSION")],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise TowerServeError(f"{self.model}: {exc.message()}") from exc
        return int(result.as_numpy("VERSION").ravel()[0])

    def add(self, items: Mapping[int, str]) -> int:
        """Add new items (id -> text); see :meth:`change`."""
        return self.change(list(items), ["add"] * len(items), list(items.values()))

    def update(self, items: Mapping[int, str]) -> int:
        """Replace the text (and vector) of existing items; see :meth:`change`."""
        return self.change(list(items), ["update"] * len(items), list(items.values()))

    def delete(self, item_ids: Iterable[int]) -> int:
        """Delete items: never returned from now on; see :meth:`change`."""
        ids = list(item_ids)
        return self.change(ids, ["delete"] * len(ids), [""] * len(ids))


def _tensor(name: str, data: np.ndarray, dtype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(data.shape), dtype)
    tensor.set_data_from_numpy(data)
    return tensor
