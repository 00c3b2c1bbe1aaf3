"""The CLI's surface: one exit-code table every error maps to, one line per error or Ctrl-C, help for every
command and option, and what a command's store waits show at the terminal."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from backfill import exitcodes
from backfill.cli.app import main, user_errors
from backfill.errors import (
    CommandFailed,
    ConfigError,
    EndpointUnreachable,
    Interrupted,
    RpcError,
    SqlRefused,
    StoreUnavailable,
    UserError,
    WrongChain,
)
from backfill.files.oplog import store_wait_text

README = Path(__file__).resolve().parents[2] / "README.md"


# -- the table ---------------------------------------------------------------------------------------------------
def all_subclasses(cls: type) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | all_subclasses(sub)
    return out


def test_each_kind_of_error_has_its_code():
    assert {
        cls: cls.exit_code
        for cls in (
            UserError,
            ConfigError,
            CommandFailed,
            EndpointUnreachable,
            WrongChain,
            StoreUnavailable,
            SqlRefused,
            Interrupted,
        )
    } == {
        UserError: 2,
        ConfigError: 2,
        CommandFailed: 1,
        EndpointUnreachable: 3,
        WrongChain: 4,
        StoreUnavailable: 5,
        SqlRefused: 6,
        Interrupted: 130,
    }


def test_the_commands_own_errors_map_to_the_table():
    import backfill.cli.data_dir
    import monitor.commands.rebuild
    import monitor.commands.start
    import monitor.dedup
    import monitor.promote

    assert monitor.commands.start.RunFailed.exit_code == exitcodes.FAILED
    assert monitor.commands.rebuild.RebuildStopped.exit_code == exitcodes.FAILED
    assert monitor.dedup.DedupRefused.exit_code == exitcodes.FAILED
    assert monitor.promote.PromotionFailed.exit_code == exitcodes.FAILED
    assert monitor.promote.NothingToRollBack.exit_code == exitcodes.FAILED
    assert backfill.cli.data_dir.NoBackfillData.exit_code == exitcodes.USAGE
    for cls in all_subclasses(UserError) | {UserError}:
        assert cls.exit_code in exitcodes.TABLE, cls


def test_gates_failed_keeps_the_code_docs_gates_defines():
    assert exitcodes.GATES_FAILED == 1
    assert "| 1 | at least one gate failed |" in (README.parent / "docs" / "gates.md").read_text()


def test_the_readme_lists_every_code_of_the_table():
    text = README.read_text()
    section = text[text.index("### Exit codes") :]
    section = section[: section.index("\n### ", 5)]
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert listed == set(exitcodes.TABLE)


# -- one line per error, at the CLI boundary ---------------------------------------------------------------------
def run_raising(exc: BaseException, name: str = "cmd") -> click.testing.Result:
    @click.command(name)
    @user_errors
    def cmd() -> None:
        raise exc

    return CliRunner().invoke(cmd, [])


@pytest.mark.parametrize(
    "exc,code",
    [
        (UserError("no run is active"), 2),
        (ConfigError("bad"), 2),
        (CommandFailed("3 days FAILED"), 1),
        (EndpointUnreachable("no RPC endpoint answers"), 3),
        (WrongChain("chain 4242"), 4),
        (StoreUnavailable("cannot use ClickHouse"), 5),
        (SqlRefused("Code: 60. DB::Exception: x (UNKNOWN_TABLE)"), 6),
        (RpcError("quota"), 3),
    ],
)
def test_an_error_is_one_error_line_and_its_code(exc, code):
    result = run_raising(exc)
    assert result.exit_code == code
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output


def test_ctrl_c_is_one_line_saying_what_carries_on_and_130():
    result = run_raising(KeyboardInterrupt(), name="start")
    assert result.exit_code == 130
    assert result.stderr == "stopped by Ctrl-C; progress is checkpointed, `backfill start` resumes\n"
    assert run_raising(KeyboardInterrupt(), name="gates").stderr == "stopped by Ctrl-C\n"


def test_a_graceful_stop_by_ctrl_c_is_its_own_line_not_an_error():
    result = run_raising(Interrupted("stopped by Ctrl-C at step audit; production is unchanged"))
    assert result.exit_code == 130 and result.stderr == "stopped by Ctrl-C at step audit; production is unchanged\n"


# -- help --------------------------------------------------------------------------------------------------------
def commands(group: click.Group, ctx: click.Context, path: str = "backfill"):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        yield f"{path} {name}", cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, ctx, f"{path} {name}")


def test_every_command_and_option_has_help():
    with click.Context(main) as ctx:
        found = [("backfill", main), *commands(main, ctx)]
    assert len(found) > 20
    missing = []
    for path, cmd in found:
        if not (cmd.help or "").strip():
            missing.append(path)
        missing += [
            f"{path} {'/'.join(p.opts)}"
            for p in cmd.params
            if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()
        ]
    assert missing == []


def test_the_readme_shows_how_to_turn_on_completion_in_each_shell():
    text = README.read_text()
    for shell in ("bash", "zsh", "fish"):
        assert f"_BACKFILL_COMPLETE={shell}_source backfill" in text


# -- store waits at the terminal ---------------------------------------------------------------------------------
def test_a_store_wait_reads_as_words_and_a_refusal_at_once_says_nothing():
    down = (
        "event=store_down store=http://***:***@127.0.0.1:9/db reason='connection refused' during=query "
        "action=wait_and_retry next_try_s={}"
    )
    assert store_wait_text(down.format("0.25")) == "waiting for the store (connection refused); Ctrl-C stops waiting"
    assert store_wait_text(down.format("0.00")) is None  # the command's error line says it
    assert (
        store_wait_text("event=store_still_down store=x reason='timed out' down_s=61 retries=40 action=wait_and_retry")
        == "still waiting for the store after 61s (timed out)"
    )
    assert store_wait_text("event=store_back store=x down_s=23.4 retries=9") == "the store is back after 23s"
    assert store_wait_text("event=something_else") is None
