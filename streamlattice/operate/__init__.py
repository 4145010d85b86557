"""Operating a lattice on one machine: the status view, the local worker supervisor, the demo."""
