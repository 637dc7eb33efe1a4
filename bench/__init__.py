"""The performance benchmark: the operator against the raw cost of one binding (see README.md)."""
