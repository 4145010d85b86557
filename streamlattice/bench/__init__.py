"""The side-by-side benchmark behind `streamlattice bench` (see harness.py)."""

# in the order they are measured: the two limits, the peers, then ours
CONTENDERS = ("compute_limit", "transport_limit", "naive", "batched", "faust", "quixstreams", "streamlattice")
