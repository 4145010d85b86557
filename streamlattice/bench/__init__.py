"""The side-by-side benchmark behind `streamlattice bench` (see harness.py)."""

# in the order they are measured: the two limits, the peers, then ours
CONTENDERS = ("compute_limit", "transport_limit", "naive", "batched_loop", "faust", "quixstreams", "streamlattice")

# each contender's code, a short file in the repository's bench/contenders/ that the harness runs;
# the transport limit is the faster of two clients
FILES: dict[str, tuple[str, ...]] = {
    "compute_limit": ("compute_limit.py",),
    "transport_limit": ("transport_aiokafka.py", "transport_confluent.py"),
    "naive": ("naive.py",),
    "batched_loop": ("batched_loop.py",),
    "faust": ("faust_take.py",),
    "quixstreams": ("quixstreams_app.py",),
    "streamlattice": ("streamlattice_worker.py",),
}

# the peers a user could pick instead of streamlattice, each at its best (naive is the floor, not a peer)
FAIR_PEERS = ("batched_loop", "faust", "quixstreams")
