"""Market data: ccxt client, store in Freqtrade's layout, live provider, local replay exchange."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_datadir_argument"]


def add_datadir_argument(parser: argparse.ArgumentParser, what: str = "") -> None:
    """``--datadir`` (a Path, default ``user_data/data``) of the commands that write the store."""
    parser.add_argument(
        "--datadir",
        type=Path,
        default=Path("user_data/data"),
        help=f"data folder{'; ' + what if what else ''} (default: user_data/data)",
    )
