from tasks.api.errors import _first_message, error_body


def test_first_validation_message_names_the_nested_field() -> None:
    assert (
        _first_message({"config": {"max_retries": ["must be at most 100"]}})
        == "config.max_retries: must be at most 100"
    )
    assert _first_message({"payload": ["must be a JSON object"]}) == "payload: must be a JSON object"


def test_error_body_shape() -> None:
    assert error_body("x", "y") == {"error": {"code": "x", "message": "y", "details": {}}}
