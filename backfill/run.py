"""`backfill start`: check, plan, run the fleet to the end, report. The order matters: every check that
can refuse the run happens before anything is written."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

from backfill.errors import UserError
from backfill.prepare import chain_identity, check_chain, check_endpoints, plan_days, record_chain
from backfill.rpc import RpcClient
from backfill.settings import Settings
from backfill.status import collect
from backfill.store import Store

log = logging.getLogger("monitor")


class RunFailed(UserError):
    exit_code = 1


async def _prepare(settings: Settings, store_factory: Callable[[], Store]) -> tuple[Store, int]:
    chain_id = await check_endpoints(settings)
    async with RpcClient(settings.rpc_urls, timeout_s=settings.rpc_timeout_s, attempts=4, context="monitor") as rpc:
        chain_id, genesis = await chain_identity(rpc)
        store = store_factory()
        check_chain(store, chain_id, genesis)
        plans = await plan_days(rpc, store, settings)
        record_chain(store, chain_id, genesis)
    log.info("event=prepared chain_id=%d days=%d shards=%d", chain_id, len(plans), settings.shards)
    return store, len(plans)


def start_run(settings: Settings, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    from monitor.fleet import FleetHalted, run_fleet

    store, n_days = asyncio.run(_prepare(settings, lambda: Store.connect(settings)))
    echo(f"planned {n_days} days; starting {settings.shards} workers (logs: {settings.log_dir}/worker-<k>.log)")
    t0 = time.monotonic()

    def tick() -> None:
        s = collect(store)
        echo(f"  {s['days_complete']}/{s['days_total']} days complete, "
             f"{s['checkpoint_rows']['erc20'] + s['checkpoint_rows']['erc1155']} rows, {time.monotonic() - t0:.0f}s")

    try:
        run_fleet(settings, on_tick=tick, tick_s=5.0)
    except FleetHalted as exc:
        raise RunFailed(str(exc)) from None
    summary = collect(store)
    if summary["days_complete"] != summary["days_total"]:
        raise RunFailed(f"workers finished but only {summary['days_complete']}/{summary['days_total']} days are COMPLETE")
    log.info("event=run_complete days=%d seconds=%.1f", summary["days_total"], time.monotonic() - t0)
    echo(f"backfill complete: {summary['days_total']} days in {time.monotonic() - t0:.1f}s")
    store.close()
    return summary
