"""The dev broker: real Apache Kafka in KRaft mode from jars Maven resolves, no Docker."""
