"""The thin Kafka layer: clients and settings, security, topics, groups, compacted topics, lag, the partitioner."""
