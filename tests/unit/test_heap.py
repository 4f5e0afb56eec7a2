"""``gc.freeze`` again after a load that imported modules (``cloudeasyml.core.heap``): a first load that exports its
graph imports torch, whose objects a generation-2 collection then walked for 200 ms and more."""

from __future__ import annotations

import gc
import sys
import types

import pytest

from cloudeasyml.core import heap


def test_a_load_that_imported_modules_freezes_what_exists_and_only_then(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_modules_frozen", len(sys.modules))  # as after the startup freeze
    assert not heap.freeze_new_modules()  # nothing imported since: no freeze

    module = types.ModuleType("cloudeasyml_heap_probe")
    module.tables = [[n] for n in range(5_000)]  # what importing a library leaves behind: tracked containers
    monkeypatch.setitem(sys.modules, module.__name__, module)
    before = gc.get_freeze_count()
    assert heap.freeze_new_modules()
    # At least those rows (the count also drops as frozen objects elsewhere are freed, so it is a lower bound).
    assert gc.get_freeze_count() >= before + 4_000
    assert not heap.freeze_new_modules()  # once per import, not once per call


def test_nothing_is_frozen_before_the_startup_freeze(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_modules_frozen", 0)  # a tool, or a test, that never started the app
    before = gc.get_freeze_count()
    assert not heap.freeze_new_modules()
    assert gc.get_freeze_count() <= before  # nothing added (frozen objects freed meanwhile leave the count)
