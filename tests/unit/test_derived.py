"""The operator's SQL files are split into statements the way a reader of the file would split them."""

from monitor.derived import split_statements


def test_statements_split_on_semicolons_outside_quotes_and_comments():
    text = """
    -- build the top list; comments may hold semicolons
    DROP TABLE IF EXISTS top;
    /* a block comment; still a comment */
    CREATE TABLE top ENGINE = Memory AS SELECT 'a;b' AS s, "x;y" AS `c;d`;
    SELECT 'it''s; fine', 'back\\\\slash;' ;
    """
    assert split_statements(text) == [
        "DROP TABLE IF EXISTS top",
        "CREATE TABLE top ENGINE = Memory AS SELECT 'a;b' AS s, \"x;y\" AS `c;d`",
        "SELECT 'it''s; fine', 'back\\\\slash;'",
    ]


def test_a_last_statement_without_semicolon_and_empty_files():
    assert split_statements("SELECT 1;\nSELECT 2") == ["SELECT 1", "SELECT 2"]
    assert split_statements("") == []
    assert split_statements(" ;\n-- only a comment\n;") == []
