"""Optional dependencies: each extra's package missing gives one clear error naming the extra
(``pip install 'liqsignal[<extra>]'``), and the core install imports and builds its command line
without any of them. A missing package is simulated with ``sys.modules[name] = None``, which
makes ``import name`` raise ModuleNotFoundError."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from liqsignal._optional import EXTRAS, MissingDependencyError, require
from liqsignal.exceptions import LiqsignalError

ROOT = Path(__file__).resolve().parents[1]


def _missing(monkeypatch: pytest.MonkeyPatch, package: str, *modules: str) -> None:
    """``package`` is not installed, and ``modules`` (which import it) are not imported yet."""
    monkeypatch.setitem(sys.modules, package, None)
    for name in modules:
        monkeypatch.delitem(sys.modules, name, raising=False)


def _hint(extra: str) -> str:
    return f"pip install 'liqsignal[{extra}]'"


@pytest.mark.parametrize(("extra", "package"), [(e, p) for e, pkgs in EXTRAS.items() for p in pkgs])
def test_require_names_the_extra(monkeypatch: pytest.MonkeyPatch, extra: str, package: str) -> None:
    _missing(monkeypatch, package)
    with pytest.raises(MissingDependencyError) as info:
        require(package, extra=extra, feature="this part")
    msg = str(info.value)
    assert _hint(extra) in msg
    assert EXTRAS[extra][package] in msg  # the distribution to install, e.g. python-telegram-bot
    assert isinstance(info.value, ImportError) and isinstance(info.value, LiqsignalError)


def test_require_returns_the_module() -> None:
    assert require("matplotlib", extra="plot", feature="x").__name__ == "matplotlib"


def test_require_of_a_package_no_extra_holds_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not a package of that extra"):
        require("numpy", extra="plot", feature="x")


def _import(name: str) -> Callable[[], object]:
    return lambda: importlib.import_module(name)


def _pyplot() -> object:
    from liqsignal.plot import _pyplot

    return _pyplot()


def _plotly() -> object:
    from liqsignal.plot_html import _plotly

    return _plotly()


def _forecast_scores() -> object:
    from liqsignal.forecast import score_probabilities

    return score_probabilities(np.array([0.0, 1.0]), np.array([0.2, 0.8]))


@pytest.mark.parametrize(
    ("extra", "package", "modules", "use"),
    [
        (
            "freqtrade",
            "freqtrade",
            ["liqsignal.freqtrade", "liqsignal.guard_mixin"],
            _import("liqsignal.freqtrade"),
        ),
        ("alerts", "telegram", ["liqsignal.alerts.telegram"], _import("liqsignal.alerts.telegram")),
        ("plot", "matplotlib", [], _pyplot),
        ("plot", "plotly", [], _plotly),
        ("forecast", "sklearn", [], _forecast_scores),
        ("replay", "websockets", ["liqsignal.replay.ws"], _import("liqsignal.replay.ws")),
    ],
    ids=["freqtrade", "alerts-telegram", "plot-matplotlib", "plot-plotly", "forecast", "replay"],
)
def test_each_extra_missing_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch,
    extra: str,
    package: str,
    modules: list[str],
    use: Callable[[], object],
) -> None:
    _missing(monkeypatch, package, *modules)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'liqsignal\[{extra}\]'"):
        use()


_CORE = """
import sys
for name in {missing!r}:
    sys.modules[name] = None
import liqsignal, liqsignal.cli, liqsignal.replay, liqsignal.data.download
import liqsignal.data.provider, liqsignal.alerts.service
from liqsignal.cli import main
try:
    main(["--help"])
except SystemExit as e:
    assert e.code == 0, e.code
"""


def test_core_install_runs_without_any_extra() -> None:
    """The engine, the data layer and the command line import with no optional package."""
    missing = sorted({p for pkgs in EXTRAS.values() for p in pkgs})
    out = subprocess.run(
        [sys.executable, "-c", _CORE.format(missing=missing)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for command in ("map", "download", "replay", "alerts", "demo"):
        assert command in out.stdout
