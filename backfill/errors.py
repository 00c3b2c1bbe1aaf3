"""Errors that say what to do, not where they came from.

`UserError` and its children end at the CLI boundary as one clear line and a non-zero exit;
everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the operator can fix (bad flag, unreachable endpoint, wrong chain)."""

    exit_code = 2


class ConfigError(UserError):
    """Settings that cannot work: bad values, malformed URLs, conflicting flags."""


class EndpointUnreachable(UserError):
    """No configured RPC endpoint answers."""

    exit_code = 3


class WrongChain(UserError):
    """The endpoint serves another chain than the one this database records."""

    exit_code = 4


class StoreUnavailable(UserError):
    """ClickHouse (server or embedded) cannot be reached or refuses us."""

    exit_code = 5


class RpcError(Exception):
    """A JSON-RPC call failed in a way the caller may retry or split."""

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.http_status = http_status
