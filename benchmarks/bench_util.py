"""What the benchmarks share: the tests' helper modules on ``sys.path`` (bars, the reference
map, the fake Telegram Bot API) and a Telegram sender wired to that fake API.

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
