"""Errors a user can fix (bad flag, missing data, bad checkpoint).

The CLI prints them as one line, ``error: <message>``, and exits with status 2;
anything else is a bug and keeps its traceback.
"""


class ResnetlabError(Exception):
    """Base class for problems caused by input, not by resnetlab itself."""


class DataError(ResnetlabError):
    """A dataset is missing, corrupt, or does not match what was asked for."""


class CheckpointError(ResnetlabError):
    """A checkpoint or weights file is missing, corrupt, unsafe or inconsistent."""


class TrainingDiverged(ResnetlabError):
    """The loss or the weights became non-finite; the last good checkpoint is kept."""
