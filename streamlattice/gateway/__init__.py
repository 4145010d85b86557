"""The HTTP gateway: the Open Inference Protocol (KServe v2) in front of the lattice."""
