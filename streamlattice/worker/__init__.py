"""A worker node: intake, inference hand-off, outgoing records, checkpoint, membership and heartbeat."""
