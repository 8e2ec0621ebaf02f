"""The live provider's small heatmap history: it changes no figure of the map, only its picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from liqsignal.config import MapConfig
from liqsignal.data.provider import (
    LIVE_HEATMAP_FRAMES,
    MapProvider,
    MarketSpec,
    aggregated_features_from_store,
)
from liqsignal.exceptions import ConfigError

TESTDATA = Path(__file__).resolve().parents[1] / "testdata"


def test_heatmap_history_changes_no_figure_of_the_map() -> None:
    """The same stored bars through a map keeping 1 heatmap frame and one keeping the engine
    default (2000): identical liq_* columns and identical standing levels, bin by bin."""
    runs = {
        frames: aggregated_features_from_store(
            "BTC",
            ("replay_binance",),
            "1h",
            TESTDATA,
            MapConfig(heatmap_frames=frames),
            return_map=True,
        )
        for frames in (1, LIVE_HEATMAP_FRAMES, MapConfig().heatmap_frames)
    }
    (f_small, m_small), (f_live, m_live), (f_big, m_big) = runs.values()
    assert len(f_big) > 1000 and f_big["liq_pred_long_usd"].gt(0).any()
    for feats, lmap in ((f_small, m_small), (f_live, m_live)):
        assert list(feats.columns) == list(f_big.columns)
        np.testing.assert_array_equal(feats.to_numpy(), f_big.to_numpy())
        np.testing.assert_array_equal(lmap.levels().to_numpy(), m_big.levels().to_numpy())
    assert m_small.hm.shape[0] == 1 and m_big.hm.shape[0] == 2000
    assert m_live.nbytes < m_big.nbytes - 7_000_000  # the 7.4 MiB ring buffer is gone


def test_provider_keeps_a_small_heatmap_by_default_and_takes_a_setting(tmp_path: Path) -> None:
    spec = [MarketSpec("BTC", ("binance",))]
    default = MapProvider(spec, datadir=tmp_path)
    assert default._markets["BTC"].config.heatmap_frames == LIVE_HEATMAP_FRAMES
    assert MapConfig().heatmap_frames == 2000  # the engine's (backtest) default is unchanged
    kept = MapProvider(
        spec, datadir=tmp_path, config=MapConfig(heatmap_frames=500), heatmap_frames=None
    )
    assert kept._markets["BTC"].config.heatmap_frames == 500
    assert (
        MapProvider(spec, datadir=tmp_path, heatmap_frames=96)._markets["BTC"].config.heatmap_frames
        == 96
    )
    with pytest.raises(ConfigError, match="heatmap_frames: expected an integer in"):
        MapProvider(spec, datadir=tmp_path, heatmap_frames=0)
