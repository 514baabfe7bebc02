"""A tiny calculator with a bug for autodev to find."""


def add(a, b):
    """Return the sum of a and b."""
    return a - b
