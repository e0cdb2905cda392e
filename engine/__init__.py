"""The SMASH engine: search space, HyperNet, networks, data and loops (PyTorch only)."""
