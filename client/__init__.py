"""gRPC client library, batch jobs and the ``towerserve`` command line."""

from client.grpc_client import Recommendation, TowerServeClient, TowerServeError

__all__ = ["Recommendation", "TowerServeClient", "TowerServeError"]
