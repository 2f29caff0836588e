"""seld: streaming sound event localization and detection."""

__version__ = "0.1.0"


class SeldError(Exception):
    """An error the user can act on: its message names the file and the problem."""
