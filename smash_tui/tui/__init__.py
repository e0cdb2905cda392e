"""The command center's views, widgets, messages and helpers (see ``smash_tui.tui.app``).

- ``base``: the view base class; ``dashboard``, ``architectures``, ``jobs``,
  ``analysis`` (proxy vs truth, Pareto): the views; ``dialogs``: modal forms.
- ``data``: ``Store``, every database read and write, run in worker threads;
  ``messages``: what those workers post back.
- ``forms``, ``stats``, ``spec_view``, ``format``, ``tables``, ``widgets``,
  ``processes``: validation, rank statistics, the architecture diagram,
  formatting, table syncing, charts and the subprocesses the app starts.

Nothing here imports torch or ``engine`` (an import-linter contract checks it).
"""
