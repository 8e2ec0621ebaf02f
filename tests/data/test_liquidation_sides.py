"""Each venue's liquidation side through ccxt's own parsers, to "long" / "short" liquidated.

Messages are the venues' documented shapes (the examples in ccxt's parser comments and the
venues' API pages), parsed by the real ccxt / ccxt.pro classes; then ``events_from_ccxt``.
"""

from __future__ import annotations

from typing import Any

import ccxt
import ccxt.pro as ccxtpro
import pytest

from liqsignal.data.liquidations import events_from_ccxt, normalise_side
from liqsignal.exceptions import ConfigError, InputError


def _market(ex: Any, mid: str, symbol: str, size: float) -> dict[str, Any]:
    m = {
        "id": mid,
        "symbol": symbol,
        "base": symbol.split("/")[0],
        "quote": "USDT",
        "settle": "USDT",
        "type": "swap",
        "spot": False,
        "swap": True,
        "contract": True,
        "linear": True,
        "contractSize": size,
        "precision": {"amount": 1, "price": 0.1},
        "limits": {},
    }
    ex.set_markets([m])
    return m


def _binance(side: str) -> dict[str, Any]:
    ex = ccxtpro.binanceusdm()
    m = _market(ex, "BTCUSDT", "BTC/USDT:USDT", 1.0)
    msg = {  # <symbol>@forceOrder "o" object (Binance USD-M docs)
        "s": "BTCUSDT",
        "S": side,
        "o": "LIMIT",
        "f": "IOC",
        "q": "0.014",
        "p": "9910",
        "ap": "9910",
        "X": "FILLED",
        "l": "0.014",
        "z": "0.014",
        "T": 1568014460893,
    }
    return dict(ex.parse_ws_liquidation(msg, m))


def _bybit(side: str) -> dict[str, Any]:
    ex = ccxtpro.bybit()
    m = _market(ex, "BTCUSDT", "BTC/USDT:USDT", 1.0)
    msg = {"T": 1739502302929, "s": "BTCUSDT", "S": side, "v": "0.02", "p": "96000"}
    return dict(ex.parse_ws_liquidation(msg, m))


def _okx(side: str, pos: str) -> dict[str, Any]:
    ex = ccxtpro.okx()
    m = _market(ex, "BTC-USDT-SWAP", "BTC/USDT:USDT", 0.01)
    msg = {
        "details": [
            {
                "bkLoss": "0",
                "bkPx": "96000",
                "ccy": "",
                "posSide": pos,
                "side": side,
                "sz": "13",
                "ts": "1692266434010",
            }
        ],
        "instFamily": "BTC-USDT",
        "instId": "BTC-USDT-SWAP",
        "instType": "SWAP",
        "uly": "BTC-USDT",
    }
    return dict(ex.parse_ws_liquidation(msg, m))


def _gate(size: int) -> dict[str, Any]:
    ex = ccxt.gate()
    m = _market(ex, "BTC_USDT", "BTC/USDT:USDT", 0.0001)
    row = {"contract": "BTC_USDT", "left": 0, "size": size, "fill_price": "28070",
           "order_price": "28225", "time": 1696736132}  # fmt: skip
    return dict(ex.parse_liquidation(row, m))


def _htx(side: str, pos: str) -> dict[str, Any]:
    ex = ccxt.htx()
    m = _market(ex, "BTC-USDT", "BTC/USDT:USDT", 0.001)
    row = {"id": "150153038758", "contract_code": "BTC-USDT", "liquidation_time": "1781849094165",
           "side": side, "position_side": pos, "volume": "2", "amount": "0.002",
           "bankrupt_price": "62978.5", "trade_turnover": "125.957"}  # fmt: skip
    return dict(ex.parse_liquidation(row, m))


def _bitfinex(amount: float) -> dict[str, Any]:
    ex = ccxt.bitfinex()
    m = _market(ex, "tBTCF0:USTF0", "BTC/USDT:USDT", 1.0)
    entry = ["pos", 171085137, 1706395919788, None, "tBTCF0:USTF0", amount, 42000.0, None,
             1, 1, None, 42100.0]  # fmt: skip
    return dict(ex.parse_liquidation([entry], m))


@pytest.mark.parametrize(
    ("venue", "parsed", "expect"),
    [
        # Binance forceOrder: S is the forced ORDER side: SELL closes a long
        ("binance", lambda: _binance("SELL"), "long"),
        ("binance", lambda: _binance("BUY"), "short"),
        # Bybit allLiquidation: S is the POSITION side: Buy = a long was liquidated
        ("bybit", lambda: _bybit("Buy"), "long"),
        ("bybit", lambda: _bybit("Sell"), "short"),
        # OKX liquidation-orders: side is the order side, posSide the position
        ("okx", lambda: _okx("sell", "long"), "long"),
        ("okx", lambda: _okx("buy", "short"), "short"),
        # Gate liq_orders: size is the position size (> 0 long); ccxt says buy for > 0
        ("gate", lambda: _gate(165), "long"),
        ("gate", lambda: _gate(-165), "short"),
        # HTX: side is the order side, position_side the position
        ("htx", lambda: _htx("sell", "long"), "long"),
        ("htx", lambda: _htx("buy", "short"), "short"),
        # Bitfinex: the sign of the position amount (ccxt's side is the IS_MATCH flag)
        ("bitfinex", lambda: _bitfinex(0.5), "long"),
        ("bitfinex", lambda: _bitfinex(-0.5), "short"),
    ],
)
def test_side_per_venue_through_ccxt(venue: str, parsed: Any, expect: str) -> None:
    item = parsed()
    markets = {"BTC/USDT:USDT": {"contractSize": 0.01}} if venue == "okx" else None
    ev = events_from_ccxt(venue, [item], markets=markets)
    assert list(ev["side"]) == [expect]
    assert ev["amount"][0] > 0 and ev["usd"][0] == pytest.approx(ev["amount"][0] * ev["price"][0])
    if venue not in ("bitfinex",):
        # the plain side alone (what normalise_side sees) gives the same answer
        assert normalise_side(venue, item["side"]) == expect


def test_ccxt_side_strings_as_parsed() -> None:
    """The raw strings ccxt 4.5 hands over, per venue (what normalise_side must read)."""
    assert _binance("SELL")["side"] == "sell"
    assert _bybit("Buy")["side"] == "buy"
    assert _okx("buy", "short")["side"] == "buy"
    assert _gate(165)["side"] == "buy" and _gate(-165)["side"] == "sell"
    assert _htx("buy", "short")["side"] == "buy"
    # Bitfinex: same 'buy' for a long and a short position (flag, not direction)
    assert _bitfinex(0.5)["side"] == _bitfinex(-0.5)["side"] == "buy"


def test_amounts_in_base_units() -> None:
    """ccxt 4.5 blanks contractSize in stream liquidations: sizes come from the markets."""
    item = _okx("sell", "long")
    assert item["contractSize"] is None and item["baseValue"] is None and item["contracts"] == 13
    markets = {"BTC/USDT:USDT": {"contractSize": 0.01}}
    okx = events_from_ccxt("okx", [item], markets=markets)
    assert okx["amount"][0] == pytest.approx(0.13)  # 13 contracts of 0.01 BTC
    assert okx["usd"][0] == pytest.approx(0.13 * 96000)
    with pytest.raises(InputError, match=r"row 0: field 'contractSize' is empty"):
        events_from_ccxt("okx", [item])
    # Binance's contracts are base units
    assert events_from_ccxt("binance", [_binance("SELL")])["amount"][0] == pytest.approx(0.014)
    gate = events_from_ccxt("gate", [_gate(-165)])
    assert gate["amount"][0] == pytest.approx(0.0165)
    assert gate["timestamp"][0].value // 1_000_000 == 1696736132000


def test_bad_rows_name_row_and_field() -> None:
    good = _binance("SELL")
    with pytest.raises(InputError, match=r"row 1: field 'price'"):
        events_from_ccxt("binance", [good, {**good, "price": None}])
    with pytest.raises(InputError, match=r"row 0: field 'timestamp'"):
        events_from_ccxt("binance", [{**good, "timestamp": "yesterday"}])
    with pytest.raises(InputError, match=r"row 0: field 'side'"):
        events_from_ccxt("binance", [{**good, "side": "up"}])
    with pytest.raises(InputError, match=r"row 0: field 'baseValue' / 'contracts'"):
        events_from_ccxt("binance", [{**good, "contracts": 0}])
    with pytest.raises(InputError, match=r"row 2: expected a ccxt liquidation dict"):
        events_from_ccxt("binance", [good, good, "x"])  # type: ignore[list-item]


def test_venues_without_direction_refused() -> None:
    with pytest.raises(ConfigError, match="IS_MATCH"):
        normalise_side("bitfinex", "buy")
    with pytest.raises(ConfigError, match="bankruptcy"):
        events_from_ccxt("deribit", [])
    with pytest.raises(ConfigError, match="no liquidation side convention"):
        normalise_side("kraken", "buy")
    assert normalise_side("binanceusdm", "SELL") == "long"
    assert normalise_side("kraken", "short") == "short"
