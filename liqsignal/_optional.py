"""Optional dependencies: import one, or fail with one line naming the extra that installs it.

The core install (``pip install liqsignal``) runs the engine, the data layer and the command
line; each part that needs more names its extra (pyproject.toml)::

    freqtrade  the Freqtrade columns, guards and FreqAI features (liqsignal.freqtrade)
    alerts     the Telegram alert service (python-telegram-bot, APScheduler)
    plot       pictures and the interactive map (matplotlib, plotly)
    forecast   the cascade forecast's model (scikit-learn)
    replay     the replay exchange's WebSocket streams (websockets)
    all        everything above

``require("telegram", extra="alerts", feature="Telegram alerts")`` returns the module, or raises
:class:`MissingDependencyError` (an ``ImportError`` and a ``LiqsignalError``, so the command line
prints it as one line) saying ``pip install 'liqsignal[alerts]'``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from liqsignal.exceptions import LiqsignalError

__all__ = ["EXTRAS", "MissingDependencyError", "require"]

#: extra -> {importable top-level module: the distribution that provides it}
EXTRAS: dict[str, dict[str, str]] = {
    "freqtrade": {"freqtrade": "freqtrade"},
    "alerts": {"telegram": "python-telegram-bot", "apscheduler": "APScheduler"},
    "plot": {"matplotlib": "matplotlib", "plotly": "plotly"},
    "forecast": {"sklearn": "scikit-learn"},
    "replay": {"websockets": "websockets"},
}


class MissingDependencyError(LiqsignalError, ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` (dotted names allowed) for ``feature``, which ``extra`` installs."""
    top = module.partition(".")[0]
    if extra not in EXTRAS or top not in EXTRAS[extra]:
        raise ValueError(f"require({module!r}, extra={extra!r}): not a package of that extra")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{feature} needs {EXTRAS[extra][top]}, which is not installed "
            f"({type(e).__name__}: {e}): pip install 'liqsignal[{extra}]'"
        ) from e
