"""The supervisor's hooks (monitor.hooks): fingerprints every few seconds, relaxed gates every interval in one
thread at a time, a store outage passed on to the loop, other bookkeeping failures only logged."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any, Callable

import pytest

import backfill.store.fingerprints as fingerprints
from backfill.store.client import StoreOutage
from monitor import hooks
from monitor.hooks import FINGERPRINT_EVERY_S, SupervisorHooks


def _hooks(interval: float) -> SupervisorHooks:
    return SupervisorHooks(SimpleNamespace(gates_interval_s=interval))  # type: ignore[arg-type]


def _held(calls: list[Any], release: threading.Event) -> Callable[[Any], None]:
    """A stand-in that records its argument, then waits for `release`: a run still going."""

    def run(arg: Any) -> None:
        calls.append(arg)
        release.wait(5)

    return run


def _settled(h: SupervisorHooks) -> None:
    if h.fingerprint_thread is not None:
        h.fingerprint_thread.join(5)


def test_fingerprints_run_every_few_seconds_beside_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(fingerprints, "record_fingerprints", calls.append)
    h = _hooks(0)
    working = [True]
    sup = SimpleNamespace(store="store", copying=lambda: working[0])
    h.on_tick(sup)
    _settled(h)
    h.on_tick(sup)
    _settled(h)
    assert calls == ["store"]
    h.last_fingerprints = time.monotonic() - FINGERPRINT_EVERY_S
    h.on_tick(sup)
    _settled(h)
    assert calls == ["store", "store"]
    working[0] = False  # every worker done: the run's end does not wait for its last days' digests
    h.last_fingerprints = time.monotonic() - FINGERPRINT_EVERY_S
    h.on_tick(sup)
    _settled(h)
    assert calls == ["store", "store"]


def test_a_slow_fingerprint_never_holds_the_loop_and_runs_once_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[Any] = []
    monkeypatch.setattr(fingerprints, "record_fingerprints", _held(calls, release))
    h = _hooks(0)
    sup = SimpleNamespace(store="store", copying=lambda: True)
    t0 = time.monotonic()
    h.on_tick(sup)
    h.last_fingerprints = time.monotonic() - FINGERPRINT_EVERY_S
    h.on_tick(sup)  # the first is still running: no second one
    assert time.monotonic() - t0 < 2.0 and calls == ["store"]
    release.set()
    _settled(h)


def test_store_outages_and_other_failures_of_a_fingerprint_run_are_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def outage(_store: Any) -> None:
        raise StoreOutage("away", "refused")

    def broken(_store: Any) -> None:
        raise RuntimeError("bad row")

    caplog.set_level("INFO", logger="monitor")
    for fail, event in ((outage, "fingerprints_deferred"), (broken, "fingerprints_failed")):
        monkeypatch.setattr(fingerprints, "record_fingerprints", fail)
        h = _hooks(0)
        h.on_tick(SimpleNamespace(store=None, copying=lambda: True))
        _settled(h)
        assert f"event={event}" in caplog.text


def test_relaxed_gates_start_every_interval_one_run_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprints, "record_fingerprints", lambda _store: None)
    release = threading.Event()
    runs: list[Any] = []
    monkeypatch.setattr(hooks, "run_relaxed_gates", _held(runs, release))
    h = _hooks(600)
    sup = SimpleNamespace(store=None, copying=lambda: True)
    h.on_tick(sup)
    assert h.gates_thread is None  # not before the first interval
    h.last_gates = time.monotonic() - 600
    h.on_tick(sup)
    assert h.gates_thread is not None
    first = h.gates_thread
    h.last_gates = time.monotonic() - 600
    h.on_tick(sup)
    assert h.gates_thread is first  # the previous run is still going
    release.set()
    first.join(5)
    h.on_tick(sup)
    assert h.gates_thread is not first
    h.gates_thread.join(5)
    assert len(runs) == 2


def test_no_gates_when_the_interval_is_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fingerprints, "record_fingerprints", lambda _store: None)
    h = _hooks(0)
    h.last_gates = time.monotonic() - 10_000
    h.on_tick(SimpleNamespace(store=None, copying=lambda: True))
    assert h.gates_thread is None


def test_after_round_calls_the_dashboard() -> None:
    seen: list[Any] = []
    h = SupervisorHooks(SimpleNamespace(gates_interval_s=0), after_round=seen.append)  # type: ignore[arg-type]
    h.after_round("sup")  # type: ignore[arg-type]
    assert seen == ["sup"]
    _hooks(0).after_round("sup")  # type: ignore[arg-type]  # no dashboard: nothing
