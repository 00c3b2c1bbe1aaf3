"""Read-only commands ask what a data directory holds before touching it, and create nothing."""

import os
import re

import pytest

from backfill.cli.data_dir import NoBackfillData, check_usable, require_logs, require_store
from backfill.settings import load_settings


def settings(tmp_path, data_dir, **env):
    return load_settings({"data_dir": data_dir}, env=env, toml_path=tmp_path / "none.toml")


def test_a_missing_or_empty_data_directory_holds_no_store_and_stays_as_it_was(tmp_path):
    for path in (tmp_path / "data", tmp_path / "empty"):
        if path.name == "empty":
            path.mkdir()
        with pytest.raises(
            NoBackfillData,
            match=rf"^no backfill data in {re.escape(str(path))} \(no store there yet\); "
            "start one with: backfill start$",
        ):
            require_store(settings(tmp_path, path))
        with pytest.raises(NoBackfillData, match=r"\(no logs there yet\)"):
            require_logs(settings(tmp_path, path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_a_configured_server_needs_no_store_in_the_data_directory(tmp_path):
    s = settings(tmp_path, tmp_path / "data", CLICKHOUSE_URL="http://default:@127.0.0.1:8123/backfill")
    require_store(s)
    with pytest.raises(NoBackfillData, match="no store there yet"):  # db stop is about the embedded store
        require_store(s, embedded=True)
    assert not (tmp_path / "data").exists()


def test_a_data_directory_with_a_store_or_logs_is_accepted(tmp_path):
    (tmp_path / "data" / "clickhouse").mkdir(parents=True)
    require_store(settings(tmp_path, tmp_path / "data"))
    (tmp_path / "data" / "backfill").mkdir()
    require_logs(settings(tmp_path, tmp_path / "data"))


def test_a_file_is_not_a_data_directory(tmp_path):
    (tmp_path / "data").write_text("x")
    with pytest.raises(
        NoBackfillData, match=rf"^{re.escape(str(tmp_path / 'data'))} is not a directory; give --data-dir"
    ):
        check_usable(tmp_path / "data")
    with pytest.raises(NoBackfillData, match="is not a directory"):
        require_store(settings(tmp_path, tmp_path / "data", CLICKHOUSE_URL="http://default:@127.0.0.1:8123/db"))


def test_a_directory_that_cannot_be_read_is_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(
        NoBackfillData,
        match=rf"^cannot read the data directory {re.escape(str(tmp_path / 'data'))}: "
        "permission denied; give --data-dir",
    ):
        require_store(settings(tmp_path, tmp_path / "data"))
