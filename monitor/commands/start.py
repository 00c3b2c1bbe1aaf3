"""`backfill start`: check, plan, then hand the run to the supervisor: a detached one by default, this
process with a live dashboard under --foreground, or the one already running (which is told what changed).
Every check that can refuse the run happens before anything is written: those that need only the chain
(endpoints, --from / --to against genesis and the safe head) before the data directory is even created."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click

from backfill import control, exitcodes
from backfill.cli.app import _settings, settings_options, user_errors
from backfill.cli.data_dir import check_usable, holds_store
from backfill.control import Phase
from backfill.errors import CommandFailed, ConfigError, Interrupted, StoreUnavailable, UserError, WrongChain
from backfill.files.oplog import held_until_written
from backfill.settings import Settings
from backfill.store.client import COMMAND_PATIENCE_S, Store, on_thread
from backfill.store.leases import PLAN_LEASE, SHARD_LEASES, live_claims, waiting_for
from monitor.warm import WarmPool

if TYPE_CHECKING:
    from backfill.cli.prepare import ChainView

# The RPC client, the planner and the status reader (aiohttp, ~0.15 s of imports) are imported where they are
# used: the store's connection starts first (start_run), so that its round trips overlap these imports.

log = logging.getLogger("monitor")


RESUMES = "progress is checkpointed, `backfill start` resumes"
CTRL_C = f"stopped by Ctrl-C; {RESUMES}"


class RunFailed(CommandFailed):
    """The run ended without doing its job: days FAILED, the rebuild failed, the fleet halted."""


def _memory(settings: Settings) -> Path | None:
    """Where endpoint pace is remembered; None while the data directory does not exist (a refused start must
    not create it)."""
    return settings.log_dir / "endpoints.json" if settings.data_dir.is_dir() else None


async def _survey(settings: Settings) -> ChainView:
    """What can be known from the chain alone: the endpoints answer, its identity, genesis and safe head.
    Nothing is written (no data directory, no store), so a start refused here leaves no trace."""
    from backfill.chain import pace_memory
    from backfill.chain.client import RpcClient
    from backfill.cli.prepare import check_endpoints, survey_chain

    await check_endpoints(settings)
    memory = _memory(settings)
    if memory is not None:
        pace_memory.forget_parking(memory)
    async with RpcClient(
        settings.rpc_urls,
        timeout_s=settings.rpc_timeout_s,
        attempts=4,
        context="monitor",
        max_rps_per_endpoint=settings.rpc_max_rps,
        memory=memory,
    ) as rpc:
        return await survey_chain(rpc, settings)


async def _prepare(
    settings: Settings, chain: ChainView, store_factory: Callable[[], Store], to_head: bool = False
) -> tuple[Store, int]:
    """The checks against the store (the same chain, then the dates, the plan's anchor), then the plan. The
    store is read side by side where the reads do not depend on each other, and written twice: one meta
    insert (the chain's identity, where the tip is tracked from, the plan's anchor), then the days."""
    from backfill.chain.client import RpcClient
    from backfill.cli.prepare import CHAIN_KEYS, chain_record, check_chain, check_range, plan_days, reopen_for_redo
    from backfill.cli.tip import repair_tip, tip_record
    from backfill.store.client import side_by_side

    async with RpcClient(
        settings.rpc_urls,
        timeout_s=settings.rpc_timeout_s,
        attempts=4,
        context="monitor",
        max_rps_per_endpoint=settings.rpc_max_rps,
        memory=settings.log_dir / "endpoints.json",
    ) as rpc:
        store = store_factory()
        known, writing, top = side_by_side(
            lambda: store.meta_values(CHAIN_KEYS), lambda: live_claims(store, SHARD_LEASES), store.tracked_top
        )
        check_chain(store, chain.chain_id, chain.genesis_hash, known)
        check_range(settings, chain)
        record = chain_record(known, chain)
        # workers that may be writing the tip (this host's run, or another host's) keep it: no repair under them
        if not control.running_supervisor(settings.log_dir) and not writing:
            await repair_tip(rpc, store, chain, top)
            record.update(tip_record(chain))
        elif writing:
            log.info("event=tip_check_skipped reason=workers_writing holders=%d", len(writing))
        with waiting_for(store, PLAN_LEASE, settings.lease_ttl_s):  # one planner at a time per database
            plans = await plan_days(rpc, store, settings, chain, to_head=to_head, record=record)
        if settings.redo:
            assert settings.from_date and settings.to_date
            reopen_for_redo(store, plans, settings.from_date, settings.to_date)
    log.info("event=prepared chain_id=%d days=%d shards=%d", chain.chain_id, len(plans), settings.shards)
    return store, len(plans)


def start_run(
    settings: Settings,
    *,
    shards_explicit: bool,
    echo: Callable[[str], Any] = print,
    to_head: bool = False,
    dashboard: bool = True,
) -> dict[str, Any] | None:
    """Check, plan, hand over (see the module doc); the summary of a foreground run that finished, else None.
    to_head: plan on to the safe head's day (`backfill sync`); dashboard=False: no live display."""
    check_usable(settings.data_dir, create=True)
    if settings.metrics_addr:
        from monitor.metrics.server import parse_addr

        parse_addr(settings.metrics_addr)  # a bad address is refused before anything runs
    early = _connect_beside_survey(settings)  # first: its round trips overlap the workers' start and our imports
    # a foreground run supervises here: its workers import while this plans (monitor/warm.py)
    warm = WarmPool(settings.shards, {**os.environ, **settings.to_env()}) if settings.foreground else None
    try:
        return _check_plan_hand_over(settings, shards_explicit, echo, to_head, dashboard, warm, early)
    finally:
        if warm is not None:
            warm.close()


def _check_plan_hand_over(
    settings: Settings,
    shards_explicit: bool,
    echo: Callable[[str], Any],
    to_head: bool,
    dashboard: bool,
    warm: WarmPool | None,
    connecting: tuple[Future[Store] | None, bool],
) -> dict[str, Any] | None:
    from backfill.cli.prepare import check_range

    early, early_start = connecting
    try:
        import backfill.cli.prepare  # noqa: F401 - the RPC client's imports (aiohttp), before the import-ahead's

        if settings.foreground:
            _import_ahead()  # while the survey and the plan wait on the chain and the store
        with held_until_written():
            chain = asyncio.run(_survey(settings))
        if not holds_store(settings):  # no chain recorded to compare with: the dates are refused before any write
            check_range(settings, chain)
    except BaseException:
        if early is not None:
            early.add_done_callback(functools.partial(_close_connected, settings, started=early_start))
        raise
    connect = early.result if early is not None else (lambda: Store.connect(settings))
    # One start at a time per data directory, from the first write to the hand-over: a second start waits,
    # then finds the first one's supervisor and tells it what it wants (the later shard count wins).
    with control.start_lock(settings.log_dir, on_wait=echo):
        if settings.redo and control.running_supervisor(settings.log_dir):
            raise UserError("a run is active for this data directory; `backfill stop` it before a --redo")
        # a foreground run supervises here: its supervisor's connection is made while this plans
        ahead = _supervisor_store_ahead(settings) if settings.foreground else None
        lock_fd = None
        try:
            store, n_days = asyncio.run(_prepare(settings, chain, connect, to_head))
            running = control.running_supervisor(settings.log_dir)
            if running:
                _tell_running(settings, running, shards_explicit, echo)
                return None
            control.request(settings.log_dir, shards=settings.shards)
            if not settings.foreground:
                _run_detached(settings, n_days, shards_explicit, echo)
                return None
            lock_fd = control.try_lock(settings.log_dir)
            if lock_fd is None:  # a supervisor started by hand a moment ago
                _tell_running(settings, control.running_supervisor(settings.log_dir) or {}, shards_explicit, echo)
                return None
        finally:
            if ahead is not None and lock_fd is None:  # not supervising here after all
                ahead.add_done_callback(_close_unused)
    return _run_foreground(settings, store, n_days, echo, lock_fd, dashboard, warm, ahead)


def _import_ahead() -> None:
    """The supervisor's and the dashboard's modules (~45 ms) imported on a thread of their own while this command
    waits on the chain and the store, not after the plan; not while it imports the RPC client: both would hold
    the interpreter by turns."""
    from backfill.cli.import_ahead import import_ahead

    import_ahead(
        ("rich.live", "backfill.cli.status", "backfill.cli.status_render", "monitor.supervisor"), "import-ahead"
    )


def _connect_beside_survey(settings: Settings) -> tuple[Future[Store] | None, bool]:
    """The store's connection (and schema check) opened on a thread while the chain is surveyed, when the store
    exists already: a configured server, or the data directory's embedded store — whose server, when it is
    down (it stops after 30 idle minutes), is started then, its ~0.6 s beside the survey instead of after it.
    Also whether this started it (a start refused by the survey stops it again). (None, False) for a data
    directory without a store: it connects after the survey, as a refused start must leave no trace there."""
    from backfill.store.embedded import server_alive

    if not holds_store(settings):
        return None, False
    starts = not settings.store.url and not server_alive(settings.data_dir)
    return on_thread(lambda: Store.connect(settings), "store-connect"), starts


def _supervisor_store_ahead(settings: Settings) -> Future[Store]:
    """The foreground supervisor's store connection (monitor.supervisor.open_store), opened on a thread."""

    def connect() -> Store:
        from monitor.supervisor import open_store

        return open_store(settings)

    return on_thread(connect, "supervisor-store")


def _close_unused(future: Future[Store]) -> None:
    """A connection opened ahead that nobody took: closed once it is open."""
    if not future.cancelled() and future.exception() is None:
        future.result().close()


def _close_connected(settings: Settings, future: Future[Store], *, started: bool) -> None:
    """The early connection of a start refused before it was needed: closed, and the embedded server stopped
    when this command started it."""
    _close_unused(future)
    if started:
        from backfill.store.embedded import stop_server

        stop_server(settings.data_dir)


def _tell_running(
    settings: Settings, running: dict[str, Any], shards_explicit: bool, echo: Callable[[str], Any]
) -> None:
    """A run is active: it is told to re-read the plan, and the shard count when one was given."""
    wanted = {"shards": settings.shards} if shards_explicit else {}
    control.request(settings.log_dir, **wanted)
    what = (
        f"scaling to {settings.shards} workers"
        if shards_explicit and settings.shards != running.get("wanted_shards")
        else "re-reading the plan"
    )
    echo(f"a run is already active (supervisor pid {running.get('pid', '?')}): {what}; no second fleet started")


def _run_detached(settings: Settings, n_days: int, shards_explicit: bool, echo: Callable[[str], Any]) -> None:
    from monitor.supervisor import ALREADY_RUNNING

    settings.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env()}
    with open(settings.log_dir / "supervisor.stderr", "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "monitor.supervisor"],  # -P: see Supervisor.spawn
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            state = control.read_json(control.state_path(settings.log_dir)) or {}
            if state.get("pid") == proc.pid and state.get("phase") not in (None, Phase.STARTING):
                break
            code = proc.poll()
            if code is not None:
                if code == ALREADY_RUNNING:  # one was started by other means a moment ago: tell it instead
                    _tell_running(settings, control.running_supervisor(settings.log_dir) or {}, shards_explicit, echo)
                    return None
                if code == 0:
                    break  # nothing to do: finished at once
                raise RunFailed(f"the supervisor exited at start (code {code}); see {settings.log_dir / 'monitor.log'}")
            time.sleep(0.1)
    except KeyboardInterrupt:  # the supervisor has its own session: the run goes on without this command
        raise Interrupted(
            f"stopped by Ctrl-C; the run goes on in the background (supervisor pid {proc.pid}): "
            "`backfill status`, `backfill stop`"
        ) from None
    echo(f"started: supervisor pid {proc.pid}, {settings.shards} workers, {n_days} days planned")
    echo(
        f"logs: {settings.log_dir}/ (monitor.log, worker-<k>.log); watch: backfill status --watch; stop: backfill stop"
    )
    return None


def ended_line(phase: str, summary: dict[str, Any], seconds: float) -> str:
    """The line a foreground run ends with: complete, or caught up with its OPEN days named."""
    if phase == Phase.CAUGHT_UP:
        return (
            f"backfill caught up: {summary['days_complete']} of {summary['days_total']} days COMPLETE, "
            f"{summary['days_open']} OPEN ({', '.join(summary['open_days'])}: at the chain head, not final yet; "
            f"`backfill sync` completes them) in {seconds:.1f}s"
        )
    return f"backfill complete: {summary['days_total']} days in {seconds:.1f}s"


def _halted_error(exit_code: int, message: str) -> Exception:
    """The command error for a halted fleet: a worker's wrong chain or config error keeps its exit code."""
    if exit_code == exitcodes.WRONG_CHAIN:
        return WrongChain(message)
    if exit_code == exitcodes.USAGE:
        return ConfigError(message)
    return RunFailed(message)


def _stopped(store: Store, state: dict[str, Any], echo: Callable[[str], Any]) -> None:
    """A run that stopped before the end: Ctrl-C is Interrupted, `backfill stop` says so, else RunFailed."""
    store.close()
    if state.get("stopped_by") == "SIGINT":  # Ctrl-C in this terminal: the supervisor stopped gracefully
        raise Interrupted(CTRL_C)
    if state.get("stopped_by") == "SIGTERM":  # `backfill stop` from another terminal: stopped as asked
        echo(f"stopped as asked (`backfill stop`); {RESUMES}")
        return
    raise RunFailed(state.get("message") or f"stopped; {RESUMES}")  # the rebuild stopped by itself


def _run_foreground(
    settings: Settings,
    store: Store,
    n_days: int,
    echo: Callable[[str], Any],
    lock_fd: int,
    dashboard: bool = True,
    warm: WarmPool | None = None,
    connecting: Future[Store] | None = None,
) -> dict[str, Any] | None:
    """Supervise in this process with a live dashboard; the summary of a finished run. A stop by Ctrl-C is
    Interrupted (exit 130); a stop by `backfill stop` says so and returns None (exit 0). connecting: the
    supervisor's store connection, begun while this planned."""
    from rich.console import Console
    from rich.live import Live

    from backfill.cli.status import collect, collect_offline
    from backfill.cli.status_render import render
    from monitor.supervisor import FleetHalted, supervise

    console = Console()
    echo(f"planned {n_days} days; {settings.shards} workers (logs: {settings.log_dir}/worker-<k>.log)")
    t0 = time.monotonic()
    last = [0.0]
    with Live(
        console=console,
        refresh_per_second=1,
        transient=not console.is_terminal or not dashboard,
        auto_refresh=console.is_terminal and dashboard,
    ) as live:

        def tick(_sup: object) -> None:
            # a dashboard nobody sees (not a terminal: a transient Live shows nothing) is not read at all
            if dashboard and console.is_terminal and time.monotonic() - last[0] >= 2.0:
                last[0] = time.monotonic()
                store.patience_s = 0.0  # the dashboard must not wait for a store that is away: it says so
                try:
                    live.update(render(collect(store, settings, dedup=False)))
                except StoreUnavailable as exc:  # the run waits for the store; the dashboard says so
                    live.update(render(collect_offline(settings, str(exc))))

        try:
            phase = supervise(settings, on_tick=tick, lock_fd=lock_fd, warm=warm, connecting=connecting)
        except FleetHalted as exc:  # a worker's config error or wrong chain keeps its code (the same numbers)
            raise _halted_error(exc.exit_code, str(exc)) from None
    return _ended(settings, store, phase, echo, t0)


def _ended(
    settings: Settings, store: Store, phase: str, echo: Callable[[str], Any], t0: float
) -> dict[str, Any] | None:
    """After a foreground supervisor returned: the stop said, the failure raised, or the summary shown."""
    from backfill.cli.status import collect

    state = control.read_json(control.state_path(settings.log_dir)) or {}
    if phase == "stopped":
        _stopped(store, state, echo)
        return None
    store.patience_s = COMMAND_PATIENCE_S
    summary = collect(store, settings)
    if phase == "rebuild_failed":
        raise RunFailed(
            f"all {summary['days_total']} days are COMPLETE, but {state.get('message') or 'the rebuild failed'}"
        )
    if phase == "finished_with_failures":
        raise RunFailed(
            f"{summary['days_failed']} days FAILED (see `backfill status`); "
            "`backfill retry-failed` then `backfill start` to try them again"
        )
    echo(ended_line(phase, summary, time.monotonic() - t0))
    run = summary.get("run") or {}
    if run.get("promoted") is False:
        echo(
            "the copy is in erc20_transfers_staging / erc1155_transfers_staging; production tables are not "
            "promoted yet: `backfill promote` (or start with --promote)"
        )
    store.close()
    return summary


@click.command()
@settings_options
@click.option("--foreground", is_flag=True, default=False, help="Run in this terminal with a live dashboard.")
@click.option(
    "--redo",
    is_flag=True,
    default=False,
    help="Fetch the COMPLETE days of --from..--to again; newer row versions supersede the old ones.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=False,
    help="Check and plan, print the plan (days, blocks, endpoints, store), write nothing.",
)
@click.option(
    "--follow",
    is_flag=True,
    default=False,
    help="After the backfill, keep copying the chain's new blocks until `backfill stop` (as `backfill follow`).",
)
@user_errors
def start(flags: dict[str, Any], foreground: bool, redo: bool, dry_run: bool, follow: bool) -> None:
    """Plan the days and run the workers until every day is COMPLETE (detached unless --foreground).

    While a run is active, a second `start` talks to it: SHARDS=N re-shards it live, new days are picked up."""
    settings = _settings(**flags, foreground=foreground or None, redo=redo or None, follow=follow or None)
    if dry_run:
        from backfill.cli.dry_run import preview, render_preview

        click.echo(render_preview(preview(settings)))
        return
    _start(settings)


@click.command("follow")
@settings_options
@click.option("--foreground", is_flag=True, default=False, help="Run in this terminal with a live dashboard.")
@user_errors
def follow(flags: dict[str, Any], foreground: bool) -> None:
    """Backfill up to the safe head, then keep the copy current: poll the head (BACKFILL_FOLLOW_POLL_S, 2 s),
    copy each new block once it has its confirmations, repair forks within the finality depth, rebuild when a
    day becomes final. Detached unless --foreground; `backfill status` watches it, `backfill stop` ends it."""
    _start(_settings(**flags, foreground=foreground or None, follow=True))


def _start(settings: Settings) -> None:
    """The run of `start` / `follow`; a foreground run's summary shown at its end."""
    from backfill.cli.status_render import render
    from backfill.files.oplog import setup_logging

    setup_logging(settings.log_dir / "monitor.log", log_format=settings.log_format)
    summary = start_run(
        settings, shards_explicit="shards" in settings.explicit, echo=click.echo, to_head=settings.follow
    )
    if summary is not None:
        from rich.console import Console

        Console().print(render(summary))
