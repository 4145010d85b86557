"""`python -m streamlattice` is the `streamlattice` command."""

from streamlattice.ops.cli import main

main()
