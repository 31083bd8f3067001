"""Terminal rendering shared by the command line (``client/cli.py``) and the demo
(``client/demo.py``), so that neither imports the other."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from client.grpc_client import Recommendation

__all__ = ["print_recommendation", "recommendation_table"]


def recommendation_table(query: str, rec: Recommendation) -> Table:
    """A rich table of one answer: rank, item id, score (3 decimals) and title, with the
    number of reranked candidates (or that none were needed), the degraded flag, the
    round trip in ms and the model version that answered in its title."""
    if rec.n_scored == 0 and not rec.degraded and rec.item_ids:
        # a request whose blend keeps the retrieval order (serving/reranker.py)
        title = f"query {query!r}: retrieval order (its blend needs no reranking)"
    else:
        title = f"query {query!r}: {rec.n_scored} reranked" + (
            " (degraded)" if rec.degraded else ""
        )
    models = sorted({label.split(":", 1)[-1] for label in rec.served_by})
    served = f", model {', '.join(models)}" if models else ""
    table = Table(title=f"{title}, {rec.latency_ms:.1f} ms{served}")
    table.add_column("#", justify="right")
    table.add_column("item id", justify="right")
    table.add_column("score", justify="right")
    table.add_column("title")
    for rank, (i, s, t) in enumerate(zip(rec.item_ids, rec.scores, rec.titles), 1):
        table.add_row(str(rank), str(i), f"{s:.3f}", t)
    return table


def print_recommendation(query: str, rec: Recommendation, console: Console | None = None) -> None:
    """Print :func:`recommendation_table` to ``console`` (a new one on stdout if ``None``)."""
    (console or Console()).print(recommendation_table(query, rec))
