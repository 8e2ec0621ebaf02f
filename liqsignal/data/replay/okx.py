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

from liqsignal.data.replay import server
from liqsignal.data.replay.server import ReplayExchange, Request, Response, json_response

__all__ = ["ccxt_config", "register"]

server.VENUES.setdefault("okx", __name__)

BARS = {
    "1m": "1m",
    "3m": "3m",
    "5m": "5m",
    "15m": "15m",
    "30m": "30m",
    "1H": "1h",
    "2H": "2h",
    "4H": "4h",
    "6Hutc": "6h",
    "12Hutc": "12h",
    "1Dutc": "1d",
    "6H": "6h",
    "12H": "12h",
    "1D": "1d",
}
OI_PERIODS = {"5m": "5m", "1H": "1h", "1D": "1d"}
CT_VAL = {"BTC": 0.01, "ETH": 0.1}


def ccxt_config(url: str) -> dict[str, Any]:
    """Overlay for ``ccxt.okx`` (swap markets only)."""
    return {
        "urls": {"api": {"rest": url}},
        "options": {"fetchMarkets": {"types": ["swap"]}, "defaultType": "swap"},
    }


class OkxError(Exception):
    def __init__(self, code: str, msg: str, status: int = 200) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _ok(data: list[Any]) -> Response:
    return json_response({"code": "0", "msg": "", "data": data})


def _s(x: Any) -> str:
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return ""
    return np.format_float_positional(float(x), trim="-", precision=10)


class _Okx:
    def __init__(self, rx: ReplayExchange) -> None:
        self.rx = rx
        self.data = rx.data
        self.inst = {  # BTC-USDT-SWAP -> BTC_USDT_USDT
            f"{base}-{quote}-SWAP": fp
            for base, quote, settle, fp in self.data.perpetuals()
            if quote == settle
        }

    def _inst(self, req: Request) -> str:
        inst = req.query.get("instId")
        if not inst:
            raise OkxError("50014", "Parameter instId can not be empty")
        if inst not in self.inst:
            raise OkxError("51001", "Instrument ID does not exist")
        return inst

    @staticmethod
    def _int(req: Request, name: str) -> int | None:
        v = req.query.get(name)
        if v in (None, ""):
            return None
        try:
            return int(str(v))
        except ValueError:
            raise OkxError("51000", f"Parameter {name} error") from None

    def _limit(self, req: Request, default: int, maximum: int) -> int:
        limit = self._int(req, "limit")
        if limit is None:
            return default
        if not 1 <= limit <= maximum:
            raise OkxError("51000", "Parameter limit error")
        return limit

    def _window(
        self, req: Request, df: pd.DataFrame, lo_key: str, hi_key: str, limit: int
    ) -> pd.DataFrame:
        """Newest ``limit`` rows with lo < ts < hi (exclusive), newest first."""
        ts = df["ts"].to_numpy()
        lo_v = self._int(req, lo_key)
        hi_v = self._int(req, hi_key)
        cap = req.now_ms if req.visible_until is None else min(req.now_ms, req.visible_until)
        lo = 0 if lo_v is None else int(np.searchsorted(ts, lo_v, "right"))
        hi = int(np.searchsorted(ts, cap, "right"))
        if hi_v is not None:
            hi = min(hi, int(np.searchsorted(ts, hi_v, "left")))
        lo = max(lo, hi - limit)
        return df.iloc[lo:hi].iloc[::-1] if hi > lo else df.iloc[0:0]

    def _ct_val(self, inst: str) -> float:
        return CT_VAL.get(inst.split("-")[0], 1.0)

    # handlers -------------------------------------------------------------------------------
    def time(self, req: Request) -> Response:
        return _ok([{"ts": str(req.now_ms)}])

    def instruments(self, req: Request) -> Response:
        if req.query.get("instType") != "SWAP":
            return _ok([])
        out = []
        for inst, fp in sorted(self.inst.items()):
            base, quote, settle = fp.split("_")
            df = self.data.frame(fp, self.data.timeframes(fp, "futures")[0], "futures")
            listed = int(df["ts"].iloc[0]) if df is not None and len(df) else 0
            out.append(
                {
                    "instType": "SWAP",
                    "instId": inst,
                    "uly": f"{base}-{quote}",
                    "instFamily": f"{base}-{quote}",
                    "baseCcy": "",
                    "quoteCcy": "",
                    "settleCcy": settle,
                    "ctVal": _s(self._ct_val(inst)),
                    "ctMult": "1",
                    "ctValCcy": base,
                    "ctType": "linear",
                    "listTime": str(listed),
                    "expTime": "",
                    "lever": "100",
                    "tickSz": "0.1",
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
            )
        return _ok(out)

    def _candles(self, req: Request, ctype: str) -> Response:
        inst = self._inst(req)
        bar = req.query.get("bar", "1m")
        if bar not in BARS:
            raise OkxError("51000", "Parameter bar error")
        limit = self._limit(req, 100, 300)
        df = self.data.frame(self.inst[inst], BARS[bar], ctype)
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

    def candles(self, req: Request) -> Response:
        return self._candles(req, "futures")

    def mark_candles(self, req: Request) -> Response:
        return self._candles(req, "mark")

    def funding(self, req: Request) -> Response:
        inst = self._inst(req)
        limit = self._limit(req, 100, 100)
        fp = self.inst[inst]
        tfs = self.data.timeframes(fp, "funding_rate")
        if not tfs:
            return _ok([])
        df = self.data.frame(fp, tfs[0], "funding_rate")
        if df is None:
            return _ok([])
        col = "funding_rate" if "funding_rate" in df.columns else "open"
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

    def oi_history(self, req: Request) -> Response:
        inst = self._inst(req)
        period = req.query.get("period", "5m")
        if period not in OI_PERIODS:
            raise OkxError("51000", "Parameter period error")
        limit = self._limit(req, 100, 100)
        df = self.data.frame(self.inst[inst], OI_PERIODS[period], "open_interest")
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

    def open_interest(self, req: Request) -> Response:
        inst = self._inst(req)
        fp = self.inst[inst]
        tfs = self.data.timeframes(fp, "open_interest")
        df = self.data.frame(fp, tfs[0], "open_interest") if tfs else None
        if df is None or df.empty:
            return _ok([])
        cap = req.visible_until
        df = df if cap is None else df[df["ts"] <= cap]
        if df.empty:
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


def _guard(fn: Any) -> Any:
    def handler(req: Request) -> Response:
        try:
            return fn(req)  # type: ignore[no-any-return]
        except OkxError as e:
            return json_response({"code": e.code, "msg": e.msg, "data": []}, e.status)

    return handler


def register(rx: ReplayExchange) -> None:
    """Add the OKX routes to ``rx``."""
    o = _Okx(rx)
    for path, fn in (
        ("/api/v5/public/time", o.time),
        ("/api/v5/public/instruments", o.instruments),
        ("/api/v5/market/candles", o.candles),
        ("/api/v5/market/history-candles", o.candles),
        ("/api/v5/market/mark-price-candles", o.mark_candles),
        ("/api/v5/market/history-mark-price-candles", o.mark_candles),
        ("/api/v5/public/funding-rate-history", o.funding),
        ("/api/v5/rubik/stat/contracts/open-interest-history", o.oi_history),
        ("/api/v5/public/open-interest", o.open_interest),
    ):
        rx.route("GET", path, _guard(fn))
