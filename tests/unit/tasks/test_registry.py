import pytest

from helixagent.config import ConfigError
from tasks.exceptions import UnknownTaskType
from tasks.registry import get_task_type, import_modules, registered_types, task_type


def test_shipped_types_are_registered() -> None:
    names = {t.name for t in registered_types()}
    assert {"noop", "echo", "sleep", "fail", "notify"} <= names


def test_unknown_type_error_names_the_field_and_the_known_types() -> None:
    with pytest.raises(UnknownTaskType) as error:
        get_task_type("no-such-type")
    assert "no-such-type" in error.value.message
    assert "echo" in error.value.details["task_type"]


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        task_type("echo")(lambda ctx, payload: None)


def test_modules_named_in_the_configuration_register_their_types() -> None:
    import_modules(["tests.task_types"])
    assert get_task_type("tests.stubborn").description.startswith("Sleep")


def test_a_module_that_cannot_be_imported_is_named() -> None:
    with pytest.raises(ConfigError, match=r"tasks\.modules: cannot import 'billing\.no_such_module'"):
        import_modules(["billing.no_such_module"])
