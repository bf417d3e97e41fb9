"""docker-compose.messaging.yml describes the same services as scripts/services.sh.

(`docker compose config` needs the Compose plugin; this reads the file with PyYAML instead.)
"""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.messaging.yml"


def test_compose_file_defines_the_messaging_profile_and_container_names() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert services["rabbitmq"]["container_name"] == "helixagent-rabbitmq"
    assert services["kafka"]["container_name"] == "helixagent-kafka"
    assert services["rabbitmq"]["profiles"] == services["kafka"]["profiles"] == ["messaging"]


def test_compose_ports_match_the_native_services() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    ports = {name: [p.split(":")[-1] for p in svc["ports"]] for name, svc in services.items()}
    assert "5432" in ports["postgres"] and "5672" in ports["rabbitmq"] and "9092" in ports["kafka"]


def test_compose_rabbitmq_creates_classic_queues_in_storage_version_2() -> None:
    """The same storage version scripts/services.sh sets with a policy."""
    rabbitmq = yaml.safe_load(COMPOSE.read_text())["services"]["rabbitmq"]
    source, target = rabbitmq["volumes"][0].split(":")[:2]
    assert target.startswith("/etc/rabbitmq/conf.d/")
    settings = (COMPOSE.parent / source).read_text().splitlines()
    assert "classic_queue.default_version = 2" in settings
