"""streamlattice: a power-aware inference lattice on Apache Kafka and ONNX Runtime."""

from streamlattice.config import Lattice, load_lattice
from streamlattice.errors import StreamLatticeError
from streamlattice.sdk.client import LatticeClient, LatticeProducer, ResultSubscriber
from streamlattice.wire.records import Result

__all__ = [
    "Lattice",
    "LatticeClient",
    "LatticeProducer",
    "Result",
    "ResultSubscriber",
    "StreamLatticeError",
    "load_lattice",
]
