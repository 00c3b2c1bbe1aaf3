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


def test_a_build_adds_only_the_new_rows_when_nothing_it_read_changed():
    from monitor.derived import Built, Guard, full_reason

    guard = Guard(rows=10, max_version=7, version_sum=50)
    built = Built(through_block=99, uuid="u", table_rows=4, definition="d", guard=guard)
    table = ("u", 4)
    assert full_reason(built, table, "d", 150, guard, True) == ""
    assert full_reason(built, table, "d", 99, None, True) == ""  # the guard not read yet
    assert full_reason(built, table, "d", 150, guard, False) == "asked"
    assert full_reason(None, table, "d", 150, guard, True) == "first build"
    assert full_reason(built, None, "d", 150, guard, True) == "table missing"
    assert full_reason(built, ("v", 4), "d", 150, guard, True) == "table replaced or changed since its build"
    assert full_reason(built, ("u", 5), "d", 150, guard, True) == "table replaced or changed since its build"
    assert full_reason(built, table, "e", 150, guard, True) == "definition changed"
    assert full_reason(built, table, "d", 98, guard, True) == "built through block 99, beyond through_block 98"
    for changed in (Guard(9, 7, 50), Guard(10, 8, 50), Guard(10, 7, 49)):
        assert full_reason(built, table, "d", 150, changed, True) == "rows at or below block 99 changed"


def test_a_record_that_cannot_be_read_means_a_full_build():
    from monitor.derived import Built, Guard

    built = Built(99, "u", 4, "d", Guard(10, 7, 2**70))
    assert Built.parse(built.to_json()) == built
    assert Built.parse(None) is None
    assert Built.parse("") is None
    assert Built.parse("{not json") is None
    assert Built.parse('{"through_block": 5}') is None


def test_only_statements_naming_the_range_get_parameters():
    from monitor.derived import range_parameters

    def newest() -> int:
        return 77

    assert range_parameters("SELECT 10 % 3, 'a%'", 5, 9, newest) is None
    assert range_parameters("SELECT {other:String}", 5, 9, newest) is None
    assert range_parameters("SELECT {from_block:UInt64}", 5, 9, newest) == {"from_block": 5}
    assert range_parameters("SELECT {from_block:UInt64}, {to_block: UInt64}", 5, 9, newest) == {
        "from_block": 5,
        "to_block": 9,
    }
    assert range_parameters("SELECT {to_block:UInt64}", 0, None, newest) == {"to_block": 77}
