"""The lattice's control plane: the routing app and its decisions, and the worker side that follows its plans."""
