"""The local evaluation engine: plans, the pipelined runner, datasets, templates, metrics, statistics."""
