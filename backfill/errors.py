"""Errors that say what to do, not where they came from.

`UserError` and its children end at the CLI boundary as one clear line and a non-zero exit, their
`exit_code` from the one table of backfill/exitcodes.py; everything else is a bug and keeps its traceback.
"""

from backfill import exitcodes


class UserError(Exception):
    """A mistake the operator can fix (bad flag, unreachable endpoint, wrong chain)."""

    exit_code = exitcodes.USAGE


class ConfigError(UserError):
    """Settings that cannot work: bad values, malformed URLs, conflicting flags."""


class CommandFailed(UserError):
    """The command ran and could not do its job (days FAILED, the rebuild or a promotion stopped)."""

    exit_code = exitcodes.FAILED


class EndpointUnreachable(UserError):
    """No configured RPC endpoint answers."""

    exit_code = exitcodes.PROVIDER


class WrongChain(UserError):
    """The endpoint serves another chain than the one this database records."""

    exit_code = exitcodes.WRONG_CHAIN


class ChainForked(UserError):
    """The chain forked deeper than the finality depth: the copy's tip is not on the chain any more."""

    exit_code = exitcodes.WRONG_CHAIN


class StoreUnavailable(UserError):
    """ClickHouse (server or embedded) cannot be reached or refuses us."""

    exit_code = exitcodes.STORE


class SqlRefused(UserError):
    """ClickHouse refused the operator's own statement (`backfill sql`): its error text, unwrapped."""

    exit_code = exitcodes.SQL


class Interrupted(UserError):
    """Stopped by Ctrl-C; the message says what was kept and what carries on."""

    exit_code = exitcodes.INTERRUPTED


class RpcError(Exception):
    """A JSON-RPC call failed in a way the caller may retry or split."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
