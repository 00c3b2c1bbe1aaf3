"""One typed settings object, built once: flags > environment > backfill.toml > defaults.

Nothing else in the project reads `os.environ`; processes that are spawned get their settings
through the environment this module writes (`to_env`). Every value keeps where it came from (`Source`), so a
bad config is reported whole, one line per problem naming its origin, and `backfill config` can show it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit

from backfill.errors import ConfigError
from backfill.redact import redact_url
from backfill.shards import parse_shard_ids
from backfill.thresholds import LEVELS, THRESHOLDS

DEFAULT_RPC_URL = "http://127.0.0.1:8545"

# environment name -> settings field
ENV_NAMES = {
    "SHARDS": "shards",
    "BACKFILL_SHARD_IDS": "shard_ids",
    "ETHEREUM_RPC_URLS": "rpc_urls",
    "CLICKHOUSE_URL": "clickhouse_url",
    "BACKFILL_CLICKHOUSE_CLUSTER": "clickhouse_cluster",
    "BACKFILL_DATA_DIR": "data_dir",
    "BACKFILL_CONFIRMATIONS": "confirmations",
    "BACKFILL_FINALITY_DEPTH": "finality_depth",
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
    "BACKFILL_FOLLOW": "follow",
    "BACKFILL_FOLLOW_POLL_S": "follow_poll_s",
    "BACKFILL_METRICS_ADDR": "metrics_addr",
    "BACKFILL_READY_LAG_BLOCKS": "ready_lag_blocks",
    "BACKFILL_LEASE_TTL_S": "lease_ttl_s",
    "BACKFILL_HOST_NAME": "host_name",
    "BACKFILL_LOG_FORMAT": "log_format",
    "BACKFILL_USE_LOG_TIMESTAMPS": "use_log_timestamps",
    "BACKFILL_FAST_DECODE": "fast_decode",
    "BACKFILL_RPC_TIMEOUT_S": "rpc_timeout_s",
    "BACKFILL_RPC_ATTEMPTS": "rpc_attempts",
    "BACKFILL_RPC_MAX_RPS": "rpc_max_rps",
    "BACKFILL_RPC_MAX_CONCURRENCY": "rpc_max_concurrency",
    "BACKFILL_LAG_GUARD_BLOCKS": "lag_guard_blocks",
    "BACKFILL_GATES_INTERVAL_S": "gates_interval_s",
    "BACKFILL_AUDIT_SAMPLE": "audit_sample",
    "BACKFILL_AUDIT_DAY_LOGS": "audit_day_logs",
    "BACKFILL_AUDIT_ENGINE": "audit_engine",
    "BACKFILL_AUTO_PROMOTE": "auto_promote",
    "BACKFILL_REBUILD_SQL_DIR": "rebuild_sql_dir",
    "BACKFILL_EMBEDDED_ALLOW_EXTERNAL": "embedded_allow_external",
}
CONFIG_ENV = "BACKFILL_CONFIG"  # the TOML file to read instead of ./backfill.toml

# A ClickHouse cluster's name as backfill writes it after ON CLUSTER (backquoted): a remote_servers element name
CLUSTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")

# settings field -> its flag where the name is not --field-name (`start` / `config` options)
FLAG_NAMES = {"from_date": "--from", "to_date": "--to", "rpc_urls": "--rpc-url", "auto_promote": "--promote"}


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
    # one shard with replicas: the tables Replicated and their DDL ON CLUSTER (docs/cluster.md); "" = one node
    clickhouse_cluster: str = ""
    shards: int = 2
    shard_ids: str = ""  # the shards this host runs: "" all, "0-5" listed, "1/3" a share (backfill/shards.py)
    from_date: dt.date | None = None
    to_date: dt.date | None = None
    confirmations: int = 12
    # blocks behind the head that may still change (backfill.chain.finality); None = the chain's default
    finality_depth: int | None = None
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
    follow: bool = False  # after the backfill, keep copying the chain's new blocks (monitor/follow.py)
    follow_poll_s: float = 2.0  # while following: how often the head is asked for
    log_format: str = "text"  # the log files' lines: text (key=value) or json (one object a line, for shippers)
    metrics_addr: str = ""  # [host:]port the supervisor serves /metrics, /healthz, /readyz on ("" = off)
    ready_lag_blocks: int = 600  # /readyz of a following run turns 503 when the copy is further behind
    host_name: str = ""  # the name this host goes by in the store (read from the environment by each process)
    lease_ttl_s: float = 60.0  # a worker's shard lease lapses when not renewed for this long (a host gone)
    rpc_timeout_s: float = 30.0
    rpc_attempts: int = 10  # tries of one call across endpoints before the window fails
    rpc_max_rps: float = 0.0  # the plan's calls/s per endpoint, shared by the fleet (0 = unknown: learnt from 429s)
    rpc_max_concurrency: int = 8  # requests in flight per endpoint and worker
    lag_guard_blocks: int = 256  # blocks below the head where answers are checked for a lagging node
    use_log_timestamps: bool = True  # trust the log's blockTimestamp when the node gives one
    fast_decode: bool = (
        True  # read eth_getLogs answers with the compiled scanner where it is built (backfill/decode/scanner.py)
    )
    gates_interval_s: float = 600.0  # the supervisor runs the relaxed gates this often (0 = never)
    audit_sample: int = 3  # days the rebuild recounts from RPC (plus every suspicious empty day)
    # a sampled day of more rows than this is recounted over a random span of its blocks holding about this
    # many (0: whole days); listed days, --all and the empty days are always recounted whole
    audit_day_logs: int = 40_000  # two of the audit engine's answers
    audit_engine: bool = True  # the audit decodes answers in an engine of its own (monitor/audit/engine_read.py)
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
        """Environment that reproduces these settings in a spawned process (workers): every name of ENV_NAMES
        with its value written as the environment reads it; an optional setting left unset is left out."""
        env = {}
        for name, field in ENV_NAMES.items():
            value = getattr(self, field)
            if value is None or value == "":
                continue
            env[name] = _env_text(value)
        return env


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, Path):
        return str(value.resolve())
    return str(value)


def _clickhouse_problem(url: str) -> str | None:
    """What is wrong with a ClickHouse URL, as a predicate ("must be ..."), or None. Never quotes the URL."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError as exc:
        return f"must be a URL like http(s)://user:pass@host:port/db ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be a URL like http(s)://user:pass@host:port/db"
    database = parts.path.strip("/") or "backfill"
    if "/" in database or not database.replace("_", "").isalnum():
        return f"names an invalid database {database!r}"
    return None


def parse_clickhouse_url(url: str | None) -> StoreTarget:
    """`http(s)://user:pass@host:port/db` -> StoreTarget; None/'' -> the embedded store."""
    if not url:
        return StoreTarget(url=None)
    problem = _clickhouse_problem(url)
    if problem:
        raise ConfigError(f"CLICKHOUSE_URL {problem}")
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    return StoreTarget(
        url=url,
        host=parts.hostname or "",
        port=parts.port or (8443 if secure else 8123),
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        database=parts.path.strip("/") or "backfill",
        secure=secure,
    )


def redact_clickhouse_url(url: str) -> str:
    """A ClickHouse URL fit to print: the password as ***, nothing but user, host, port and database kept."""
    target = parse_clickhouse_url(url)
    auth = f"{target.username}:***@" if target.password else f"{target.username}@"
    return f"{'https' if target.secure else 'http'}://{auth}{target.host}:{target.port}/{target.database}"


# -- where a value came from -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Where a setting's value came from: a flag, an environment variable, a key of the TOML file, or the
    default (`name` then says what the default means, if anything)."""

    kind: str  # "flag" | "environment" | "file" | "default"
    name: str = ""  # --shards | SHARDS | shards (gates.strict.failed_days) | a note on the default
    file: str = ""  # the TOML file, for kind "file"

    def __str__(self) -> str:  # the `backfill config` column: flag --shards, environment SHARDS, backfill.toml: shards
        if self.kind == "file":
            return f"{self.file}: {self.name}"
        if self.kind == "default":
            return f"default ({self.name})" if self.name else "default"
        return f"{self.kind} {self.name}"

    def problem(self, text: str) -> str:
        """One line for a bad value from here, `text` a predicate: `backfill.toml: shards must be at least 1, got
        0`, `SHARDS (environment): must be an integer, got 'abc'`, `--shards (flag): must be at least 1, got 0`."""
        if self.kind == "file":
            return f"{self.file}: {self.name} {text}"
        return f"{self.name} ({self.kind}): {text}"


DEFAULT = Source("default")


class _Bad(ValueError):
    """A raw value a setting cannot take; the text is a predicate: "must be an integer, got 'abc'"."""


# -- raw value -> typed value ---------------------------------------------------------------------------------
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
FILE_KEYS = tuple(name for name in _FIELDS if name != "explicit")  # what backfill.toml may set
_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_URL_SHAPE = "http(s)://host[:port][/path]"

# the smallest (and largest) value of a number setting; `stall_s` and `rpc_timeout_s` must be more than 0
_AT_LEAST = {
    "shards": 1,
    "window_blocks": 1,
    "getlogs_blocks": 1,
    "getlogs_concurrency": 1,
    "batch_rows": 1,
    "rpc_attempts": 1,
    "rpc_max_concurrency": 1,
    "max_day_attempts": 1,
    "confirmations": 0,
    "finality_depth": 0,
    "getlogs_answer_logs": 0,
    "audit_sample": 0,
    "audit_day_logs": 0,
    "gates_interval_s": 0,
    "stall_grace_s": 0,
    "rpc_max_rps": 0,
    "lag_guard_blocks": 0,
    "restart_budget": 0,
    "ready_lag_blocks": 0,
    "lease_ttl_s": 5,
}
_AT_MOST = {"shards": 256}
_POSITIVE = ("stall_s", "rpc_timeout_s", "follow_poll_s", "lease_ttl_s")


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise _Bad(f"must be an integer, got {value!r}")
    try:
        return int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _Bad(f"must be an integer, got {value!r}") from None


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise _Bad(f"must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _Bad(f"must be a number, got {value!r}") from None
    if math.isnan(number):
        raise _Bad(f"must be a number, got {value!r}")
    return number


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _BOOL_WORDS:
        raise _Bad(f"must be true or false (1 or 0), got {value!r}")
    return _BOOL_WORDS[word]


def _as_urls(value: Any) -> tuple[str, ...]:
    """RPC endpoints: a comma-separated string or a list. A bad one is named by position, never quoted (keys)."""
    if isinstance(value, str):
        items: list[Any] = value.split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise _Bad(f"must be a list of {_URL_SHAPE} URLs")
    if not all(isinstance(u, str) for u in items):
        raise _Bad(f"must be a list of {_URL_SHAPE} URLs")
    urls = tuple(u.strip() for u in items if u.strip())
    if not urls:
        raise _Bad(f"must name at least one endpoint ({_URL_SHAPE})")
    for i, url in enumerate(urls, 1):
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a malformed port
        except ValueError:
            raise _Bad(f"must be {_URL_SHAPE} URLs; URL {i} of {len(urls)} is malformed") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _Bad(f"must be {_URL_SHAPE} URLs; URL {i} of {len(urls)} has another scheme or no host")
    return urls


def _as_date(value: Any) -> dt.date | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):  # a TOML date literal
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise _Bad(f"must be a date like 2024-01-31, got {value!r}") from None


def _as_path(value: Any) -> Path:
    if not isinstance(value, (str, Path)) or str(value) == "":
        raise _Bad(f"must be a path, got {value!r}")
    return Path(value)


def _coerce(name: str, value: Any) -> Any:
    """A raw flag / environment / TOML value -> the field's type and range; _Bad(predicate) when it cannot be."""
    if name in ("from_date", "to_date"):
        return _as_date(value)
    if name == "data_dir":
        return _as_path(value)
    if name == "rebuild_sql_dir":
        return None if value in (None, "") else _as_path(value)
    if name == "gates":
        return value  # checked key by key where the file is read (_gate_overrides)
    if name == "log_format":
        if str(value).strip().lower() not in ("text", "json"):
            raise _Bad(f"must be text or json, got {value!r}")
        return str(value).strip().lower()
    if name == "rpc_urls":
        return _as_urls(value)
    if name == "clickhouse_url":
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise _Bad("must be a URL like http(s)://user:pass@host:port/db")
        problem = _clickhouse_problem(value)
        if problem:
            raise _Bad(problem)
        return value
    if name == "shard_ids":
        try:
            parse_shard_ids(str(value))
        except ValueError as exc:
            raise _Bad(str(exc)) from None
        return str(value).strip()
    if name == "clickhouse_cluster":
        text = str(value).strip()
        if text and not CLUSTER_NAME.match(text):
            raise _Bad(f"must be a cluster name (letters, digits, _ and -, first a letter or _), got {value!r}")
        return text
    kind = _FIELDS[name].type
    if kind == "int | None":  # optional: unset means the default worked out later (e.g. per chain)
        if value in (None, ""):
            return None
        kind = "int"
    if kind in ("bool", bool):
        return _as_bool(value)
    if kind in ("int", int):
        number: float = _as_int(value)
    elif kind in ("float", float):
        number = _as_float(value)
    else:
        return value
    if name in _AT_LEAST and number < _AT_LEAST[name]:
        raise _Bad(f"must be at least {_AT_LEAST[name]}, got {value!r}")
    if name in _AT_MOST and number > _AT_MOST[name]:
        raise _Bad(f"must be at most {_AT_MOST[name]}, got {value!r}")
    if name in _POSITIVE and number <= 0:
        raise _Bad(f"must be more than 0, got {value!r}")
    return number


def _did_you_mean(word: str, known: list[str] | tuple[str, ...], aliases: Mapping[str, str] | None = None) -> str:
    """` (did you mean 'shards'?)` for the closest known name, or ''."""
    match = (aliases or {}).get(word) or next(iter(difflib.get_close_matches(word, known, n=1)), None)
    return f" (did you mean {match!r}?)" if match else ""


# -- the three sources ----------------------------------------------------------------------------------------
def _toml_problem(path: Path, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """`backfill.toml:3:9: invalid TOML: Expected '=' after a key in a key/value pair`."""
    message = str(exc)
    at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if at:
        return f"{path}:{at[1]}:{at[2]}: invalid TOML: {message[: at.start()]}"
    lines = text.split("\n")
    end = re.sub(r"\s*\(at end of document\)$", "", message)
    return f"{path}:{len(lines)}:{len(lines[-1]) + 1}: invalid TOML: {end} (at the end of the file)"


def _gate_overrides(value: Any, file: str, problems: list[str]) -> tuple[tuple[str, str, float], ...]:
    """`[gates.relaxed]` / `[gates.strict]` tables of backfill.toml -> ((level, name, value), ...); every
    unknown level or threshold name and every bad value is a problem (monitor.gates.judge.thresholds checks again)."""
    if not isinstance(value, dict):
        problems.append(f"{file}: gates must be tables [gates.relaxed] and/or [gates.strict]")
        return ()
    out = []
    for level, table in value.items():
        if level not in LEVELS:
            problems.append(
                f"{file}: unknown key 'gates.{level}'"
                f"{_did_you_mean(f'gates.{level}', [f'gates.{lvl}' for lvl in LEVELS])}"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{file}: gates.{level} must be a table [gates.{level}] of thresholds")
            continue
        for name, raw in table.items():
            if name not in THRESHOLDS:
                problems.append(
                    f"{file}: unknown key {name!r} in [gates.{level}]{_did_you_mean(name, list(THRESHOLDS))}"
                )
                continue
            try:
                number = _as_float(raw)
                if number < 0:
                    raise _Bad(f"must be at least 0, got {raw!r}")
            except _Bad as bad:
                problems.append(f"{file}: gates.{level}.{name} {bad}")
                continue
            out.append((level, str(name), number))
    return tuple(out)


def _config_file(toml_path: Path | None, env: Mapping[str, str], problems: list[str]) -> tuple[Path | None, Source]:
    """The TOML file to read and why: given by the caller, named by BACKFILL_CONFIG (then it must exist), or
    ./backfill.toml when there is one."""
    if toml_path is not None:
        return (toml_path if toml_path.exists() else None), DEFAULT
    named = env.get(CONFIG_ENV)
    if named:
        source = Source("environment", CONFIG_ENV)
        path = Path(named)
        if not path.exists():
            problems.append(source.problem(f"names {named}, which does not exist"))
            return None, source
        if not path.is_file():
            problems.append(source.problem(f"names {named}, which is not a file"))
            return None, source
        return path, source
    default = Path("backfill.toml")
    return (default if default.is_file() else None), Source("default", "./backfill.toml, when there is one")


def _from_file(path: Path, problems: list[str]) -> list[tuple[str, Any, Source]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc})")
        return []
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        problems.append(_toml_problem(path, text, exc))
        return []
    out: list[tuple[str, Any, Source]] = []
    aliases = {env_name: field for env_name, field in ENV_NAMES.items()}  # `SHARDS = 3` in the file
    for key, value in doc.items():
        source = Source("file", key, str(path))
        if key == "gates":
            out.append((key, _gate_overrides(value, str(path), problems), source))
        elif key in FILE_KEYS:
            out.append((key, value, source))
        else:
            problems.append(f"{path}: unknown key {key!r}{_did_you_mean(key, FILE_KEYS, aliases)}")
    return out


def _from_env(env: Mapping[str, str], problems: list[str]) -> list[tuple[str, Any, Source]]:
    out: list[tuple[str, Any, Source]] = []
    known = [*ENV_NAMES, CONFIG_ENV]
    for name in sorted(env):
        if name in ENV_NAMES:
            if env[name] != "":
                out.append((ENV_NAMES[name], env[name], Source("environment", name)))
        elif name.startswith("BACKFILL_") and name != CONFIG_ENV:  # a typo would be ignored silently
            problems.append(f"{name} (environment): unknown variable{_did_you_mean(name, known)}")
    return out


def _from_flags(flags: Mapping[str, Any]) -> list[tuple[str, Any, Source]]:
    out = []
    for key, value in flags.items():
        if key not in FILE_KEYS:
            raise TypeError(f"unknown setting {key!r}")  # a caller's bug, not the user's
        if value is not None:
            flag = FLAG_NAMES.get(key, "--" + key.replace("_", "-"))
            out.append((key, value, Source("flag", "--no-promote" if key == "auto_promote" and not value else flag)))
    return out


# -- building the settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resolved:
    """The settings, where each explicit one came from, and the TOML file that was read (None: none)."""

    settings: Settings
    sources: Mapping[str, Source]
    config_file: Path | None
    config_source: Source


def resolve(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None, toml_path: Path | None = None
) -> Resolved:
    """flags > environment > TOML file > defaults. Every value of every source is checked, and every problem
    is reported at once: one ConfigError whose lines each name the file / variable / flag and the key."""
    env = os.environ if env is None else env
    problems: list[str] = []
    path, config_source = _config_file(toml_path, env, problems)
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}

    def take(layer: list[tuple[str, Any, Source]]) -> None:  # sources come in precedence order: the last wins
        for name, raw, source in layer:
            try:
                values[name] = _coerce(name, raw)
                sources[name] = source
            except _Bad as bad:
                problems.append(source.problem(str(bad)))

    take(_from_file(path, problems) if path else [])
    take(_from_env(env, problems))
    take(_from_flags(flags or {}))
    problems += _cross_problems(values, sources)
    if problems:
        raise ConfigError("\n".join(problems))
    return Resolved(Settings(**values, explicit=frozenset(values)), sources, path, config_source)


def _cross_problems(values: Mapping[str, Any], sources: Mapping[str, Source]) -> list[str]:
    """Problems of settings together (each of them valid alone)."""
    out = []
    first, last = values.get("from_date"), values.get("to_date")
    if first and last and first > last:
        out.append(f"{sources['from_date'].name} {first} is after {sources['to_date'].name} {last}")
    if values.get("clickhouse_cluster") and not values.get("clickhouse_url"):
        out.append(
            sources["clickhouse_cluster"].problem(
                "needs CLICKHOUSE_URL, a server of the cluster: the embedded store is a single node"
            )
        )
    listed = parse_shard_ids(values.get("shard_ids") or "").listed
    shards = values.get("shards", Settings.shards)
    if listed and max(listed) >= shards:
        out.append(
            sources["shard_ids"].problem(f"names shard {max(listed)}, but there are {shards} (ids 0..{shards - 1})")
        )
    if values.get("redo") and not (first and last):
        out.append("--redo needs --from and --to: the days to fetch again, e.g. --from 2024-01-03 --to 2024-01-04")
    return out


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    toml_path: Path | None = None,
) -> Settings:
    """Build the settings: flags > environment > TOML file > defaults, every value checked (ConfigError)."""
    return resolve(flags, env, toml_path).settings


# -- `backfill config` ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingRow:
    name: str
    value: Any  # JSON-ready, secrets redacted
    source: Source


_NOT_SHOWN = ("explicit", "foreground", "redo", "gates")  # bookkeeping and modes of one `start`; gates: per key


def effective_settings(
    flags: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None, toml_path: Path | None = None
) -> list[SettingRow]:
    """The settings a command would run with, each with where it came from; RPC keys and the ClickHouse
    password redacted. Raises ConfigError (every problem) like load_settings."""
    r = resolve(flags, env, toml_path)
    s = r.settings
    rows = [SettingRow("config_file", str(r.config_file) if r.config_file else None, r.config_source)]
    for name in _FIELDS:
        if name in _NOT_SHOWN:
            continue
        value, source = getattr(s, name), r.sources.get(name, DEFAULT)
        if name == "rpc_urls":
            value = [redact_url(u) for u in value]
        elif name == "clickhouse_url":
            value = redact_clickhouse_url(value) if value else None
            if value is None:
                source = Source("default", f"the embedded store in {s.data_dir / 'clickhouse'}")
        elif name == "finality_depth" and value is None:
            source = Source("default", "the chain's: 64 on Ethereum, 0 on anvil; docs/architecture.md")
        elif name == "rebuild_sql_dir" and value is None:
            value, source = s.sql_dir, Source("default", "<data_dir>/rebuild.d")
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, dt.date):
            value = value.isoformat()
        rows.append(SettingRow(name, value, source))
    gates_file = r.sources["gates"].file if "gates" in r.sources else ""
    for level, name, number in s.gates:
        rows.append(SettingRow(f"gates.{level}.{name}", number, Source("file", f"gates.{level}.{name}", gates_file)))
    if not s.gates:
        rows.append(SettingRow("gates", None, Source("default", "the thresholds of docs/gates.md")))
    return rows


def secret_bearing_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The configured URLs that may carry keys or passwords, for scrubbing free text (errors) before printing."""
    env = os.environ if env is None else env
    urls = [u.strip() for u in env.get("ETHEREUM_RPC_URLS", "").split(",") if u.strip()]
    return urls + [env.get("CLICKHOUSE_URL", "")]
