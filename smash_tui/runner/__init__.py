"""The worker process: the one place that joins the engine's loops to storage.

- ``worker``: ``Worker``, the claim loop with its heartbeat thread, and its config;
- ``reporter``: ``JobContext``, the engine's ``JobReporter`` written to the database;
- ``handlers``: one function per job kind (train, search, score, retrain);
- ``launch``: starting a detached ``smash worker`` (torch-free: the app uses it).

Importing this package loads nothing heavy; ``worker`` and ``handlers`` load torch.
"""
