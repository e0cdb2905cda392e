"""Persistence for smash: SQLAlchemy models, migrations, job queue and queries.

- ``storage.db``: URLs (``resolve_url``), engines and ``open_database`` -> ``Database``.
- ``storage.models``: the schema; ``storage.migrations``: its Alembic history,
  applied by ``storage.migrate`` whenever a database is opened.
- ``storage.queue``: jobs (enqueue, claim, heartbeat, pause/resume/cancel) and workers.
- ``storage.records``: what workers record (architectures, scores, metrics, ...).
- ``storage.queries``: what the UI reads (the architecture browser and its filters).
- ``storage.errors``: ``StorageError`` and its subclasses; every message is one line.

Nothing here imports torch or the UI.
"""
