"""Pure placement decisions: which node serves which partition, and how the group leader hands them out; no I/O."""
