"""The one exception tree of liqsignal; each class says how a caller should react.

::

    LiqsignalError                 base: catch this to catch everything liqsignal raises
    ├── ConfigError (ValueError)   a setting is wrong: fix the config; names the key
    ├── InputError (ValueError)    bad input data: fix the data; names the column and first bad row
    ├── ForecastError (ValueError) the cascade forecast's model cannot be fitted or used: names the
    │                              file or the reason; the forecast columns fall back to NaN
    └── DataError                  data could not be fetched, read or stored
        ├── TemporaryDataError     worth retrying later (timeout, rate limit, 5xx)
        ├── PermanentDataError     will not succeed on retry (unknown market, delisted, 4xx)
        └── CorruptFileError       a stored file cannot be read: left in place, path named
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptFileError",
    "DataError",
    "ForecastError",
    "InputError",
    "LiqsignalError",
    "PermanentDataError",
    "TemporaryDataError",
    "traceback_of",
]


class LiqsignalError(Exception):
    """Base class of every error liqsignal raises on purpose."""


class ConfigError(LiqsignalError, ValueError):
    """A configuration value is invalid. The message names the key and what was expected."""


class InputError(LiqsignalError, ValueError):
    """Input data is invalid. The message names the column and the first bad row."""


class ForecastError(LiqsignalError, ValueError):
    """The forecast cannot be fitted or applied: a missing or corrupt model file, a model fitted
    on other features or another horizon, too little history. The message names the file or the
    reason; ``liqsignal.forecast.apply_forecast`` turns it into NaN columns and a warning."""


class DataError(LiqsignalError):
    """Market data could not be fetched, read or stored."""


class TemporaryDataError(DataError):
    """A temporary failure (timeout, rate limit, server error): retry later, with backoff."""


class PermanentDataError(DataError):
    """A failure that retrying will not fix (unknown or delisted market, bad request)."""


class CorruptFileError(DataError):
    """A stored data file cannot be read. It is left in place; the message names its path."""


def traceback_of(
    exc: BaseException | None, known: tuple[type[BaseException], ...] = ()
) -> BaseException | None:
    """``exc_info`` for a log call that reports ``exc`` and carries on: None (one line) for a
    known failure (liqsignal's own errors, I/O errors, timeouts, the ``known`` types such as
    ccxt's or Freqtrade's), ``exc`` itself (its traceback) for anything else, which is a bug."""
    if exc is None or isinstance(exc, (LiqsignalError, OSError, TimeoutError, *known)):
        return None
    return exc
