"""Static checks of the Docker deployment: compose, Dockerfile, Prometheus config and rules, Grafana.

No Docker engine is needed: the files are parsed and cross-checked (ports, paths, metric names,
datasource uids), and promtool validates the Prometheus files when it is installed (required in CI).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic_settings import BaseSettings

from schemas.config import load_config
from services.analyzer.metrics import build_metrics as build_analyzer_metrics
from services.analyzer.settings import AnalyzerSettings
from services.api.metrics import ApiMetrics
from services.api.settings import ApiSettings
from services.ingest.metrics import build_metrics as build_ingest_metrics
from services.ingest.settings import IngestSettings
from services.ingest.simulate import SimulateOptions, simulation_from_options
from services.store.metrics import StoreMetrics
from services.store.settings import StoreSettings
from tests.helpers import tool_missing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "ecoute.json"

# The metric names the services publish (the common contract); dashboards and rules may use no other.
# name -> kind; a histogram is used through its _bucket/_sum/_count series.
ECOUTE_METRICS = {
    # ingest
    "ecoute_ingest_mentions_received_total": "counter",
    "ecoute_ingest_mentions_refused_total": "counter",
    "ecoute_ingest_mentions_produced_total": "counter",
    "ecoute_ingest_produce_errors_total": "counter",
    "ecoute_ingest_produce_retries_total": "counter",
    "ecoute_ingest_unavailable_total": "counter",
    "ecoute_ingest_request_seconds": "histogram",
    # ingest connectors (polled sources), labelled source_id and type
    "ecoute_ingest_source_fetched_total": "counter",
    "ecoute_ingest_source_produced_total": "counter",
    "ecoute_ingest_source_refused_total": "counter",
    "ecoute_ingest_source_errors_total": "counter",
    "ecoute_ingest_source_last_success_timestamp_seconds": "gauge",
    "ecoute_ingest_source_consecutive_failures": "gauge",
    # analyzer
    "ecoute_analyzer_mentions_processed_total": "counter",
    "ecoute_analyzer_duplicates_total": "counter",
    "ecoute_analyzer_dlq_total": "counter",
    "ecoute_analyzer_scoring_seconds": "histogram",
    "ecoute_analyzer_consumer_lag": "gauge",
    "ecoute_analyzer_brand_mentions_total": "counter",
    "ecoute_analyzer_partials_total": "counter",
    "ecoute_alerts_fired_total": "counter",
    # api
    "ecoute_api_request_seconds": "histogram",
    "ecoute_api_view_records_total": "counter",
    "ecoute_api_sse_clients": "gauge",
    "ecoute_api_view_bad_records_total": "counter",
    "ecoute_api_sse_dropped_total": "counter",
    "ecoute_api_unauthorized_total": "counter",
    "ecoute_api_rate_limited_total": "counter",
    "ecoute_api_actions_total": "counter",
    "ecoute_api_webhook_deliveries_total": "counter",
    "ecoute_api_webhook_pending": "gauge",
    "ecoute_api_views_ready": "gauge",
    "ecoute_api_view_lag": "gauge",
    # store
    "ecoute_store_records_total": "counter",
    "ecoute_store_rows_written_total": "counter",
    "ecoute_store_bad_records_total": "counter",
    "ecoute_store_batch_seconds": "histogram",
    "ecoute_store_lag": "gauge",
    "ecoute_store_database_up": "gauge",
    "ecoute_store_active": "gauge",
    "ecoute_store_partitions_dropped_total": "counter",
    "ecoute_store_digests_total": "counter",
}
# Series Prometheus makes itself: scrape health and the state of alerting rules.
PROMETHEUS_SERIES = {"up", "ALERTS"}
KNOWN_SERIES = PROMETHEUS_SERIES | {
    series
    for name, kind in ECOUTE_METRICS.items()
    for series in ([f"{name}_bucket", f"{name}_sum", f"{name}_count"] if kind == "histogram" else [name])
}

# Écoute service -> (port variable, port): the defaults of the contract, which compose, the
# published ports and the Prometheus scrape targets must all agree with.
SERVICE_PORTS = {
    "ingest": ("ECOUTE_INGEST_PORT", 8001),
    "analyzer": ("ECOUTE_ANALYZER_METRICS_PORT", 8002),
    "api": ("ECOUTE_API_PORT", 8000),
    "store": ("ECOUTE_STORE_METRICS_PORT", 8003),
}
HOST_VARIABLES = {
    "ingest": "ECOUTE_INGEST_HOST",
    "analyzer": "ECOUTE_ANALYZER_METRICS_HOST",
    "api": "ECOUTE_API_HOST",
    "store": "ECOUTE_STORE_METRICS_HOST",
}
SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "analyzer": AnalyzerSettings,
    "api": ApiSettings,
    "store": StoreSettings,
}
CLI_SUBCOMMANDS = {"ingest", "analyzer", "api", "store", "run"}

# PromQL words that are neither metric names nor functions (functions are recognised by their "(").
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip
# Grafana's variables, replaced by something PromQL accepts before promtool parses a panel's query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h", "$brand": ".*"}


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: what is left once strings, label matchers, ranges,
    grouping clauses, Grafana variables, functions, keywords and numbers are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        name, is_call = match.group(1), match.group(2)
        if not is_call and name not in PROMQL_KEYWORDS:
            names.add(name)
    return names


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path}: the top level must be a mapping"
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_DIR / "prometheus.yml")


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "rules.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    sources: list[dict[str, Any]] = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ]
    assert len(sources) == 1, "one provisioned datasource, the compose Prometheus"
    return sources[0]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # ["NAME=value", ...]
        env = dict(item.split("=", 1) for item in env)
    return {name: str(value) for name, value in env.items()}


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port, from short ("127.0.0.1:8001:8001") or long syntax."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
        else:
            *_, host, container = str(entry).split(":")
            ports[int(container.split("/")[0])] = int(host)
    return ports


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every bind mount; named volumes are left out."""
    mounts = []
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            if entry.get("type") == "bind":
                mounts.append((entry["source"], entry["target"]))
            continue
        source, target, *_ = entry.split(":")
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def scrape_targets(prometheus_config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """job -> (target, metrics_path)"""
    targets = {}
    for job in prometheus_config["scrape_configs"]:
        (static,) = job["static_configs"]
        (target,) = static["targets"]
        targets[job["job_name"]] = (target, job.get("metrics_path", "/metrics"))
    return targets


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # panels folded into a collapsed row
    return [panel for panel in panels if panel.get("type") != "row"]


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard_panels(dashboard) for target in panel["targets"]]


# --- compose -------------------------------------------------------------------------------------


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    assert {"kafka", "postgres", "ingest", "analyzer", "api", "store", "prometheus", "grafana"} <= set(
        compose["services"]
    )


def test_every_ecoute_service_reaches_the_compose_postgres(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    env = environment(postgres)
    url = f"postgresql://{env['POSTGRES_USER']}:${{POSTGRES_PASSWORD:-ecoute}}@postgres:5432/{env['POSTGRES_DB']}"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    for name in SERVICE_PORTS:
        service = compose["services"][name]
        assert environment(service)["ECOUTE_DATABASE_URL"] == url, name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_ecoute_service_runs_its_subcommand_of_the_image_against_compose_kafka(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    assert service["build"] == ".", "every Écoute service is built from the repository's Dockerfile"
    command = service["command"]
    command = shlex.split(command) if isinstance(command, str) else command
    assert command[0] == name
    assert command[0] in CLI_SUBCOMMANDS
    env = environment(service)
    assert env["ECOUTE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    # The config file the service is told to read is the one mounted from the repository.
    mounts = {target: source for source, target in bind_mounts(service)}
    assert mounts.get(env["ECOUTE_CONFIG"]) == "./deploy/ecoute.docker.yaml"
    if name in HOST_VARIABLES:
        assert env[HOST_VARIABLES[name]] == "0.0.0.0", "bound to 127.0.0.1, it is unreachable outside its container"


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_ports_agree_across_env_compose_and_prometheus(
    compose: dict[str, Any], prometheus_config: dict[str, Any], name: str
) -> None:
    variable, port = SERVICE_PORTS[name]
    field = SETTINGS[name].model_fields[variable.removeprefix("ECOUTE_").lower()]
    assert field.default == port, f"the service's default for {variable} is not {port}"
    service = compose["services"][name]
    assert environment(service).get(variable, str(port)) == str(port), f"{variable} differs from the default {port}"
    assert port in published_ports(service), f"{name} does not publish its port {port}"
    target, metrics_path = scrape_targets(prometheus_config)[name]
    assert target == f"{name}:{port}", "Prometheus scrapes the compose service by name on its port"
    assert metrics_path == "/metrics"
    assert f":{port}/" in " ".join(service["healthcheck"]["test"]), "the healthcheck probes the service's port"


@pytest.mark.parametrize("name", sorted(SERVICE_PORTS))
def test_compose_sets_only_variables_the_service_reads(compose: dict[str, Any], name: str) -> None:
    """A misspelt ECOUTE_* variable is silently ignored by pydantic-settings; catch it here."""
    settings = SETTINGS[name]
    prefix = str(settings.model_config.get("env_prefix", "")).upper()
    for variable in environment(compose["services"][name]):
        assert variable.startswith(prefix), f"{name}: {variable} is not an Écoute setting"
        field = variable.removeprefix(prefix).lower()
        assert field in settings.model_fields, f"{name}: {settings.__name__} has no field for {variable}"


def test_prometheus_scrapes_exactly_the_ecoute_services(prometheus_config: dict[str, Any]) -> None:
    assert set(scrape_targets(prometheus_config)) == set(SERVICE_PORTS)
    assert prometheus_config["rule_files"] == ["rules.yml"]


def test_kafka_is_a_single_kraft_node_reachable_as_kafka_9092(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    controller_port = next(
        listener.rsplit(":", 1)[1]
        for listener in env["KAFKA_LISTENERS"].split(",")
        if listener.startswith(env["KAFKA_CONTROLLER_LISTENER_NAMES"] + "://")
    )
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:{controller_port}"
    # What the services are given as bootstrap must be what the broker advertises.
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert "healthcheck" in kafka


def test_every_mounted_host_path_exists(compose: dict[str, Any]) -> None:
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
        for entry in service.get("volumes", []):
            source = entry["source"] if isinstance(entry, dict) else entry.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared_volumes, f"{name} uses volume {source!r}, not declared under volumes:"


def test_grafana_provisioning_points_at_the_mounted_dashboards_and_prometheus(
    compose: dict[str, Any], datasource: dict[str, Any]
) -> None:
    grafana_mounts = dict(bind_mounts(compose["services"]["grafana"]))
    assert grafana_mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "ecoute.yml")["providers"]
    assert grafana_mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    env = environment(compose["services"]["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert 9090 in published_ports(compose["services"]["prometheus"])
    prometheus_mounts = dict(bind_mounts(compose["services"]["prometheus"]))
    assert prometheus_mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prometheus_mounts["./deploy/prometheus/rules.yml"] == "/etc/prometheus/rules.yml"


def test_docker_listening_config_is_valid_and_simulates_the_demo_brands() -> None:
    config = load_config(ROOT / "deploy" / "ecoute.docker.yaml")
    assert "globex" in config.brands["acme"].competitors
    assert "globex" in config.brands, "the competitor is listened for too"
    assert config.topics
    assert [source.type for source in config.sources] == ["simulate"]
    # Ingest validates the source's options the same way, and skips a source whose options are wrong.
    options = SimulateOptions.from_source(config.sources[0].model_extra or {})
    first = next(iter(simulation_from_options(config, options)))
    assert first.mention.source == "simulate"


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_builds_one_non_root_image_with_the_ecoute_entrypoint() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (entrypoint,) = [rest for keyword, rest in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["ecoute"]
    users = [rest for keyword, rest in instructions if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "pip install -c requirements.lock ." in runs, "install the package with the pinned versions as constraints"
    # Faust creates only the last level of the analyzer's data directory (relative to the working
    # directory by default): without its parent the analyzer dies at start in a fresh container.
    data_dir = AnalyzerSettings.model_fields["analyzer_data_dir"].default
    if not data_dir.is_absolute():
        workdir = [rest for keyword, rest in instructions if keyword == "WORKDIR"][-1]
        assert f"{workdir}/{data_dir.parent}" in runs, f"the image must create {workdir}/{data_dir.parent}"


def test_dockerfile_copies_only_files_that_exist_and_reach_the_build_context() -> None:
    ignored = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(pattern.startswith("!") for pattern in ignored), "this check does not handle ! exceptions"
    copies = [rest.split() for keyword, rest in dockerfile_instructions() if keyword == "COPY"]
    assert copies
    for *sources, _destination in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            for pattern in ignored:
                assert not fnmatch.fnmatch(source, pattern), f"COPY {source}: excluded by .dockerignore ({pattern})"
    # The package cannot be built without its sources and the readme pyproject.toml names.
    copied = {source for *sources, _ in copies for source in sources}
    assert {"pyproject.toml", "requirements.lock", "README.md", "ecoute", "schemas", "services"} <= copied


def test_compose_commands_are_subcommands_of_the_cli(compose: dict[str, Any]) -> None:
    if not (ROOT / "ecoute" / "cli.py").exists():
        pytest.skip("ecoute/cli.py is not written yet; compose commands checked against the documented list only")
    result = subprocess.run(
        [sys.executable, "-m", "ecoute.cli", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in SERVICE_PORTS:
        assert re.search(rf"\b{name}\b", result.stdout), f"`ecoute --help` does not list {name}"


# --- metric names, dashboard ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (brand) (rate(ecoute_analyzer_brand_mentions_total{brand=~"$brand"}[$__rate_interval]))',
         {"ecoute_analyzer_brand_mentions_total"}),
        ("histogram_quantile(0.99, sum by (le) (rate(ecoute_api_request_seconds_bucket[5m])))",
         {"ecoute_api_request_seconds_bucket"}),
        ("sum(rate(a_total[5m])) / sum(rate(b_total[5m] offset 1h)) > 0.1", {"a_total", "b_total"}),
        ("x unless x offset 10m", {"x"}),
        ('up{job=~"ingest|api"} == 0', {"up"}),
        ("sum(rate(ecoute_ingest_recieved_total[1m])) by (source)", {"ecoute_ingest_recieved_total"}),
    ],
)  # fmt: skip
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def published_metrics() -> dict[str, str]:
    """What the services' metrics modules register: exposed name -> kind."""
    registry = CollectorRegistry()
    build_ingest_metrics(registry)
    build_analyzer_metrics(registry)
    ApiMetrics(registry)
    StoreMetrics.build(registry)
    # prometheus_client strips a counter's `_total` from its family name and adds it back when exposing.
    return {f"{m.name}_total" if m.type == "counter" else m.name: m.type for m in registry.collect()}


def test_the_metric_list_is_what_the_services_publish() -> None:
    """The list dashboards and rules are checked against must itself name real metrics of the right kind."""
    published = published_metrics()
    for name, kind in ECOUTE_METRICS.items():
        assert name in published, f"{name} is in ECOUTE_METRICS but no service's metrics.py registers it"
        assert published[name] == kind, f"{name} is a {published[name]}, not a {kind}"


def test_dashboard_and_rules_use_only_published_metric_names(
    dashboard: dict[str, Any], rules: list[dict[str, Any]]
) -> None:
    exprs = dashboard_exprs(dashboard) + [rule["expr"] for rule in rules]
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        assert names <= KNOWN_SERIES, f"unknown metric {sorted(names - KNOWN_SERIES)} in {expr!r}"


def test_dashboard_uses_only_the_provisioned_datasource(dashboard: dict[str, Any], datasource: dict[str, Any]) -> None:
    assert dashboard["uid"] == "ecoute-overview"
    refs = [panel["datasource"] for panel in dashboard_panels(dashboard)]
    refs += [target["datasource"] for panel in dashboard_panels(dashboard) for target in panel["targets"]]
    refs += [variable["datasource"] for variable in dashboard["templating"]["list"] if "datasource" in variable]
    assert refs
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": datasource["uid"]}


def test_dashboard_shows_what_operators_need(dashboard: dict[str, Any]) -> None:
    panels = dashboard_panels(dashboard)
    assert all(panel["targets"] for panel in panels)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    exprs = "\n".join(dashboard_exprs(dashboard))
    for wanted in [
        r"sum by \(brand\) \(rate\(ecoute_analyzer_brand_mentions_total",
        r"sum by \(brand, sentiment\) \(rate\(ecoute_analyzer_brand_mentions_total",
        r"ecoute_ingest_mentions_received_total",
        r"ecoute_ingest_mentions_refused_total",
        r"ecoute_analyzer_consumer_lag",
        r"ecoute_analyzer_dlq_total",
        r"histogram_quantile\(0\.5, .*ecoute_api_request_seconds_bucket",
        r"histogram_quantile\(0\.99, .*ecoute_api_request_seconds_bucket",
        r"ecoute_alerts_fired_total",
        r"ecoute_ingest_source_fetched_total",
        r"ecoute_ingest_source_errors_total",
        r"time\(\) - max by \(source_id, type\) \(ecoute_ingest_source_last_success_timestamp_seconds\)",
        r"ecoute_ingest_source_consecutive_failures",
        r"ecoute_api_request_seconds_count",
        r"ecoute_api_sse_clients",
        r"sum by \(topic\) \(ecoute_api_view_lag\)",
    ]:
        assert re.search(wanted, exprs), f"no dashboard query matches {wanted}"


def test_rules_cover_lag_dead_letters_ingest_and_api_errors(rules: list[dict[str, Any]]) -> None:
    by_metric = {name: rule["alert"] for rule in rules for name in metric_names(rule["expr"])}
    for metric in [
        "ecoute_analyzer_consumer_lag",
        "ecoute_analyzer_dlq_total",
        "ecoute_ingest_unavailable_total",
        "ecoute_ingest_mentions_refused_total",
        "ecoute_api_request_seconds_count",
        "ecoute_ingest_source_consecutive_failures",
        "ecoute_ingest_source_last_success_timestamp_seconds",
        "ecoute_api_view_lag",
    ]:
        assert metric in by_metric, f"no alerting rule on {metric}"
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


# --- promtool ------------------------------------------------------------------------------------


def require_promtool() -> str:
    """promtool's path; under `make test` and in CI its absence fails the test rather than skipping it."""
    path = shutil.which("promtool")
    if path is None:
        tool_missing("promtool is not installed (Debian package `prometheus`)")
    return path


def run_promtool(*args: str) -> None:
    result = subprocess.run([require_promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def test_promtool_accepts_the_prometheus_config() -> None:
    run_promtool("check", "config", "deploy/prometheus/prometheus.yml")


def test_promtool_accepts_the_rules() -> None:
    run_promtool("check", "rules", "deploy/prometheus/rules.yml")


def test_rules_pass_their_unit_tests() -> None:
    run_promtool("test", "rules", "deploy/prometheus/rules_test.yml")


def test_every_rule_has_a_unit_test_that_fires_it(rules: list[dict[str, Any]]) -> None:
    """promtool only tests what rules_test.yml names: each alert needs a case where it is expected to fire."""
    cases = load_yaml(PROMETHEUS_DIR / "rules_test.yml")["tests"]
    fired = {
        check["alertname"] for case in cases for check in case.get("alert_rule_test", []) if check.get("exp_alerts")
    }
    for rule in rules:
        assert rule["alert"] in fired, f"rules_test.yml never expects {rule['alert']} to fire"


def test_dashboard_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables filled in, as a recording rule promtool must parse."""
    require_promtool()
    rules = []
    for index, expr in enumerate(dashboard_exprs(dashboard)):
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable is left in {expr!r}"
        rules.append({"record": f"ecoute:dashboard_query_{index}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    run_promtool("check", "rules", str(path))
