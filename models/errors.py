"""The error the tracer and the ops it rewrites raise for a target they cannot construct."""


class UnsupportedModelError(ValueError):
    """The target holds an op the construction cannot replace or keep."""
