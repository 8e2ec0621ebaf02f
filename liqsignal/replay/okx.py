"""OKX v5 USDT-swap REST subset of the replay exchange, as ccxt 4.5 asks for it.

Served paths (GET): ``/api/v5/public/time``, ``/api/v5/public/instruments`` (``instType=SWAP``),
``/api/v5/market/candles``, ``/api/v5/market/history-candles``,
``/api/v5/market/mark-price-candles``, ``/api/v5/market/history-mark-price-candles``,
``/api/v5/public/funding-rate-history``, ``/api/v5/rubik/stat/contracts/open-interest-history``,
``/api/v5/public/open-interest``. Data comes from the replay datadir (Freqtrade layout).
Row selection follows OKX: ``before``/``after`` (``begin``/``end`` for the rubik statistics) are
EXCLUSIVE bounds, the NEWEST ``limit`` rows inside them come back, newest first. Contract size
``ctVal`` is a plausible constant (0.01 BTC, 0.1 ETH, else 1); volumes and open interest in
contracts are derived from the base amounts in the files. Errors answer ``{"code": "51001", ...}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from liqsignal.replay._venue import (
    Venue,
    VenueError,
    decimal_text,
    serves,
    timeframe_names,
)
from liqsignal.replay.messages import Request, Response, json_response
from liqsignal.replay.server import ReplayExchange

__all__ = ["ccxt_config", "instrument", "register"]

BARS = {
    **timeframe_names("1m 3m 5m 15m 30m 1h 2h 4h 6h 12h 1d", upper=True),
    **{f"{name}utc": tf for name, tf in timeframe_names("6h 12h 1d", upper=True).items()},
}
OI_PERIODS = {"5m": "5m", "1H": "1h", "1D": "1d"}
CT_VAL = {"BTC": 0.01, "ETH": 0.1}


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.okx`` (swap markets only)."""
    return {
        "urls": {"api": {"rest": url}},
        "options": {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
    }


class OkxError(VenueError):
    status = 200

    def response(self, req: Request) -> Response:
        return json_response({"code": self.code, "msg": self.msg, "data": []}, self.status)


def _ok(data: list[Any]) -> Response:
    return json_response({"code": "0", "msg": "", "data": data})


_s = decimal_text("")


def instrument(
    inst: str, base: str, quote: str, settle: str, ct_val: str, listed_ms: int, tick: str
) -> dict[str, str]:
    """One USDT swap of ``/api/v5/public/instruments`` (also the stream replay's list)."""
    return {
        "instType": "SWAP",
        "instId": inst,
        "uly": f"{base}-{quote}",
        "instFamily": f"{base}-{quote}",
        "baseCcy": "",
        "quoteCcy": "",
        "settleCcy": settle,
        "ctVal": ct_val,
        "ctMult": "1",
        "ctValCcy": base,
        "ctType": "linear",
        "listTime": str(listed_ms),
        "expTime": "",
        "lever": "100",
        "tickSz": tick,
        "lotSz": "0.01",
        "minSz": "0.01",
        "maxLmtSz": "100000000",
        "maxMktSz": "10000",
        "state": "live",
        "alias": "",
        "category": "1",
        "optType": "",
        "stk": "",
        "ruleType": "normal",
    }


class _Okx(Venue):
    error = OkxError
    bad_param = ("51000", "Parameter {name} error")
    market_key = "instId"
    no_market = ("50014", "Parameter instId can not be empty")
    unknown_market = ("51001", "Instrument ID does not exist")

    def __init__(self, rx: ReplayExchange) -> None:
        super().__init__(rx, "{base}-{quote}-SWAP", settles="*")  # BTC-USDT-SWAP

    def _window(
        self, req: Request, df: pd.DataFrame, lo_key: str, hi_key: str, limit: int
    ) -> pd.DataFrame:
        """Newest ``limit`` rows with lo < ts < hi (exclusive), newest first."""
        ts = df["ts"].to_numpy()
        lo_v = self._int(req, lo_key)
        hi_v = self._int(req, hi_key)
        lo = 0 if lo_v is None else int(np.searchsorted(ts, lo_v, "right"))
        hi = int(np.searchsorted(ts, self._cap(req), "right"))
        if hi_v is not None:
            hi = min(hi, int(np.searchsorted(ts, hi_v, "left")))
        lo = max(lo, hi - limit)
        return df.iloc[lo:hi].iloc[::-1] if hi > lo else df.iloc[0:0]

    def _ct_val(self, inst: str) -> float:
        return CT_VAL.get(inst.split("-")[0], 1.0)

    # handlers -------------------------------------------------------------------------------
    @serves("/api/v5/public/time")
    def time(self, req: Request) -> Response:
        return _ok([{"ts": str(req.now_ms)}])

    @serves("/api/v5/public/instruments")
    def instruments(self, req: Request) -> Response:
        if req.query.get("instType") != "SWAP":
            return _ok([])
        out = []
        for inst, fp in sorted(self.markets.items()):
            base, quote, settle = fp.split("_")
            ct = _s(self._ct_val(inst))
            out.append(instrument(inst, base, quote, settle, ct, self.listed_ms(fp), "0.1"))
        return _ok(out)

    def _candles(self, req: Request, ctype: str) -> Response:
        inst = self._market(req)
        bar = req.query.get("bar", "1m")
        if bar not in BARS:
            raise OkxError("51000", "Parameter bar error")
        limit = self._limit(req, 100, 300)
        df = self.data.frame(self.markets[inst], BARS[bar], ctype)
        if df is None:
            return _ok([])
        rows = self._window(req, df, "before", "after", limit)
        ct = self._ct_val(inst)
        out = []
        for r in rows.itertuples(index=False):
            row = [str(int(r.ts)), _s(r.open), _s(r.high), _s(r.low), _s(r.close)]
            if ctype == "futures":
                vol = float(r.volume)
                row += [_s(vol / ct), _s(vol), _s(vol * float(r.close))]
            row.append("1")
            out.append(row)
        return _ok(out)

    @serves("/api/v5/market/candles", "/api/v5/market/history-candles")
    def candles(self, req: Request) -> Response:
        return self._candles(req, "futures")

    @serves("/api/v5/market/mark-price-candles", "/api/v5/market/history-mark-price-candles")
    def mark_candles(self, req: Request) -> Response:
        return self._candles(req, "mark")

    @serves("/api/v5/public/funding-rate-history")
    def funding_history(self, req: Request) -> Response:
        inst, limit, df, col = self.market_funding(req, 100, 100)
        rows = self._window(req, df, "before", "after", limit)
        return _ok(
            [
                {
                    "instType": "SWAP",
                    "instId": inst,
                    "fundingRate": _s(getattr(r, col)),
                    "realizedRate": _s(getattr(r, col)),
                    "fundingTime": str(int(r.ts)),
                    "method": "current_period",
                }
                for r in rows.itertuples(index=False)
            ]
        )

    @serves("/api/v5/rubik/stat/contracts/open-interest-history")
    def oi_history(self, req: Request) -> Response:
        inst = self._market(req)
        period = req.query.get("period", "5m")
        if period not in OI_PERIODS:
            raise OkxError("51000", "Parameter period error")
        limit = self._limit(req, 100, 100)
        df = self.data.frame(self.markets[inst], OI_PERIODS[period], "open_interest")
        if df is None:
            return _ok([])
        rows = self._window(req, df, "begin", "end", limit)
        ct = self._ct_val(inst)
        return _ok(
            [
                [
                    str(int(r.ts)),
                    _s(float(r.open_interest_amount) / ct),
                    _s(r.open_interest_amount),
                    _s(r.open_interest_value),
                ]
                for r in rows.itertuples(index=False)
            ]
        )

    @serves("/api/v5/public/open-interest")
    def open_interest(self, req: Request) -> Response:
        inst = self._market(req)
        df = self.first_frame(self.markets[inst], "open_interest")
        df = None if df is None else self.visible(df, req)
        if df is None or df.empty:
            return _ok([])
        r = df.iloc[-1]
        ct = self._ct_val(inst)
        return _ok(
            [
                {
                    "instType": "SWAP",
                    "instId": inst,
                    "oi": _s(float(r["open_interest_amount"]) / ct),
                    "oiCcy": _s(r["open_interest_amount"]),
                    "oiUsd": _s(r["open_interest_value"]),
                    "ts": str(int(r["ts"])),
                }
            ]
        )


def register(rx: ReplayExchange) -> None:
    """Add the OKX routes to ``rx``."""
    _Okx(rx).register()
