"""Errors a user can fix: the command line prints them as one line and exits 2."""


class DynscaleError(Exception):
    """A problem with the user's input (data, checkpoint, option), with a hint to fix it."""


class DataError(DynscaleError):
    """A dataset is missing, corrupt, or fails its checksum."""


class CheckpointError(DynscaleError):
    """A run directory is missing, truncated, foreign, or inconsistent with its config."""


class TrainingDiverged(DynscaleError):
    """A loss or a weight became NaN or infinite during training."""


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving its state (resume with ``--resume``)."""
