"""The `streamlattice` command."""
