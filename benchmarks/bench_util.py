"""What the benchmarks share: the tests' helper modules on ``sys.path`` (bars, the reference
map, the fake Telegram Bot API), a Telegram sender wired to that fake API, and the Freqtrade
runs' executable, stored data and time ranges.

Import it first (``import bench_util``): a benchmark runs as ``python benchmarks/NAME.py``, so
this folder is on ``sys.path``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _folder in (ROOT / "tests", ROOT / "tests" / "alerts"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

#: the ``freqtrade`` beside this Python, and the two stored Binance sets the Freqtrade
#: benchmarks run on (the bundled 1h data, one year of 5m bars) with their time ranges
FREQTRADE = Path(sys.executable).with_name("freqtrade")
DATA_1H = ROOT / "user_data" / "data" / "binance"
DATA_5M = ROOT / "user_data" / "data" / "binance_2023_2024"
TIMERANGE_1H = "20251220-20260304"
TIMERANGE_5M = "20230501-20240501"


def fake_api_sender(api: Any, outbox: Any, retry: Any, chat_id: int = 111) -> Any:
    """A ``TelegramSender`` to ``chat_id`` through the fake Bot API ``api`` (its valid token),
    storing what it sends in ``outbox``."""
    from liqsignal.alerts.telegram import TelegramSender

    return TelegramSender(
        [chat_id],
        token=api.valid_token,
        base_url=api.base_url,
        base_file_url=api.base_file_url,
        outbox=outbox,
        retry=retry,
    )
