"""NAS-Bench-201 cells ("nb201"): the second kind of search space.

- `engine.nb201.cell`: the cell value, its benchmark string, canonical form and hash
  (no torch, no numpy).
- `engine.nb201.space`: `CellSpace`, the network size a cell is built at, and presets
  (no torch, no numpy).
- `engine.nb201.sampler`: `sample` and `perturb`, pure functions of a numpy Generator.
- `engine.nb201.hypernet`: the cell encoding and the HyperNet that mixes learned bases.
- `engine.nb201.network`: one forward function; the SMASH / weight-sharing network and
  the derived network.
- `engine.nb201.cost`: parameters and FLOPs of a derived network.
- `engine.nb201.kind`: `NB201`, the `SpaceKind` object the loops use.

This package imports nothing on its own, so the torch-free modules stay torch-free.
"""
