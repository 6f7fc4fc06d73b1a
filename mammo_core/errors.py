"""The library's input errors: configuration, data sets and images."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the offending key."""


class DataError(ValueError):
    """The data set is unusable; the message names the file or folder at fault."""


class ImageError(DataError):
    """One image cannot be used; the message names it.

    `wrong_size` tells a well-formed image of the wrong size (or too many pixels to
    decode) from bytes that are not a usable image: a service answers them differently.
    """

    def __init__(self, message: str, wrong_size: bool = False):
        super().__init__(message)
        self.wrong_size = wrong_size


class FileNameError(DataError):
    """A file name does not match `data.filename_pattern`, so its case cannot be read."""
