from pathlib import Path

import pytest

from helixagent.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "messaging.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_without_a_file(tmp_path: Path) -> None:
    config = load_config(tmp_path / "missing.yaml", environ={})
    assert config.migration.mode == "legacy"
    assert config.database_url == ""
    assert config.queue.visibility_timeout == 30.0


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "migration:\n  mode: dual_write\n  consumer_rabbitmq_percent: 10\n")
    assert load_config(path, environ={}).migration.consumer_rabbitmq_percent == 10
    config = load_config(path, environ={"MIGRATION_MODE": "legacy", "CONSUMER_RABBITMQ_PERCENT": "40"})
    assert (config.migration.mode, config.migration.consumer_rabbitmq_percent) == ("legacy", 40)


def test_bad_mode_names_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"migration\.mode.*legacy.*dual_write.*messaging"):
        load_config(write(tmp_path, "migration:\n  mode: sideways\n"), environ={})


def test_non_numeric_value_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue\.visibility_timeout"):
        load_config(tmp_path / "missing.yaml", environ={"HELIX_VISIBILITY_TIMEOUT": "soon"})


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"queue\.visibilty_timeout: unknown key"):
        load_config(write(tmp_path, "queue:\n  visibilty_timeout: 3\n"), environ={})


def test_percent_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="consumer_rabbitmq_percent"):
        load_config(tmp_path / "missing.yaml", environ={"CONSUMER_RABBITMQ_PERCENT": "101"})


def test_api_database_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "api:\n  database_pool: 4\n  database_timeout: 3\n")
    config = load_config(path, environ={"HELIX_API_DATABASE_TIMEOUT": "1.5"})
    assert (config.api.database_pool, config.api.database_timeout) == (4, 1.5)
    with pytest.raises(ConfigError, match=r"api\.database_timeout: must be positive"):
        load_config(path, environ={"HELIX_API_DATABASE_TIMEOUT": "0"})


def test_a_default_timeout_below_zero_is_refused_and_zero_means_none(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.yaml", environ={"HELIX_DEFAULT_TIMEOUT": "0"}).tasks.default_timeout == 0
    with pytest.raises(ConfigError, match=r"tasks\.default_timeout: must be 0 \(no limit\) or more"):
        load_config(tmp_path / "missing.yaml", environ={"HELIX_DEFAULT_TIMEOUT": "-1"})


@pytest.mark.parametrize(("word", "expected"), [("true", True), ("On", True), ("1", True), ("no", False), ("0", False)])
def test_a_switch_reads_the_usual_words(tmp_path: Path, word: str, expected: bool) -> None:
    assert load_config(tmp_path / "missing.yaml", environ={"AUTO_ROLLBACK": word}).migration.auto_rollback is expected
    assert load_config(
        write(tmp_path, f"migration:\n  auto_rollback: {word}\n"), environ={}
    ).migration.auto_rollback is (expected)


def test_a_misspelt_switch_is_refused_rather_than_read_as_off(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"migration\.auto_rollback: expected true or false .* got 'ture'"):
        load_config(tmp_path / "missing.yaml", environ={"AUTO_ROLLBACK": "ture"})


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"queue\.visibility_timeout: expected a finite number"):
        load_config(tmp_path / "missing.yaml", environ={"HELIX_VISIBILITY_TIMEOUT": value})


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"HELIX_POLL_INTERVAL": "0"}, "queue.poll_interval"),
        ({"HELIX_HEARTBEAT_INTERVAL": "-1"}, "tasks.heartbeat_interval"),
        ({"HELIX_DISPATCH_INTERVAL": "0"}, "tasks.dispatch_interval"),
        ({"HELIX_STUCK_THRESHOLD": "5", "HELIX_HEARTBEAT_INTERVAL": "5"}, "tasks.stuck_threshold"),
        ({"HELIX_RETRY_BACKOFF_BASE": "0.5"}, "tasks.retry_backoff_base"),
        ({"RABBITMQ_HEARTBEAT": "-1"}, "messaging.rabbitmq_heartbeat"),
        ({"HELIX_LOST_COPY_INTERVAL": "0"}, "messaging.lost_copy_interval"),
    ],
)
def test_intervals_and_limits_out_of_range_are_refused_by_name(
    tmp_path: Path, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(tmp_path / "missing.yaml", environ=environ)


def test_task_modules_come_as_a_list_from_the_file_and_separated_by_commas_from_the_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "tasks:\n  modules: [billing.tasks, reports]\n")
    assert load_config(path, environ={}).tasks.modules == ("billing.tasks", "reports")
    assert load_config(path, environ={"HELIX_TASK_MODULES": " billing.tasks , "}).tasks.modules == ("billing.tasks",)
    assert load_config(tmp_path / "missing.yaml", environ={}).tasks.modules == ()
    with pytest.raises(ConfigError, match=r"tasks\.modules: 'billing/tasks\.py' is not a dotted module name"):
        load_config(path, environ={"HELIX_TASK_MODULES": "billing/tasks.py"})
    with pytest.raises(ConfigError, match=r"tasks\.modules: expected a list of module names"):
        load_config(write(tmp_path, "tasks:\n  modules: {billing: tasks}\n"), environ={})


def test_a_pool_stall_timeout_must_be_positive(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.yaml", environ={}).tasks.pool_stall_timeout == 60.0
    with pytest.raises(ConfigError, match=r"tasks\.pool_stall_timeout: must be positive"):
        load_config(tmp_path / "missing.yaml", environ={"HELIX_POOL_STALL_TIMEOUT": "0"})
