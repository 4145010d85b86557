"""`python -m streamlattice` is the `streamlattice` command."""

from streamlattice.cli.main import main

main()
