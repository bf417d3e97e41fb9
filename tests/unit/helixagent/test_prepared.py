from helixagent.prepared import numbered


def test_placeholders_are_numbered_in_order() -> None:
    assert numbered("INSERT INTO t (a, b) VALUES (%s, %s)") == "INSERT INTO t (a, b) VALUES ($1, $2)"


def test_a_doubled_percent_sign_is_a_literal_one_and_takes_no_number() -> None:
    assert numbered("SELECT %s WHERE name LIKE 'a%%' AND id = %s") == "SELECT $1 WHERE name LIKE 'a%' AND id = $2"
