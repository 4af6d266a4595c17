"""The errors the models package raises for its user, all :class:`solver.LotteryError`s (the one
base the CLI catches): input it cannot take, a target it cannot construct, a run it cannot do."""

from solver.errors import LotteryError

__all__ = ["LotteryError", "UnsupportedModelError", "UsageError"]


class UsageError(LotteryError, ValueError):
    """Arguments or options that do not fit together or do not fit the target."""


class UnsupportedModelError(LotteryError, ValueError):
    """The target holds an op the construction cannot replace or keep."""
