"""The package's public API: an explicit, sorted, complete ``__all__``."""

from __future__ import annotations

import importlib

import liqsignal


def test_all_is_sorted_and_unique():
    names = list(liqsignal.__all__)
    assert names == sorted(names, key=lambda n: (not n.isupper(), n[0].islower(), n))
    assert len(names) == len(set(names))


def test_all_names_exist_and_public_modules_export_them():
    for name in liqsignal.__all__:
        assert hasattr(liqsignal, name), name
    public = {n for n in dir(liqsignal) if not n.startswith("_")}
    modules = {
        n for n in public if type(getattr(liqsignal, n)).__name__ == "module"
    }  # submodules imported as a side effect are not API
    assert public - modules - {"annotations"} == set(liqsignal.__all__)


def test_each_module_declares_all():
    for mod in ("config", "tiers", "engine", "features", "clusters", "evaluate", "exceptions"):
        m = importlib.import_module(f"liqsignal.{mod}")
        assert isinstance(m.__all__, list) and m.__all__
        for name in m.__all__:
            assert hasattr(m, name), (mod, name)
