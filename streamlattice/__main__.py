"""`python -m streamlattice` is the `streamlattice` command."""

from streamlattice.cli import main

main()
