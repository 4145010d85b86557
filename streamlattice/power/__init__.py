"""Where a node's power comes from: simulated profiles and recorded or live feeds, read on a clock."""
