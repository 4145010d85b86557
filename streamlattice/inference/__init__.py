"""A task's model at work: task hooks, model building and loading, event checks, the batching policy."""
