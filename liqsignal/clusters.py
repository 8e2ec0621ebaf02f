"""Clusters and cascades of a map snapshot: ``clusters_from_state`` and ``Cluster``.

They live in ``liqsignal.engine`` beside the state they read (no import circle); this module
keeps the old import path working.
"""

from __future__ import annotations

from liqsignal.engine import Cluster, clusters_from_state

__all__ = ["Cluster", "clusters_from_state"]
