"""Tests of the storage package, against SQLite and PostgreSQL."""
