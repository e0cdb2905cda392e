"""Persistence for smash: SQLAlchemy models, migrations, job queue and queries."""
