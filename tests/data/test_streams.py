"""Live liquidation streams: the real ccxt.pro clients of Binance USD-M, Bybit and OKX against
local WebSocket servers speaking each venue's stream (liqsignal.replay.ws).

Events are real: rows of the bundled Hyperliquid liquidation file (time, price, size), replayed
in each venue's message shape; where a test needs a given side it says so (the file's own side
label is one value for every row)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from liqsignal.data.liquidations import LiquidationStore
from liqsignal.data.streams import LiquidationStreams, StreamConfig, StreamEvent
from liqsignal.replay.ws import (
    CT_VAL,
    LiqEvent,
    LiquidationStreamServer,
    load_events,
    out_of_order,
    with_duplicates,
)

VENUES = ("binance", "bybit", "okx")
FAST = StreamConfig(
    read_timeout=1.0,
    keep_alive=0.3,
    backoff_base=0.05,
    backoff_max=0.2,
    connect_timeout=2.0,
    flush_interval=0.2,
    tick=0.05,
)
SYMBOL = {"BTC": "BTC/USDT:USDT", "ETH": "ETH/USDT:USDT"}


@pytest.fixture(scope="module")
def real_events() -> list[LiqEvent]:
    return load_events(None, ["BTC", "ETH"])


@pytest.fixture(params=VENUES)
def venue(request: pytest.FixtureRequest) -> str:
    """Each venue in turn, for the tests that run against one."""
    return request.param


@pytest.fixture
def srv(servers: dict[str, LiquidationStreamServer], venue: str) -> LiquidationStreamServer:
    """The replay server of ``venue``."""
    return servers[venue]


@pytest.fixture
def servers() -> Iterator[dict[str, LiquidationStreamServer]]:
    out = {v: LiquidationStreamServer(v, ["BTC", "ETH"]).start() for v in VENUES}
    yield out
    for s in out.values():
        s.stop()


def overlay(servers: dict[str, LiquidationStreamServer]) -> dict[str, dict]:
    return {v: s.ccxt_config() for v, s in servers.items()}


def fresh(events: list[LiqEvent], n: int, start: int = 0) -> list[LiqEvent]:
    """``n`` real events moved to now (the spacing kept): the stream looks live."""
    chunk = events[start : start + n]
    shift = int(time.time() * 1000) - chunk[0].ts_ms
    return [replace(e, ts_ms=e.ts_ms + shift) for e in chunk]


async def until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return pred()


async def subscribed(srv: LiquidationStreamServer, timeout: float = 5.0) -> bool:
    """Both markets subscribed on a live connection of ``srv``."""
    return await until(srv.ready, timeout)


@contextlib.asynccontextmanager
async def running(
    servers: dict[str, LiquidationStreamServer],
    venues: Sequence[str],
    *,
    datadir: Path | None = None,
    markets: Sequence[str] = ("BTC", "ETH"),
    ccxt_config: dict[str, dict] | None = None,
    ready: Sequence[str] | None = None,
) -> AsyncIterator[LiquidationStreams]:
    """``LiquidationStreams`` over ``venues`` of ``servers`` (with FAST timings) running, each
    venue of ``ready`` (default: all of ``venues``) subscribed on entry; stopped on exit."""
    streams = LiquidationStreams(
        list(venues),
        list(markets),
        datadir=datadir,
        ccxt_config=overlay(servers) if ccxt_config is None else ccxt_config,
        config=FAST,
    )
    task = asyncio.ensure_future(streams.run())
    try:
        for venue in venues if ready is None else ready:
            assert await subscribed(servers[venue])
        yield streams
    finally:
        streams.stop()
        await task


async def publish(srv: LiquidationStreamServer, events: list[LiqEvent]) -> None:
    await asyncio.to_thread(srv.publish, events)


def key(e: LiqEvent | StreamEvent) -> tuple:
    return (e.market, e.ts_ms, e.side, round(e.price, 8), round(e.amount, 8))


def got_keys(evs: list[StreamEvent]) -> list[tuple]:
    return [key(e) for e in evs]


# ---------------------------------------------------------------------------------------------


async def test_normal_flow_sides_amounts_and_store(
    venue: str, srv: LiquidationStreamServer, real_events: list[LiqEvent], tmp_path: Path
) -> None:
    async with running({venue: srv}, [venue], datadir=tmp_path) as streams:
        api = streams.venues[venue].api
        base = fresh(real_events, 2)
        script = [
            replace(base[0], market="BTC", side="long"),
            replace(base[1], market="ETH", side="short", ts_ms=base[1].ts_ms + 1),
        ]
        await publish(srv, script)
        assert await until(lambda: len(streams.received) == 2)
        raw = list(api.liquidations)

    got = {e.market: e for e in streams.received}
    # ccxt's unified side keeps the venue's meaning; liqsignal says which side was liquidated
    raw_side = {r["symbol"]: r["side"] for r in raw}
    expect_raw = {"binance": ("sell", "buy"), "bybit": ("buy", "sell"), "okx": ("sell", "buy")}
    assert (raw_side[SYMBOL["BTC"]], raw_side[SYMBOL["ETH"]]) == expect_raw[venue]
    assert got["BTC"].side == "long" and got["ETH"].side == "short"
    for ev, sent in zip((got["BTC"], got["ETH"]), script, strict=True):
        assert ev.symbol == SYMBOL[sent.market] and ev.ts_ms == sent.ts_ms
        assert ev.price == pytest.approx(sent.price)
        assert ev.amount == pytest.approx(sent.amount, rel=1e-9)  # base units, not contracts
        assert ev.usd == pytest.approx(sent.amount * sent.price, rel=1e-9)
    if venue == "okx":  # OKX sends contracts: ccxt leaves contractSize empty in its WS parser
        r = next(r for r in raw if r["symbol"] == SYMBOL["BTC"])
        assert r["contractSize"] is None
        assert r["contracts"] == pytest.approx(script[0].amount / CT_VAL["BTC"])
    store = LiquidationStore(tmp_path)
    for m, sent in zip(("BTC", "ETH"), script, strict=True):
        stored = store.read_events(venue, SYMBOL[m])
        assert len(stored) == 1 and stored["side"].iloc[0] == sent.side
        assert stored["amount"].iloc[0] == pytest.approx(sent.amount)
        spans = store.spans(venue, SYMBOL[m])
        assert (spans["kind"] == "covered").any() and not (spans["kind"] == "gap").any()


async def test_burst_nothing_lost(
    venue: str, srv: LiquidationStreamServer, real_events: list[LiqEvent]
) -> None:
    """200 events written at once: ccxt wakes the watcher once for many frames; every event
    must still come out (read from ccxt's cache), in order, once."""
    async with running({venue: srv}, [venue]) as streams:
        script = fresh(real_events, 200)
        await publish(srv, script)
        assert await until(lambda: len(streams.received) >= 200, 10)
    assert got_keys(streams.received) == [key(e) for e in script]
    assert streams.venues[venue].duplicates == 0


async def test_disconnect_reconnect_gap_nothing_lost_or_doubled(
    venue: str, srv: LiquidationStreamServer, real_events: list[LiqEvent], tmp_path: Path
) -> None:
    async with running({venue: srv}, [venue], datadir=tmp_path) as streams:
        script = fresh(real_events, 30)
        first, second = script[:20], script[20:]
        srv.disconnect(after=10)  # the connection drops mid-stream, after 10 of the 20
        await publish(srv, first)
        sent_before = sum(srv.sent.values())
        assert sent_before == 10 and sum(srv.dropped.values()) == 0
        assert await until(lambda: len(streams.received) == 10)
        v = streams.venues[venue]
        assert await until(lambda: v.state == "connected" and v.gaps, 5)
        assert await subscribed(srv)
        # the venue resends what the client may have missed, as some do: the repeats are dropped
        await publish(srv, first + second)
        assert await until(lambda: len(streams.received) == 30, 5)
        await asyncio.sleep(0.3)
    assert got_keys(streams.received) == [key(e) for e in script]  # nothing lost, none twice
    assert v.duplicates == 10 and v.reconnects == 1 and len(v.gaps) == 1
    gap = v.gaps[0]
    assert 0 < gap.seconds < 3 and set(gap.symbols) == {SYMBOL["BTC"], SYMBOL["ETH"]}
    store = LiquidationStore(tmp_path)
    for m in ("BTC", "ETH"):
        stored = store.read_events(venue, SYMBOL[m])
        assert len(stored) == sum(1 for e in script if e.market == m)
        spans = store.spans(venue, SYMBOL[m])
        gaps = spans[spans["kind"] == "gap"]
        assert len(gaps) == 1
        assert gaps["start"].iloc[0].value // 10**6 == gap.start_ms
        assert gaps["end"].iloc[0].value // 10**6 == gap.end_ms
        covered = spans[spans["kind"] == "covered"]
        # covered before and after, never across the gap
        assert (covered["end"] <= gaps["start"].iloc[0]).any()
        assert (covered["start"] >= gaps["end"].iloc[0]).any()


async def test_stall_detected_by_read_timeout(
    venue: str, srv: LiquidationStreamServer, real_events: list[LiqEvent]
) -> None:
    async with running({venue: srv}, [venue]) as streams:
        script = fresh(real_events, 12)
        await publish(srv, script[:4])
        assert await until(lambda: len(streams.received) == 4)
        t0 = time.monotonic()
        await asyncio.to_thread(srv.stall)  # open, silent, no pongs
        await publish(srv, script[4:8])  # lost on the stalled connection
        assert sum(srv.dropped.values()) == 4
        v = streams.venues[venue]
        assert await until(lambda: v.stalls == 1, 4)
        detected = time.monotonic() - t0
        assert FAST.read_timeout * 0.8 < detected < FAST.read_timeout + 2.0
        assert await until(lambda: v.state == "connected" and len(v.gaps) == 1, 5)
        assert await subscribed(srv)
        await publish(srv, script[8:])
        assert await until(lambda: len(streams.received) == 8)
    assert got_keys(streams.received) == [key(e) for e in script[:4] + script[8:]]
    gap = v.gaps[0]
    # the lost events fall inside the recorded gap: their bars will read "unknown"
    assert gap.start_ms <= script[4].ts_ms or gap.start_ms <= int(time.time() * 1000)
    assert gap.seconds >= FAST.read_timeout * 0.8


async def test_malformed_frames(
    venue: str,
    srv: LiquidationStreamServer,
    real_events: list[LiqEvent],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A frame of the right envelope with unusable fields is dropped and counted; a frame that
    is not JSON makes ccxt's reader stop (its callback raises), which the read timeout turns
    into a reconnect with a gap. Good events before and after arrive."""
    async with running({venue: srv}, [venue]) as streams:
        script = fresh(real_events, 6)
        v = streams.venues[venue]
        with caplog.at_level(logging.WARNING, logger="liqsignal"):
            await publish(srv, script[:2])
            await asyncio.to_thread(srv.malformed, "shape")
            await publish(srv, script[2:4])
            assert await until(lambda: len(streams.received) == 4)
            assert await until(lambda: v.malformed >= 1)
            assert any("dropped" in r.getMessage() for r in caplog.records)
            await asyncio.to_thread(srv.malformed, "truncated")
            assert await until(lambda: v.state == "connected" and len(v.gaps) == 1, 6)
            assert await subscribed(srv)
            await publish(srv, script[4:])
            assert await until(lambda: len(streams.received) == 6)
    assert got_keys(streams.received) == [key(e) for e in script]


async def test_duplicates_and_out_of_order(
    venue: str, srv: LiquidationStreamServer, real_events: list[LiqEvent], tmp_path: Path
) -> None:
    async with running({venue: srv}, [venue], datadir=tmp_path) as streams:
        script = fresh(real_events, 40)
        sent = with_duplicates(out_of_order(script, window=5, seed=3), every=4)
        assert len(sent) == 50
        await publish(srv, sent)
        assert await until(lambda: len(streams.received) == 40)
        await asyncio.sleep(0.4)
    seen = got_keys(streams.received)
    assert len(seen) == 40 and sorted(seen) == sorted(key(e) for e in script)
    assert seen != [key(e) for e in script]  # they did come out of order
    assert streams.venues[venue].duplicates == 10
    store = LiquidationStore(tmp_path)
    for m in ("BTC", "ETH"):
        stored = store.read_events(venue, SYMBOL[m])
        want = sorted(e.ts_ms for e in script if e.market == m)
        assert [t.value // 10**6 for t in stored["timestamp"]] == want  # placed, sorted, once


async def test_one_venue_down_others_go_on(
    servers: dict, real_events: list[LiqEvent], tmp_path: Path
) -> None:
    down = servers["bybit"]
    cfg = overlay(servers)
    down.stop()  # nothing listens on its port: connections are refused
    async with running(
        servers, VENUES, datadir=tmp_path, ccxt_config=cfg, ready=["binance", "okx"]
    ) as streams:
        script = fresh(real_events, 20)
        await asyncio.gather(publish(servers["binance"], script), publish(servers["okx"], script))
        assert await until(lambda: len(streams.received) == 40)
        await asyncio.sleep(0.5)
    by = {v: [e for e in streams.received if e.exchange == v] for v in VENUES}
    assert got_keys(by["binance"]) == [key(e) for e in script]
    assert got_keys(by["okx"]) == [key(e) for e in script]
    assert by["bybit"] == []
    assert streams.venues["bybit"].state == "stopped"
    assert streams.venues["bybit"].connects == 0
    rows = streams.table_rows()
    assert {r["exchange"] for r in rows if r["events"] > 0} == {"binance", "okx"}


async def test_no_key_or_token_in_any_log_line(
    servers: dict, real_events: list[LiqEvent], caplog: pytest.LogCaptureFixture
) -> None:
    secrets = {"apiKey": "K3y-abcdef0123456789", "secret": "S3cr3t-9876543210fedcba"}
    cfg = {v: {**c, **secrets} for v, c in overlay(servers).items()}
    servers["okx"].stop()  # failures are logged too: they must not carry the keys
    with caplog.at_level(logging.DEBUG):
        async with running(
            servers,
            VENUES,
            markets=["BTC", "ETH", "NOPE"],
            ccxt_config=cfg,
            ready=["binance", "bybit"],
        ) as streams:
            await publish(servers["binance"], fresh(real_events, 3))
            await asyncio.to_thread(servers["bybit"].malformed, "shape")
            await asyncio.to_thread(servers["binance"].disconnect)
            assert await until(lambda: len(streams.received) == 3)
            assert await until(lambda: streams.venues["binance"].gaps != [], 5)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection lost" in text and "NOPE" in text  # failures were logged...
    for s in secrets.values():
        assert s not in text  # ...without a key


def test_backoff_grows_with_jitter_and_cap() -> None:
    import random

    cfg = StreamConfig(backoff_base=0.5, backoff_factor=2.0, backoff_max=4.0, jitter=0.5)
    rng = random.Random(1)
    delays = [[cfg.backoff(n, rng) for _ in range(200)] for n in (1, 2, 3, 4, 8)]
    for n, ds, cap in zip((1, 2, 3, 4, 8), delays, (0.5, 1.0, 2.0, 4.0, 4.0), strict=True):
        assert all(cap * 0.5 <= d <= cap for d in ds), n
        assert max(ds) - min(ds) > cap * 0.3  # jittered, not one fixed value
    with pytest.raises(ValueError, match="read_timeout"):
        StreamConfig(read_timeout=1.0, keep_alive=2.0)


async def test_binance_throttle_sends_only_the_latest_per_symbol_per_window(
    real_events: list[LiqEvent],
) -> None:
    """The replay can apply Binance's rule (at most the latest liquidation per symbol per
    window): the stream then sees fewer events than happened, a lower bound."""
    with LiquidationStreamServer("binance", ["BTC", "ETH"], throttle_ms=400) as srv:
        async with running({"binance": srv}, ["binance"]) as streams:
            btc = [replace(e, market="BTC") for e in fresh(real_events, 5)]
            eth = replace(fresh(real_events, 1, start=5)[0], market="ETH")
            await publish(srv, [*btc, eth])  # within one window: BTC 1st now, 5th at its end
            assert await until(lambda: len(streams.received) == 3, 3)
            await asyncio.sleep(0.6)
    assert got_keys(streams.received) == [key(btc[0]), key(eth), key(btc[4])]
    assert srv.throttled["BTC"] == 3 and srv.throttled["ETH"] == 0


async def test_stopped_while_reconnecting_records_the_open_gap(
    servers: dict, real_events: list[LiqEvent], tmp_path: Path
) -> None:
    srv = servers["okx"]
    async with running(servers, ["okx"], datadir=tmp_path) as streams:
        await publish(srv, fresh(real_events, 3))
        assert await until(lambda: len(streams.received) == 3)
        srv.stop()  # the venue goes away for good
        v = streams.venues["okx"]
        assert await until(lambda: v.state == "reconnecting", 3)
        await asyncio.sleep(0.5)
        stopped_at = int(time.time() * 1000)
    assert len(v.gaps) == 1 and abs(v.gaps[0].end_ms - stopped_at) < 1000
    spans = LiquidationStore(tmp_path).spans("okx", SYMBOL["BTC"])
    assert list(spans["kind"]) == ["covered", "gap"]
    assert spans["start"].iloc[1] >= spans["end"].iloc[0]
