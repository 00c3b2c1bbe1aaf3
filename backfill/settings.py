"""One typed settings object, built once: flags > environment > backfill.toml > defaults.

Nothing else in the project reads `os.environ`; processes that are spawned get their settings
through the environment this module writes (`to_env`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from backfill.errors import ConfigError

DEFAULT_RPC_URL = "http://127.0.0.1:8545"

# environment name -> settings field
ENV_NAMES = {
    "SHARDS": "shards",
    "ETHEREUM_RPC_URLS": "rpc_urls",
    "CLICKHOUSE_URL": "clickhouse_url",
    "BACKFILL_DATA_DIR": "data_dir",
    "BACKFILL_CONFIRMATIONS": "confirmations",
    "BACKFILL_WINDOW_BLOCKS": "window_blocks",
    "BACKFILL_GETLOGS_BLOCKS": "getlogs_blocks",
    "BACKFILL_GETLOGS_CONCURRENCY": "getlogs_concurrency",
    "BACKFILL_GETLOGS_ANSWER_LOGS": "getlogs_answer_logs",
    "BACKFILL_BATCH_ROWS": "batch_rows",
    "BACKFILL_STALL_S": "stall_s",
    "BACKFILL_STALL_GRACE_S": "stall_grace_s",
    "BACKFILL_MAX_DAY_ATTEMPTS": "max_day_attempts",
    "BACKFILL_RESTART_BUDGET": "restart_budget",
    "BACKFILL_ON_COMPLETE": "on_complete",
    "BACKFILL_USE_LOG_TIMESTAMPS": "use_log_timestamps",
    "BACKFILL_FAST_DECODE": "fast_decode",
    "BACKFILL_RPC_TIMEOUT_S": "rpc_timeout_s",
    "BACKFILL_RPC_ATTEMPTS": "rpc_attempts",
    "BACKFILL_RPC_MAX_RPS": "rpc_max_rps",
    "BACKFILL_RPC_MAX_CONCURRENCY": "rpc_max_concurrency",
    "BACKFILL_LAG_GUARD_BLOCKS": "lag_guard_blocks",
    "BACKFILL_GATES_INTERVAL_S": "gates_interval_s",
    "BACKFILL_AUDIT_SAMPLE": "audit_sample",
    "BACKFILL_AUTO_PROMOTE": "auto_promote",
    "BACKFILL_REBUILD_SQL_DIR": "rebuild_sql_dir",
    "BACKFILL_EMBEDDED_ALLOW_EXTERNAL": "embedded_allow_external",
}


@dataclass(frozen=True)
class StoreTarget:
    """Where ClickHouse is: a server URL, or the embedded engine (url=None)."""

    url: str | None
    host: str = "127.0.0.1"
    port: int = 8123
    username: str = "default"
    password: str = ""
    database: str = "backfill"
    secure: bool = False


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    rpc_urls: tuple[str, ...] = (DEFAULT_RPC_URL,)
    clickhouse_url: str | None = None
    shards: int = 2
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    confirmations: int = 12
    window_blocks: int = 10_000  # blocks checkpointed together: the most a killed worker can lose
    getlogs_blocks: int = 50  # first eth_getLogs range (density unknown); then sized by the answers
    getlogs_concurrency: int = 4  # eth_getLogs calls in flight per worker
    getlogs_answer_logs: int = 0  # logs per eth_getLogs answer ranges are sized for (0 = auto: ranges.answer_target)
    batch_rows: int = 50_000  # rows per INSERT; also the most rows a window holds before writing them
    stall_s: float = 300.0  # a worker whose heartbeat is older is stopped and relaunched
    stall_grace_s: float = 10.0  # TERM, then KILL after this long
    max_day_attempts: int = 3  # a day whose fetch fails this many times is FAILED and skipped
    restart_budget: int = 50  # restarts of one worker slot before the run halts
    on_complete: bool = True  # run the on-complete rebuild when every day is COMPLETE
    rpc_timeout_s: float = 30.0
    rpc_attempts: int = 10  # tries of one call across endpoints before the window fails
    rpc_max_rps: float = 0.0  # the plan's calls/s per endpoint, shared by the fleet (0 = unknown: learnt from 429s)
    rpc_max_concurrency: int = 8  # requests in flight per endpoint and worker
    lag_guard_blocks: int = 256  # blocks below the head where answers are checked for a lagging node
    use_log_timestamps: bool = True  # trust the log's blockTimestamp when the node gives one
    fast_decode: bool = True  # read eth_getLogs answers with the compiled scanner where it is built (backfill/native.py)
    gates_interval_s: float = 600.0  # the supervisor runs the relaxed gates this often (0 = never)
    audit_sample: int = 3  # days the rebuild recounts from RPC (plus every suspicious empty day)
    auto_promote: bool = False  # the rebuild promotes staging into production when everything passed
    rebuild_sql_dir: Path | None = None  # the operator's *.sql steps; default <data_dir>/rebuild.d
    # the embedded store runs statements that reach outside it (file(), url(), remote(), INTO OUTFILE, ...);
    # read by the server process when it starts
    embedded_allow_external: bool = False
    gates: tuple[tuple[str, str, float], ...] = ()  # threshold overrides (level, name, value) from [gates.*]
    foreground: bool = False
    redo: bool = False  # `start --redo`: fetch COMPLETE days of [--from, --to] again (newer row versions)
    explicit: frozenset[str] = frozenset()  # settings given by a flag, the environment or the TOML file

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "backfill"

    @property
    def sql_dir(self) -> Path:
        return self.rebuild_sql_dir or self.data_dir / "rebuild.d"

    @property
    def store(self) -> StoreTarget:
        return parse_clickhouse_url(self.clickhouse_url)

    def to_env(self) -> dict[str, str]:
        """Environment that reproduces these settings in a spawned process (workers)."""
        env = {
            "SHARDS": str(self.shards),
            "ETHEREUM_RPC_URLS": ",".join(self.rpc_urls),
            "BACKFILL_DATA_DIR": str(self.data_dir.resolve()),
            "BACKFILL_CONFIRMATIONS": str(self.confirmations),
            "BACKFILL_WINDOW_BLOCKS": str(self.window_blocks),
            "BACKFILL_GETLOGS_BLOCKS": str(self.getlogs_blocks),
            "BACKFILL_GETLOGS_CONCURRENCY": str(self.getlogs_concurrency),
            "BACKFILL_GETLOGS_ANSWER_LOGS": str(self.getlogs_answer_logs),
            "BACKFILL_BATCH_ROWS": str(self.batch_rows),
            "BACKFILL_STALL_S": str(self.stall_s),
            "BACKFILL_STALL_GRACE_S": str(self.stall_grace_s),
            "BACKFILL_MAX_DAY_ATTEMPTS": str(self.max_day_attempts),
            "BACKFILL_RESTART_BUDGET": str(self.restart_budget),
            "BACKFILL_ON_COMPLETE": "1" if self.on_complete else "0",
            "BACKFILL_RPC_TIMEOUT_S": str(self.rpc_timeout_s),
            "BACKFILL_RPC_ATTEMPTS": str(self.rpc_attempts),
            "BACKFILL_RPC_MAX_RPS": str(self.rpc_max_rps),
            "BACKFILL_RPC_MAX_CONCURRENCY": str(self.rpc_max_concurrency),
            "BACKFILL_LAG_GUARD_BLOCKS": str(self.lag_guard_blocks),
            "BACKFILL_USE_LOG_TIMESTAMPS": "1" if self.use_log_timestamps else "0",
            "BACKFILL_FAST_DECODE": "1" if self.fast_decode else "0",
            "BACKFILL_GATES_INTERVAL_S": str(self.gates_interval_s),
            "BACKFILL_AUDIT_SAMPLE": str(self.audit_sample),
            "BACKFILL_AUTO_PROMOTE": "1" if self.auto_promote else "0",
            "BACKFILL_EMBEDDED_ALLOW_EXTERNAL": "1" if self.embedded_allow_external else "0",
        }
        if self.rebuild_sql_dir:
            env["BACKFILL_REBUILD_SQL_DIR"] = str(self.rebuild_sql_dir.resolve())
        if self.clickhouse_url:
            env["CLICKHOUSE_URL"] = self.clickhouse_url
        return env


def parse_clickhouse_url(url: str | None) -> StoreTarget:
    """`http(s)://user:pass@host:port/db` -> StoreTarget; None/'' -> the embedded store."""
    if not url:
        return StoreTarget(url=None)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"CLICKHOUSE_URL is malformed ({exc}); expected http(s)://user:pass@host:port/db") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("CLICKHOUSE_URL is malformed; expected http(s)://user:pass@host:port/db")
    database = parts.path.strip("/") or "backfill"
    if "/" in database or not database.replace("_", "").isalnum():
        raise ConfigError(f"CLICKHOUSE_URL names an invalid database {database!r}")
    secure = parts.scheme == "https"
    return StoreTarget(
        url=url,
        host=parts.hostname,
        port=port or (8443 if secure else 8123),
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=database,
        secure=secure,
    )


def _parse_date(name: str, value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{name} must be a date like 2024-01-31, got {value!r}") from None


def _coerce(name: str, value: Any) -> Any:
    """Turn a raw flag / env / TOML value into the field's type, with one clear error."""
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if name not in fields:
        raise ConfigError(f"unknown setting {name!r}")
    if name in ("from_date", "to_date"):
        return None if value in (None, "") else _parse_date({"from_date": "--from", "to_date": "--to"}[name], value)
    if name in ("data_dir", "rebuild_sql_dir"):
        return None if value in (None, "") and name == "rebuild_sql_dir" else Path(value)
    if name == "gates":
        return _gate_overrides(value)
    if name == "rpc_urls":
        urls = value.split(",") if isinstance(value, str) else list(value)
        urls = tuple(u.strip() for u in urls if u.strip())
        if not urls:
            raise ConfigError("ETHEREUM_RPC_URLS is empty")
        for u in urls:
            try:
                p = urlsplit(u)
                _ = p.port  # raises ValueError on a malformed port
            except ValueError:
                raise ConfigError("an RPC URL in ETHEREUM_RPC_URLS is malformed") from None
            if p.scheme not in ("http", "https") or not p.hostname:
                raise ConfigError("an RPC URL in ETHEREUM_RPC_URLS is malformed: expected http(s)://host[:port][/path]")
        return urls
    if name == "clickhouse_url":
        return value or None
    if name in ("use_log_timestamps", "fast_decode", "foreground", "on_complete", "auto_promote", "redo",
                "embedded_allow_external"):
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("1", "true", "yes", "on")
    kind = fields[name].type
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
    except (TypeError, ValueError):
        env = next((k for k, v in ENV_NAMES.items() if v == name), name)
        raise ConfigError(f"{env} must be a number, got {value!r}") from None
    return value


def _gate_overrides(value: Any) -> tuple[tuple[str, str, float], ...]:
    """`[gates.relaxed]` / `[gates.strict]` tables of backfill.toml -> ((level, name, value), ...).
    Names are checked against the gates' thresholds by monitor.gates.thresholds (ConfigError)."""
    if isinstance(value, tuple):
        return value
    if not isinstance(value, dict):
        raise ConfigError("[gates] in backfill.toml must hold tables [gates.relaxed] and/or [gates.strict]")
    out = []
    for level, table in value.items():
        if level not in ("relaxed", "strict") or not isinstance(table, dict):
            raise ConfigError(f"[gates.{level}] is not a threshold set; use [gates.relaxed] or [gates.strict]")
        for name, v in table.items():
            try:
                out.append((level, str(name), float(v)))
            except (TypeError, ValueError):
                raise ConfigError(f"[gates.{level}] {name} must be a number, got {v!r}") from None
    return tuple(out)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
) -> Settings:
    """Build the settings: flags > environment > TOML file > defaults, then validate."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    path = toml_path or Path(env.get("BACKFILL_CONFIG", "backfill.toml"))
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        for key, value in doc.items():
            raw[key] = value
    for env_name, field_name in ENV_NAMES.items():
        if env.get(env_name) not in (None, ""):
            raw[field_name] = env[env_name]
    for key, value in (flags or {}).items():
        if value is not None:
            raw[key] = value
    values = {k: _coerce(k, v) for k, v in raw.items()}
    settings = Settings(**values, explicit=frozenset(values))
    validate(settings)
    return settings


def validate(s: Settings) -> None:
    if s.shards < 1:
        raise ConfigError(f"SHARDS must be at least 1, got {s.shards}")
    if s.shards > 256:
        raise ConfigError(f"SHARDS must be at most 256, got {s.shards}")
    if s.from_date and s.to_date and s.from_date > s.to_date:
        raise ConfigError(f"--from {s.from_date} is after --to {s.to_date}")
    if s.getlogs_answer_logs < 0:
        raise ConfigError("getlogs_answer_logs must be >= 0 (0 = auto)")
    for name in ("window_blocks", "getlogs_blocks", "getlogs_concurrency", "batch_rows", "rpc_attempts",
                 "rpc_max_concurrency"):
        if getattr(s, name) < 1:
            raise ConfigError(f"{name} must be at least 1")
    if s.confirmations < 0:
        raise ConfigError("confirmations must be >= 0")
    if s.stall_s <= 0 or s.stall_grace_s < 0:
        raise ConfigError("stall_s must be > 0 and stall_grace_s >= 0")
    if s.max_day_attempts < 1:
        raise ConfigError("max_day_attempts must be at least 1")
    if s.redo and not (s.from_date and s.to_date):
        raise ConfigError("--redo needs --from and --to: the days to fetch again, e.g. --from 2024-01-03 --to 2024-01-04")
    if s.audit_sample < 0 or s.gates_interval_s < 0:
        raise ConfigError("audit_sample and gates_interval_s must be >= 0")
    parse_clickhouse_url(s.clickhouse_url)  # raises ConfigError when malformed


def secret_bearing_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The configured URLs that may carry keys or passwords, for scrubbing free text (errors) before printing."""
    env = os.environ if env is None else env
    urls = [u.strip() for u in env.get("ETHEREUM_RPC_URLS", "").split(",") if u.strip()]
    return urls + [env.get("CLICKHOUSE_URL", "")]
