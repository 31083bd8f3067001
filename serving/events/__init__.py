"""Live user events: the store the served user tower reads by ``USER_ID`` and the ``events``
Triton model writes (issue 12).

* :mod:`serving.events.store`: :class:`EventBatch`, the :class:`EventStore` protocol and the
  newest-N-per-user rule;
* :mod:`serving.events.sqlite_store`: the embedded default (SQLite in WAL mode, one file beside
  the repository, shared by every model instance and process);
* :mod:`serving.events.redis_store`: Redis, for several servers;
* :mod:`serving.events.recorder`: validation (catalog ids, event types, clock skew, a rate limit
  per user) and the ``events`` model's request handler;
* :mod:`serving.events.settings`: the store chosen at serve time, carried to the models as
  config parameters.
"""
