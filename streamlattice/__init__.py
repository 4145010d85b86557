"""streamlattice: a power-aware inference lattice on Apache Kafka and ONNX Runtime."""

from streamlattice.client import LatticeClient, LatticeProducer, Result, ResultSubscriber
from streamlattice.config import Lattice, load_lattice
from streamlattice.errors import StreamLatticeError

__all__ = [
    "Lattice",
    "LatticeClient",
    "LatticeProducer",
    "Result",
    "ResultSubscriber",
    "StreamLatticeError",
    "load_lattice",
]
