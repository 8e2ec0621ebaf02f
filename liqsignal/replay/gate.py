"""Gate v4 USDT-perpetual REST subset of the replay exchange, as ccxt 4.5's ``gate`` asks for it.

Served paths (GET, under ``/api/v4``): ``/spot/time``, ``/spot/currencies`` (loaded with the
markets), ``/futures/usdt/contracts``,
``/futures/usdt/candlesticks`` (also ``contract=mark_<id>`` for mark candles),
``/futures/usdt/funding_rate``, ``/futures/usdt/contract_stats`` (open interest history with
the per-bar ``long_liq_usd`` / ``short_liq_usd``) and ``/futures/usdt/liq_orders`` (public
liquidation history).

Gate's conventions kept here: times in SECONDS (``from``, ``to``, ``t``, ``time``); sizes in
contracts (``quanto_multiplier`` base units each: BTC 0.0001, ETH 0.01, else 1); candles are
the rows in ``[from, to]`` (at most 2000) or the newest ``limit`` (not both); funding rows in
``[from, to]``, newest ``limit`` (max 1000), newest first; contract stats from ``from`` on, the
earliest ``limit`` (default 30, max 100), oldest first, or the newest ``limit`` without
``from``; liquidation orders in ``[from, to]`` with ``to - from`` at most 3600 s, the newest
``limit`` (default 100, max 1000), newest first, ``size`` = the liquidated POSITION's size
(> 0 long, < 0 short). Errors: HTTP 400 ``{"label": ..., "message": ...}``
(``INVALID_PARAM_VALUE``, ``CONTRACT_NOT_FOUND``), as Gate answers.

Data: the replay datadir's Freqtrade files, plus liqsignal's liquidation files in
``<datadir>/futures/liqsignal/`` (see :mod:`liqsignal.data.liquidations`):
``<PAIR>-liquidation_events.feather`` feeds ``liq_orders``; ``<PAIR>-<tf>-liquidations.feather``
feeds the liquidation fields of ``contract_stats`` at that interval, or summed from a finer
file (0 where the file has no row,
as Gate reports a bar without liquidations; ``*_liq_amount`` and ``*_liq_size`` derived from the
USD at the bar's close). Contract fields other than the multiplier are plausible constants.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from liqsignal.data.liquidations import read_bars_file, read_events_file
from liqsignal.replay._venue import (
    Venue,
    VenueError,
    decimal_text,
    newest,
    serves,
    timeframe_names,
)
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange, timeframe_to_ms

__all__ = ["CONTRACT_SIZE", "ccxt_config", "register"]

PREFIX = "/api/v4"
INTERVALS = timeframe_names("1m 5m 15m 30m 1h 4h 8h 1d")
STAT_INTERVALS = ("5m", "15m", "30m", "1h", "4h", "1d")
CONTRACT_SIZE = {"BTC": 0.0001, "ETH": 0.01}
URL_KEYS = ("wallet", "futures", "margin", "delivery", "spot", "options", "sub_accounts", "earn")


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.gate`` (USDT perpetuals only)."""
    api = f"{url}{PREFIX}"
    return {
        "urls": {"api": {"public": dict.fromkeys(URL_KEYS, api), "private": {"futures": api}}},
        "options": {
            "fetchMarkets": {"types": ["swap"]},
            "swap": {"fetchMarkets": {"settlementCurrencies": ["usdt"]}},
            "defaultType": "swap",
        },
    }


class GateError(VenueError):
    def response(self, req: Request) -> Response:
        return json_response({"label": self.code, "message": self.msg}, self.status)


_s = decimal_text("0", 12)


class _Gate(Venue):
    error = GateError
    prefix = PREFIX
    bad_param = ("INVALID_PARAM_VALUE", "Invalid {name}: {value}")
    bad_limit = ("INVALID_PARAM_VALUE", "limit must be within [1, {maximum}]")
    market_key = "contract"
    no_market = ("MISSING_REQUIRED_PARAM", "Missing required parameter: {key}")
    unknown_market = ("CONTRACT_NOT_FOUND", "Contract not found")

    def __init__(self, rx: ReplayExchange) -> None:
        super().__init__(rx, "{base}_{quote}", settles="USDT")  # BTC_USDT
        self.extra = Path(self.data.folder) / "liqsignal"

    # helpers --------------------------------------------------------------------------------
    @staticmethod
    def parse_int(text: str) -> int:
        return int(float(text))  # Gate takes times like 1767225600.0

    def _contract(self, req: Request) -> tuple[str, str]:
        cid = self._market(req)
        return cid, self.markets[cid]

    @staticmethod
    def _cap_s(req: Request) -> int:
        return Venue._cap(req) // 1000

    @staticmethod
    def _size(cid: str) -> float:
        return CONTRACT_SIZE.get(cid.split("_")[0], 1.0)

    def _close_at(self, fp: str, ts_ms: np.ndarray) -> np.ndarray:
        """Close of the candle open at or before each time (NaN before the first)."""
        df = self.first_frame(fp, "futures")
        if df is None or df.empty:
            return np.full(len(ts_ms), np.nan)
        idx = np.searchsorted(df["ts"].to_numpy(), ts_ms, "right") - 1
        close = df["close"].to_numpy(dtype="float64")
        return np.where(idx >= 0, close[np.clip(idx, 0, None)], np.nan)

    def _liq_bars(self, fp: str, interval: str) -> pd.DataFrame:
        """Per-bar liquidation file of ``interval``, else the sums of the finest file that
        divides it (Gate sums its own bars at every interval)."""
        exact = read_bars_file(self.extra / f"{fp}-{interval}-liquidations.feather")
        if len(exact):
            return exact
        target = timeframe_to_ms(interval)
        finer = [
            tf
            for tf in STAT_INTERVALS
            if timeframe_to_ms(tf) < target and target % timeframe_to_ms(tf) == 0
        ]
        for tf in reversed(finer):
            src = read_bars_file(self.extra / f"{fp}-{tf}-liquidations.feather")
            if len(src):
                out = (
                    src.set_index("date")
                    .resample(pd.Timedelta(milliseconds=target))
                    .sum(min_count=1)
                    .dropna(how="all")
                    .reset_index()
                )
                return out
        ev = read_events_file(self.extra / f"{fp}-liquidation_events.feather")
        if len(ev):  # Gate sums its own liquidation orders: every bar of their span, 0 if none
            step = pd.Timedelta(milliseconds=target)
            grid = pd.date_range(
                ev["timestamp"].iloc[0].floor(step), ev["timestamp"].iloc[-1].floor(step), freq=step
            )
            bucket = ev["timestamp"].dt.floor(step)
            out = pd.DataFrame({"date": grid.as_unit("ms")})
            for side in ("long", "short"):
                sums = ev["usd"].where(ev["side"] == side, 0.0).groupby(bucket).sum()
                out[f"{side}_liquidated_usd"] = sums.reindex(grid, fill_value=0.0).to_numpy()
            out["events"] = ev.groupby(bucket).size().reindex(grid, fill_value=0).to_numpy()
            return out
        return exact

    # handlers -------------------------------------------------------------------------------
    @serves("/spot/time")
    def time(self, req: Request) -> Response:
        return json_response({"server_time": req.now_ms})

    @serves("/spot/currencies")
    def currencies(self, req: Request) -> Response:
        """Gate's currency list (ccxt loads it with the markets): the replay's base and quote
        coins, no chains."""
        coins = sorted({c for cid in self.markets for c in cid.split("_")})
        return json_response(
            [
                {
                    "currency": c,
                    "name": c,
                    "delisted": False,
                    "withdraw_disabled": False,
                    "withdraw_delayed": False,
                    "deposit_disabled": False,
                    "trade_disabled": False,
                    "chains": [],
                }
                for c in coins
            ]
        )

    @serves("/futures/usdt/contracts")
    def contracts_list(self, req: Request) -> Response:
        out = []
        for cid, fp in sorted(self.markets.items()):
            df = self.first_frame(fp, "futures")
            created = self.listed_ms(fp) // 1000
            last = _s(df["close"].iloc[-1]) if df is not None and len(df) else "0"
            out.append(
                {
                    "name": cid,
                    "type": "direct",
                    "quanto_multiplier": _s(self._size(cid)),
                    "leverage_min": "1",
                    "leverage_max": "125",
                    "maintenance_rate": "0.004",
                    "mark_type": "index",
                    "mark_price": last,
                    "index_price": last,
                    "last_price": last,
                    "order_price_round": "0.1",
                    "mark_price_round": "0.01",
                    "order_price_deviate": "0.2",
                    "order_size_min": 1,
                    "order_size_max": 1000000,
                    "enable_decimal": False,
                    "funding_interval": 28800,
                    "funding_rate": "0.0001",
                    "create_time": created,
                    "launch_time": created,
                    "in_delisting": False,
                    "status": "trading",
                    "contract_type": "",
                }
            )
        return json_response(out)

    @serves("/futures/usdt/candlesticks")
    def candlesticks(self, req: Request) -> Response:
        raw = req.query.get("contract", "")
        mark = raw.startswith("mark_")
        if mark:
            req.query["contract"] = raw[len("mark_") :]
        cid, fp = self._contract(req)
        interval = req.query.get("interval", "5m")
        if interval not in INTERVALS:
            raise GateError("INVALID_PARAM_VALUE", f"Invalid interval: {interval}")
        tf_s = timeframe_to_ms(INTERVALS[interval]) // 1000
        start, end = self._int(req, "from"), self._int(req, "to")
        limit = self._int(req, "limit")
        if limit is not None and start is not None:
            raise GateError("INVALID_PARAM_VALUE", "limit conflicts with from")
        df = self.data.frame(fp, INTERVALS[interval], "mark" if mark else "futures")
        if df is None:
            return json_response([])
        ts = df["ts"].to_numpy() // 1000
        cap = self._cap_s(req)
        end = cap if end is None else min(end, cap)
        if start is not None:
            if (end - start) // tf_s + 1 > 2000:
                raise GateError("INVALID_PARAM_VALUE", "too many points requested (max 2000)")
            lo = int(np.searchsorted(ts, start, "left"))
            hi = int(np.searchsorted(ts, end, "right"))
        else:
            hi = int(np.searchsorted(ts, end, "right"))
            lo = max(0, hi - (limit or 100))
        size = self._size(cid)
        out = []
        for r in df.iloc[lo:hi].itertuples(index=False):
            row: dict[str, Any] = {
                "t": int(r.ts) // 1000,
                "o": _s(r.open),
                "h": _s(r.high),
                "l": _s(r.low),
                "c": _s(r.close),
            }
            if not mark:
                row["v"] = round(float(r.volume) / size)
                row["sum"] = _s(float(r.volume) * float(r.close))
            out.append(row)
        return json_response(out)

    @serves("/futures/usdt/funding_rate")
    def funding_rate(self, req: Request) -> Response:
        _cid, limit, df, col = self.market_funding(req, 100, 1000)
        ts_s = df["ts"].to_numpy() // 1000
        rows = df.iloc[self._newest(req, ts_s, "from", "to", limit, self._cap_s(req))]
        rows = rows.iloc[::-1]
        return json_response(
            [{"t": int(r.ts) // 1000, "r": _s(getattr(r, col))} for r in rows.itertuples()]
        )

    @serves("/futures/usdt/contract_stats")
    def contract_stats(self, req: Request) -> Response:
        cid, fp = self._contract(req)
        interval = req.query.get("interval", "5m")
        if interval not in STAT_INTERVALS:
            raise GateError("INVALID_PARAM_VALUE", f"Invalid interval: {interval}")
        limit = self._limit(req, 30, 100)
        oi = self.data.frame(fp, interval, "open_interest")
        bars = self._liq_bars(fp, interval)
        times: set[int] = set()
        if oi is not None:
            times.update(int(t) for t in oi["ts"])
        times.update(int(t) for t in bars["date"].astype("int64"))
        if not times:
            return json_response([])
        grid = np.array(sorted(times), dtype=np.int64)
        grid_s = grid // 1000
        start = self._int(req, "from")
        hi = int(np.searchsorted(grid_s, self._cap_s(req), "right"))
        if start is None:
            lo = max(0, hi - limit)
        else:
            lo = int(np.searchsorted(grid_s, start, "left"))
            hi = min(hi, lo + limit)
        sel = grid[lo:hi]
        size = self._size(cid)
        close = self._close_at(fp, sel)
        oi_amount = oi_value = None
        if oi is not None:
            o = oi.set_index("ts")
            oi_amount = o["open_interest_amount"].reindex(sel).to_numpy(dtype="float64")
            oi_value = o["open_interest_value"].reindex(sel).to_numpy(dtype="float64")
        b = bars.set_index(bars["date"].astype("int64"))
        long_usd = b["long_liquidated_usd"].reindex(sel).fillna(0.0).to_numpy()
        short_usd = b["short_liquidated_usd"].reindex(sel).fillna(0.0).to_numpy()
        out = []
        for i, t in enumerate(sel):
            px = close[i]
            la = long_usd[i] / px if px > 0 else 0.0
            sa = short_usd[i] / px if px > 0 else 0.0
            amount = oi_amount[i] if oi_amount is not None else np.nan
            value = oi_value[i] if oi_value is not None else np.nan
            if np.isnan(value) and not np.isnan(amount):
                value = amount * px
            row = {
                "time": int(t) // 1000,
                "lsr_taker": "1",
                "lsr_account": "1",
                "long_liq_size": _s(round(la / size)),
                "long_liq_amount": _s(la),
                "long_liq_usd": _s(long_usd[i]),
                "short_liq_size": _s(round(sa / size)),
                "short_liq_amount": _s(sa),
                "short_liq_usd": _s(short_usd[i]),
                "open_interest": _s(amount / size),
                "open_interest_usd": _s(value),
                "top_lsr_account": "1",
                "top_lsr_size": "1",
                "mark_price": _s(px),
            }
            if np.isnan(amount):  # no open interest file for this bar: left out, not "0"
                del row["open_interest"], row["open_interest_usd"]
            out.append(row)
        return json_response(out)

    @serves("/futures/usdt/liq_orders")
    def liq_orders(self, req: Request) -> Response:
        cid, fp = self._contract(req)
        limit = self._limit(req, 100, 1000)
        cap = self._cap_s(req)
        start, end = self._int(req, "from"), self._int(req, "to")
        end = cap if end is None else min(end, cap)
        start = end - 3600 if start is None else start
        if end - start > 3600:
            raise GateError(
                "INVALID_PARAM_VALUE", "Interval between from and to cannot exceed 3600"
            )
        ev = read_events_file(self.extra / f"{fp}-liquidation_events.feather")
        if ev.empty:
            return json_response([])
        ts = ev["timestamp"].astype("int64").to_numpy() // 1000
        size = self._size(cid)
        out = []
        for r in ev.iloc[newest(ts, start, end, end, limit)].iloc[::-1].itertuples(index=False):
            contracts = float(r.amount) / size
            out.append(
                {
                    "time": int(pd.Timestamp(r.timestamp).value // 1_000_000_000),
                    "contract": cid,
                    "size": _s(contracts if r.side == "long" else -contracts),
                    "order_size": _s(-contracts if r.side == "long" else contracts),
                    "order_price": _s(r.price),
                    "fill_price": _s(r.price),
                    "left": 0,
                }
            )
        return json_response(out)


def register(rx: ReplayExchange) -> None:
    """Add the Gate routes to ``rx``."""
    _Gate(rx).register()
