"""Tests for the alert record and the phone-readable HTML formatters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liqsignal.alerts.message import (
    Alert,
    alert_key,
    escape,
    fmt_pct,
    fmt_price,
    fmt_price_range,
    fmt_usd,
    format_cluster_alert,
    format_consumed_alert,
    format_recovered_notice,
    format_stale_notice,
)
from liqsignal.exceptions import InputError


def test_human_numbers():
    assert fmt_usd(31_200_000) == "31.2M USD"
    assert fmt_usd(1_050_000_000) == "1.05B USD"
    assert fmt_usd(850_000) == "850K USD"
    assert fmt_usd(420) == "420 USD"
    assert fmt_price_range(96_200, 96_350) == "96,200–96,350"
    assert fmt_price_range(96_350, 96_200) == "96,200–96,350"
    assert fmt_price(0.00001234) == "0.00001234"
    assert fmt_price(182.454) == "182.45"
    assert fmt_pct(-1.3) == "−1.3%"
    assert fmt_pct(0.8) == "+0.8%"
    assert fmt_pct(-0.01) == "0.0%"  # no "−0.0%"


@given(st.floats(min_value=-1e13, max_value=1e13, allow_nan=False))
def test_fmt_usd_never_fails_and_keeps_sign(value):
    out = fmt_usd(value)
    assert out.endswith(" USD")
    if out.startswith("−"):
        assert value < 0


def test_cluster_alert_reads_well_and_escapes():
    text = format_cluster_alert(
        market="BTC/USDT:USDT <perp>",
        side="long",
        price_low=96_200,
        price_high=96_350,
        usd=31.2e6,
        distance_pct=-1.3,
        price=97_480,
        exchange_shares={"binance": 0.6, "bybit": 0.3, "okx&co": 0.1},
        cascade_depth=3,
        cascade_usd=58e6,
        oi_usd=8.1e9,
        oi_change_pct=4.2,
        funding_rate=0.0001,
    )
    lines = text.split("\n")
    assert lines[0].endswith("<b>BTC/USDT:USDT &lt;perp&gt;</b> long liquidations armed")
    assert "<b>96,200–96,350</b> · 31.2M USD (forced selling if hit)" in text
    assert "−1.3% from price 97,480" in text
    assert "Cascade: 3 pockets in a row, 58.0M USD" in text
    assert "binance 60% · bybit 30% · okx&amp;co 10%" in text
    assert "OI 8.10B USD (+4.2%) · funding +0.0100%" in text
    assert "<perp>" not in text


def test_cluster_alert_minimal_and_bad_side():
    text = format_cluster_alert(
        market="ETH", side="short", price_low=3500, price_high=3520, usd=5e6,
        distance_pct=0.9, price=3475,
    )  # fmt: skip
    assert "short liquidations armed" in text and "forced buying" in text
    assert "Cascade" not in text and "OI" not in text
    with pytest.raises(InputError, match="side"):
        format_cluster_alert(
            market="ETH", side="up", price_low=1, price_high=2, usd=1, distance_pct=0, price=1
        )
    with pytest.raises(InputError, match="usd"):
        format_cluster_alert(
            market="ETH", side="long", price_low=1, price_high=2, usd=float("nan"),
            distance_pct=0, price=1,
        )  # fmt: skip


def test_consumed_stale_recovered():
    text = format_consumed_alert(
        market="BTC", side="long", usd=28.4e6, price_before=97_480, price_extreme=96_150,
        price_now=96_500, minutes=35,
    )  # fmt: skip
    assert "~28.4M USD flushed" in text
    assert "Price 97,480 → 96,150 (−1.4%) in 35 min" in text
    assert "Now 96,500 (−1.0%)" in text
    now = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
    stale = format_stale_notice(
        source="binance BTC/USDT:USDT", last_update=now - timedelta(minutes=12), now=now,
        reason="HTTP 503 <gateway>",
    )  # fmt: skip
    assert "Data stale: binance BTC/USDT:USDT" in stale
    assert "05:48 UTC, 12 min ago" in stale
    assert "&lt;gateway&gt;" in stale
    assert "after 1.5 h" in format_recovered_notice(source="binance", stale_minutes=90)


def test_alert_validation_and_repr():
    a = Alert(key=alert_key("armed", "BTC", "long", 96200), kind="armed", market="BTC",
              text="x", side="long", photo=b"\x89PNG" * 1000)  # fmt: skip
    assert a.key == "armed|BTC|long|96200"
    assert "4000 bytes" in repr(a)
    assert a.created_at.tzinfo is not None
    with pytest.raises(InputError, match="kind"):
        Alert(key="k", kind="boom", market="BTC", text="x")
    with pytest.raises(InputError, match="key"):
        Alert(key=" ", kind="info", market="BTC", text="x")
    with pytest.raises(InputError, match="timezone"):
        Alert(key="k", kind="info", market="BTC", text="x", created_at=datetime(2026, 1, 1))
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
