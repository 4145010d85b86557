"""The thin Kafka layer: clients, settings and security, topics, groups, compacted topics, lag, the
partitioner, the schema registry."""
