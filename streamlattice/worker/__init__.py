"""A worker node: the consume-infer-produce loop, its exactly-once transactions, and what it reports about itself."""
