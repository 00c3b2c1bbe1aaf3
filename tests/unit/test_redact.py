"""Redaction by structure: secret parts of URLs are hidden, the rest of the text is left as it was."""

import pytest

from backfill.redact import endpoint_label, redact_text, redact_url, scrub

CLICKHOUSE = "http://default:a@ch.internal:8123/backfill"


@pytest.mark.parametrize(
    "url,shown",
    [
        ("http://user:p@host:8123/db", "http://***:***@host:8123/db"),
        ("http://user:@host:8123/db", "http://***:***@host:8123/db"),
        ("http://user@host:8123/db", "http://user@host:8123/db"),  # a user alone names, it does not authenticate
        ("https://0123456789abcdef0123@eth.example/", "https://***@eth.example/"),  # a key passed as the user
        ("https://eth.example/v2/KEY123", "https://eth.example/v2/***"),
        ("https://mainnet.infura.io/v3/abc", "https://mainnet.infura.io/v3/***"),
        ("https://api.example/rpc/k1/eth", "https://api.example/rpc/***/***"),
        ("https://eth.example/v2/", "https://eth.example/v2/"),
        ("https://node.example/0123456789abcdef0123456789abcdef", "https://node.example/***"),
        ("https://rpc.ankr.com/eth/shortkey", "https://rpc.ankr.com/***/***"),
        ("https://name.quiknode.pro/tok/", "https://name.quiknode.pro/***/"),
        (
            "https://eth-mainnet.g.alchemy.com/v2/AbCdEf0123456789XyZ_secret?apikey=s3cr3t&network=main",
            "https://eth-mainnet.g.alchemy.com/v2/***?apikey=***&network=main",
        ),
        ("https://lb.drpc.org/ogrpc?network=ethereum&dkey=abc", "https://lb.drpc.org/***?network=ethereum&dkey=***"),
        (
            "http://h:1/?token=t&access_token=a&auth=x&password=p&secret=s&api_key=k&Api-Key=K&key=y&page=2",
            "http://h:1/?token=***&access_token=***&auth=***&password=***&secret=***&api_key=***&Api-Key=***&key=***&page=2",
        ),
        ("http://h:1/?0123456789abcdef0123", "http://h:1/?***"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://[::1]:8545/", "http://[::1]:8545/"),
        ("http://user:pw@host:port/db", "http://***:***@host:port/db"),  # malformed port: shown as written
    ],
)
def test_secret_parts_of_a_url_are_hidden_host_and_port_stay(url, shown):
    assert redact_url(url) == shown


def test_an_unparseable_url_shows_nothing_of_itself():
    assert redact_url("http://pw@[bad/v2/KEY") == "<unparseable url>"
    assert endpoint_label("http://pw@[bad", 3) == "endpoint#3"
    assert endpoint_label("https://u:p@eth.example/v2/KEY", 2) == "eth.example#2"


def test_a_one_letter_password_and_a_user_name_leave_the_text_outside_urls_intact():
    text = "a default day: cannot reach http://default:a@ch.internal:8123/backfill (a password was refused)"
    assert scrub(text, [CLICKHOUSE]) == (
        "a default day: cannot reach http://***:***@ch.internal:8123/backfill (a password was refused)"
    )


def test_a_known_password_is_hidden_as_a_whole_token_only():
    ch = "http://ingest:hunter22@ch:8123/db"
    text = "user:hunter22@ch refused; hunter222 and xhunter22 are other words; 'hunter22' is not"
    assert scrub(text, [ch]) == "user:***@ch refused; hunter222 and xhunter22 are other words; '***' is not"


def test_short_known_secrets_are_hidden_inside_urls_only():
    rpc = "https://eth.example/v2/K1"
    text = "K1 failed at https://eth.example/v2/K1 and at http://other.example/K1/x?page=K1"
    assert scrub(text, [rpc]) == "K1 failed at https://eth.example/v2/*** and at http://other.example/***/x?page=***"


def test_keys_in_path_and_query_of_configured_urls_are_hidden_wherever_they_stand_whole():
    rpc = "https://eth.example/v2/KEY123?apikey=s3cr3t"
    text = "endpoint https://eth.example/v2/KEY123?apikey=s3cr3t said 401 for key KEY123 (apikey s3cr3t)."
    assert scrub(text, [rpc]) == "endpoint https://eth.example/v2/***?apikey=*** said 401 for key *** (apikey ***)."


def test_unknown_urls_in_text_are_redacted_by_structure():
    text = "POST https://x.example/v3/abc?network=main&key=zz, then http://u:p@db:9000/prod."
    assert scrub(text, []) == "POST https://x.example/v3/***?network=main&key=***, then http://***:***@db:9000/prod."


def test_a_configured_url_with_characters_that_end_urls_in_text_is_hidden_whole():
    ch = "http://u:pa(ss)w0rd@h:8123/db"
    assert scrub(f"cannot use {ch}: refused", [ch]) == "cannot use http://***:***@h:8123/db: refused"


def test_percent_encoded_secrets_are_known_in_both_forms():
    ch = "http://u:p%40ssword@h:8123/db"
    assert scrub("login p@ssword refused, sent p%40ssword", [ch]) == "login *** refused, sent ***"


def test_a_bare_secret_is_hidden_as_a_whole_token():
    assert (
        scrub("token abcd1234 refused; abcd12345 is another", ["abcd1234"]) == "token *** refused; abcd12345 is another"
    )


def test_text_without_secrets_or_urls_is_unchanged():
    text = "day 3 (2024-01-04) FAILED: a b c — default: 12 confirmations; ***"
    assert scrub(text, [CLICKHOUSE, "", "https://eth.example/v2/K"]) == text
    assert redact_text(text, [CLICKHOUSE]) == text


def test_redact_text_shows_urls_by_scheme_and_host_only():
    text = "error='https://eth.example/v2/KEY123 said 500' at http://u:a@ch:8123/db; a said so"
    assert redact_text(text) == "error='https://eth.example/*** said 500' at http://***:***@ch:8123/***; a said so"
    assert redact_text("down: http://127.0.0.1:8545/") == "down: http://127.0.0.1:8545"
