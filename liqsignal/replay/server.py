"""Core of the local replay exchange: HTTP server, data source, replay clock, request log.

Venue modules (``binance.py``, ``bybit.py``, ``okx.py``, ...) only add handlers to the route table
``{(method, path): handler}`` through a ``register(exchange)`` function; everything they need is
reachable from the :class:`Request` a handler receives (``req.exchange.data``, ``req.now_ms``).

Threading: requests are served by a stdlib ``ThreadingHTTPServer`` in a background thread; the
data source caches loaded frames behind a lock, the request log is append-only under a lock.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd

from liqsignal.exceptions import ConfigError, CorruptFileError
from liqsignal.replay._venue import LocalService
from liqsignal.replay.messages import Handler, Request, RequestRecord, Response, json_response
from liqsignal.replay.testing import FaultInjector

__all__ = [
    "VENUES",
    "DataSource",
    "ManualClock",
    "ReplayClock",
    "ReplayExchange",
    "timeframe_to_ms",
]

logger = logging.getLogger(__name__)

#: venue name -> module that provides ``register(exchange)``; other venues add themselves here.
VENUES: dict[str, str] = {
    "binance": "liqsignal.replay.binance",
    "bybit": "liqsignal.replay.bybit",
    "okx": "liqsignal.replay.okx",
    "gate": "liqsignal.replay.gate",
    "hyperliquid": "liqsignal.replay.hyperliquid",
    "bitget": "liqsignal.replay.bitget",
    "bitfinex": "liqsignal.replay.bitfinex",  # liquidation history only
    "htx": "liqsignal.replay.htx",  # liquidation history only
}

_TF_UNITS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_FILE_RE = re.compile(r"^(?P<pair>.+)-(?P<tf>\d+[mhdw])-(?P<ctype>[a-z_]+)\.feather$")


def timeframe_to_ms(tf: str) -> int:
    """``"5m"`` -> 300000. Raises ConfigError naming the timeframe when it is not understood."""
    m = re.fullmatch(r"(\d+)([mhdw])", tf)
    if not m:
        raise ConfigError(f"timeframe {tf!r} not understood: expected like 5m, 1h, 1d")
    return int(m.group(1)) * _TF_UNITS[m.group(2)]


def _parse_time(value: str | datetime | int | None) -> int | None:
    """ISO string, datetime or epoch ms -> epoch ms (UTC); None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"replay start {value!r} not understood: expected ISO 8601 like 2026-01-10T00:00Z"
        ) from e
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.value // 1_000_000)


# --------------------------------------------------------------------------------------------
# clock


class ReplayClock:
    """Replay time: ``start + wall_elapsed * speed``; ``speed=None`` is static (no future).

    In static mode :meth:`now_ms` returns the real wall time and :meth:`visible_until` is None,
    which handlers read as "serve every row".
    """

    def __init__(self, start_ms: int | None, speed: float | None) -> None:
        if speed is not None and speed <= 0:
            raise ConfigError(f"speed must be > 0 or None (static), got {speed!r}")
        if speed is not None and start_ms is None:
            raise ConfigError("a replay clock with a speed needs a start time")
        self.start_ms = start_ms
        self.speed = speed
        self._t0 = time.monotonic()

    @property
    def static(self) -> bool:
        return self.speed is None

    def now_ms(self) -> int:
        if self.speed is None or self.start_ms is None:
            return int(time.time() * 1000)
        return self.start_ms + int((time.monotonic() - self._t0) * self.speed * 1000)

    def visible_until(self) -> int | None:
        """Latest visible time in ms, or None when everything is visible (static mode)."""
        return None if self.static else self.now_ms()


class ManualClock(ReplayClock):
    """Replay time that moves only when told (``clock.t = ...``): for tests and benchmarks that
    step one clock shared by the replay servers and a provider. Calling it returns ``t``."""

    def __init__(self, start: pd.Timestamp) -> None:
        super().__init__(int(start.value // 1_000_000), 1.0)
        self.t = start

    def now_ms(self) -> int:
        return int(self.t.value // 1_000_000)

    def __call__(self) -> pd.Timestamp:
        return self.t


# --------------------------------------------------------------------------------------------
# data


class DataSource:
    """Freqtrade-layout feather files of one datadir, loaded lazily and cached.

    ``<datadir>/futures/<PAIR>-<tf>-<candle_type>.feather`` with the pair written
    ``BTC_USDT_USDT`` for ``BTC/USDT:USDT``. Frames come back sorted, with an int64 ``ts`` column
    (epoch ms of ``date``) added for fast slicing.
    """

    def __init__(self, datadir: str | Path, trading_mode: str = "futures") -> None:
        self.datadir = Path(datadir)
        self.folder = self.datadir / trading_mode if trading_mode != "spot" else self.datadir
        if not self.folder.is_dir():
            raise ConfigError(
                f"replay datadir {self.datadir} has no {trading_mode}/ folder "
                f"(expected Freqtrade layout <datadir>/{trading_mode}/<PAIR>-<tf>-<type>.feather)"
            )
        self.files: dict[tuple[str, str, str], Path] = {}
        for p in sorted(self.folder.glob("*.feather")):
            m = _FILE_RE.match(p.name)
            if m:
                self.files[(m["pair"], m["tf"], m["ctype"])] = p
        if not self.files:
            raise ConfigError(f"replay datadir {self.folder} holds no <PAIR>-<tf>-<type>.feather")
        self._cache: dict[tuple[str, str, str], pd.DataFrame] = {}
        self._lock = threading.Lock()

    @staticmethod
    def file_pair_to_pair(file_pair: str) -> str:
        """``BTC_USDT_USDT`` -> ``BTC/USDT:USDT`` (``BTC_USDT`` -> ``BTC/USDT``)."""
        parts = file_pair.split("_")
        if len(parts) == 3:
            return f"{parts[0]}/{parts[1]}:{parts[2]}"
        if len(parts) == 2:
            return f"{parts[0]}/{parts[1]}"
        raise ConfigError(
            f"file pair name {file_pair!r} not understood: expected BASE_QUOTE_SETTLE"
        )

    def file_pairs(self, candle_type: str = "futures") -> list[str]:
        return sorted({fp for (fp, _tf, ct) in self.files if ct == candle_type})

    def perpetuals(self) -> list[tuple[str, str, str, str]]:
        """(base, quote, settle, file pair) of each ``BASE_QUOTE_SETTLE`` futures file pair,
        from which each venue spells its own symbol (BTCUSDT, BTC-USDT-SWAP, ...)."""
        out = []
        for fp in self.file_pairs("futures"):
            parts = fp.split("_")
            if len(parts) == 3:
                out.append((parts[0], parts[1], parts[2], fp))
        return out

    def timeframes(self, file_pair: str, candle_type: str) -> list[str]:
        tfs = [tf for (fp, tf, ct) in self.files if fp == file_pair and ct == candle_type]
        return sorted(tfs, key=timeframe_to_ms)

    def frame(self, file_pair: str, timeframe: str, candle_type: str) -> pd.DataFrame | None:
        """The frame for exactly this file, or one resampled from a finer file, or None."""
        key = (file_pair, timeframe, candle_type)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        if key in self.files:
            df = self._load(self.files[key])
        else:
            df = self._resampled(file_pair, timeframe, candle_type)
            if df is None:
                return None
        with self._lock:
            self._cache[key] = df
        return df

    def _load(self, path: Path) -> pd.DataFrame:
        try:
            df = pd.read_feather(path)
        except Exception as e:  # pyarrow raises several unrelated types on bad files
            raise CorruptFileError(f"cannot read replay file {path}: {e}") from e
        if "date" not in df.columns:
            raise CorruptFileError(f"replay file {path} has no 'date' column: {list(df.columns)}")
        df = df.sort_values("date").reset_index(drop=True)
        df["ts"] = (
            pd.to_datetime(df["date"], utc=True).astype("datetime64[ms, UTC]").astype("int64")
        )
        return df

    def _resampled(self, file_pair: str, timeframe: str, candle_type: str) -> pd.DataFrame | None:
        target = timeframe_to_ms(timeframe)
        finer = [
            tf
            for tf in self.timeframes(file_pair, candle_type)
            if timeframe_to_ms(tf) < target and target % timeframe_to_ms(tf) == 0
        ]
        if not finer:
            return None
        src = self.frame(file_pair, finer[-1], candle_type)
        if src is None or src.empty:
            return None
        bucket = src["ts"] // target * target
        if candle_type == "open_interest":
            # snapshots: keep the ones that fall exactly on the coarser grid
            out = src[src["ts"] % target == 0].reset_index(drop=True)
            return out
        if candle_type == "funding_rate":
            return src
        agg: dict[str, Any] = {"open": "first", "high": "max", "low": "min", "close": "last"}
        for col in src.columns:
            if (
                col not in agg
                and col not in ("date", "ts")
                and np.issubdtype(src[col].dtype, np.number)
            ):
                agg[col] = "sum"
        out = src.groupby(bucket).agg(agg)
        out.index.name = "ts"
        out = out.reset_index()
        out["date"] = pd.to_datetime(out["ts"], unit="ms", utc=True)
        return out

    def first_date_ms(self) -> int:
        """Earliest candle open of all ``futures`` files (epoch ms)."""
        firsts = [
            int(df["ts"].iloc[0])
            for (fp, tf, ct) in self.files
            if ct == "futures" and (df := self.frame(fp, tf, ct)) is not None and len(df)
        ]
        if not firsts:
            raise ConfigError(f"replay datadir {self.folder} holds no futures candles")
        return min(firsts)


# --------------------------------------------------------------------------------------------
# server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rx = self.server.exchange
        resp = rx.dispatch(method, split.path, query, dict(self.headers.items()), body)
        self.send_response(resp.status)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(resp.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("replay %s: " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    exchange: ReplayExchange


class ReplayExchange(LocalService):
    """A local exchange on 127.0.0.1 serving a Freqtrade datadir, with a replay clock.

    ``with ReplayExchange("user_data/data/binance", speed=600, start="2026-01-10") as rx:``
    then point ccxt or Freqtrade at ``rx.ccxt_config()``. ``speed=None`` serves everything
    (backtesting, download-data). Without ``start`` a clocked replay begins 1000 hours after the
    first candle, so strategies have start-up history.

    ``forming_candle=True`` serves the current, unfinished candle last, as Binance does.
    Freqtrade 2026.9 decides whether the last candle is complete from the wall clock, so with a
    replay clock it would take that candle as closed: use ``forming_candle=False`` for a
    Freqtrade dry-run (then prices are the current candle's open, nothing of its future leaks).
    """

    def __init__(
        self,
        datadir: str | Path,
        speed: float | None = None,
        start: str | datetime | int | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        venues: Iterable[str] = ("binance",),
        forming_candle: bool = True,
    ) -> None:
        self.name = "replay exchange"
        self.data = DataSource(datadir)
        self.forming_candle = forming_candle
        start_ms = _parse_time(start)
        if speed is not None and start_ms is None:
            start_ms = self.data.first_date_ms() + 1000 * 3_600_000
        self.clock = ReplayClock(start_ms, speed)
        self.routes: dict[tuple[str, str], Handler] = {}
        self.faults = FaultInjector()
        self.requests: list[RequestRecord] = []
        self.unknown: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self.host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.venues = tuple(venues)
        for venue in self.venues:
            if venue not in VENUES:
                raise ConfigError(f"unknown replay venue {venue!r}; known: {sorted(VENUES)}")
            importlib.import_module(VENUES[venue]).register(self)

    # routes ---------------------------------------------------------------------------------
    def route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self.routes:
            raise ConfigError(f"replay route {method} {path} registered twice")
        self.routes[key] = handler

    def dispatch(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Response:
        rec = RequestRecord(method, path, query)
        with self._log_lock:
            self.requests.append(rec)
        req = Request(
            method,
            path,
            query,
            headers,
            body,
            self,
            self.clock.now_ms(),
            self.clock.visible_until(),
        )
        fault = self.faults.consult(req)
        if fault is not None:
            return fault
        handler = self.routes.get((method, path))
        if handler is None:
            with self._log_lock:
                self.unknown.append(rec)
            logger.warning("replay: no route for %s %s %s", method, path, query)
            return json_response({"code": -5000, "msg": f"Path {method} {path} not found"}, 404)
        try:
            return handler(req)
        except Exception as e:  # a handler bug must reach the client as a 500, and the log
            logger.exception("replay handler %s %s failed", method, path)
            return json_response({"code": -1000, "msg": f"replay handler error: {e}"}, 500)

    # lifecycle ------------------------------------------------------------------------------
    def start(self) -> ReplayExchange:
        if self._server is not None:
            return self
        self._server = _Server((self.host, self._port), _Handler)
        self._server.exchange = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="replay-exchange", daemon=True
        )
        self._thread.start()
        logger.info("replay exchange serving %s at %s", self.data.datadir, self.url)
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def _bound_port(self) -> int | None:
        return None if self._server is None else int(self._server.server_address[1])

    # helpers --------------------------------------------------------------------------------
    def paths(self) -> list[str]:
        """Paths requested so far, in order."""
        with self._log_lock:
            return [r.path for r in self.requests]

    def clear_log(self) -> None:
        with self._log_lock:
            self.requests.clear()
            self.unknown.clear()

    def ccxt_config(self, venue: str = "binance") -> dict[str, Any]:
        """ccxt constructor overlay (also Freqtrade's ``exchange.ccxt_config``) for ``venue``."""
        mod = importlib.import_module(VENUES[venue])
        return dict(mod.ccxt_config(self.url))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock.now_ms() / 1000, tz=UTC)
