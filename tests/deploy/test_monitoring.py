"""The monitoring files agree with the gateway they watch.

Every metric that deploy/grafana/buildcast.json and deploy/prometheus/alerts.yml
query is one a real gateway's `/metrics` exports; promtool accepts the rules and
passes their unit tests; the ServiceMonitor scrapes the gateways' Service; the
gateways reach the Redis of deploy/k8s/redis.yaml with its password; compose starts
the gateways once Redis answers. A renamed metric would otherwise leave a panel
empty and an alert that can never fire, and nothing would say so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from gateway.backends.redis.connection import connect
from tests.helpers.deploy import DEPLOY, ROOT, compose
from tests.helpers.redis_servers import RedisServer

DASHBOARD = DEPLOY / "grafana" / "buildcast.json"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
OPERATIONS = ROOT / "docs" / "operations.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

ALERTS = {
    "BuildcastStaleData",
    "BuildcastUpstreamErrors",
    "BuildcastNoPoller",
    "BuildcastSlowConsumers",
    "BuildcastBusDown",
}

SERIES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
"""The series names a family of each type exports, by suffix."""

PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}


@pytest.fixture
async def exported(gateway: TestServer, session: aiohttp.ClientSession) -> set[str]:
    """Every series name a real gateway's /metrics exports (a family with no sample yet too)."""
    async with session.get(gateway.make_url("/metrics")) as response:
        assert response.status == 200
        text = await response.text()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.name.endswith("_created"):
            continue  # prometheus-client's creation time of each series: nothing to query
        assert family.documentation, f"{family.name} has no HELP line"
        names.update(family.name + suffix for suffix in SERIES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana's `$variables` allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # label values and regexes
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    # A word that is not part of a number or a $variable, and not a function's name.
    words = re.findall(r"(?<![\w$.])[A-Za-z_:][\w:]*(?![\w:])(?!\s*\()", text)
    return {word for word in words if word.lower() not in PROMQL_WORDS}


def test_metric_names_finds_selectors_only() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(a_bucket{job=~"$job", x="b"}[$__rate_interval])))'
        " / on (job) group_left sum without (pod) (b_total offset 5m) > bool 1e3 and c"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c"}


# --- deploy/grafana/buildcast.json


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(within: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those of (collapsed) rows included."""
    for panel in within.get("panels", []):
        yield panel
        yield from panels(panel)


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query the dashboard runs."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_is_grafana_json_on_a_prometheus_data_source_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${datasource}"}
    for name in ("job", "instance"):
        assert variables[name]["datasource"] == source
    ids, cells = [], set()
    for panel in panels(board):
        ids.append(panel["id"])
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        area = {(box["x"] + x, box["y"] + y) for x in range(box["w"]) for y in range(box["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] != "row":
            assert panel["datasource"] == source, panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"] == source for t in panel["targets"]), panel["title"]
    assert len(ids) == len(set(ids)), "two panels share an id"
    for title, expr in queries():
        # Every query honours the replica picked at the top.
        assert 'instance=~"$instance"' in expr, title


async def test_the_dashboard_queries_only_what_the_gateway_exports(exported: set[str]) -> None:
    for title, expr in queries():
        names = metric_names(expr)
        assert names, f"{title}: no metric in {expr}"
        assert names <= exported, f"{title}: {sorted(names - exported)} are not exported"
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((\w+)\W.*\)", variable["definition"])
            assert found and found.group(1) in exported, variable["definition"]


def test_the_dashboard_queries_are_promql(tmp_path: Path) -> None:
    """promtool parses each query, Grafana's variables given values, as a recording rule."""
    values = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}
    rules = []
    for number, (_, expr) in enumerate(queries()):
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:query_{number}", "expr": expr})
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))


# --- deploy/prometheus/


def promtool(*args: str, cwd: Path | None = None) -> None:
    if not Path(PROMTOOL).exists():
        pytest.fail(
            "promtool not found: `bash scripts/test.sh` installs it (Debian's prometheus)",
            pytrace=False,
        )
    result = subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"


def alert_rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def runbook_sections() -> set[str]:
    """The anchors (as GitHub makes them) of docs/operations.md's Runbook sections."""
    runbook = OPERATIONS.read_text().partition("\n## Runbook\n")[2].partition("\n## ")[0]
    return {anchor(title) for title in re.findall(r"^### (.+)$", runbook, re.MULTILINE)}


def anchor(title: str) -> str:
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


async def test_every_alert_waits_has_a_severity_and_points_to_its_runbook(
    exported: set[str],
) -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == ALERTS
    sections = runbook_sections()
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        notes = rule["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), name
        assert name.lower() in sections, f"docs/operations.md has no Runbook section {name}"
        runbook = f"docs/operations.md#{name.lower()}"
        assert notes["runbook_url"] == runbook and runbook in notes["description"], name
        names = metric_names(rule["expr"])
        assert names and names <= exported, f"{name}: {sorted(names - exported)} not exported"


async def test_the_operations_doc_lists_every_metric(exported: set[str]) -> None:
    doc = OPERATIONS.read_text()
    metrics = doc.partition("\n## Metrics\n")[2].partition("\n## ")[0]
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported}
    missing = sorted(family for family in families if f"`{family}`" not in metrics)
    assert not missing, f"docs/operations.md's Metrics section does not list {missing}"
    headings = {anchor(title) for title in re.findall(r"^#+ (.+)$", doc, re.MULTILINE)}
    links = set(re.findall(r"\]\(#([\w-]+)\)", doc))
    assert links <= headings, f"docs/operations.md links to no section {sorted(links - headings)}"


def test_the_rule_tests_see_each_alert_fire_and_stay_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    cases = [case for test in tests["tests"] for case in test["alert_rule_test"]]
    for name in ALERTS:
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name} is not tested both firing and quiet"


def test_promtool_accepts_the_rules_and_passes_their_tests() -> None:
    promtool("check", "rules", RULES.name, cwd=RULES.parent)
    promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


# --- deploy/k8s/: the ServiceMonitor and Redis


def k8s_objects() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    (found,) = (o for o in k8s_objects() if (o["kind"], o["metadata"]["name"]) == (kind, name))
    return found


def only_container(deployment: dict[str, Any]) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


async def test_the_service_monitor_scrapes_the_gateways_metrics(
    gateway: TestServer, session: aiohttp.ClientSession
) -> None:
    (monitor,) = (o for o in k8s_objects() if o["kind"] == "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [o for o in k8s_objects() if o["kind"] == "Service"]
    chosen = [s["metadata"]["name"] for s in services if selects(selector, s["metadata"]["labels"])]
    assert chosen == ["buildcast"], chosen  # the gateways' Service; not Redis's
    (endpoint,) = monitor["spec"]["endpoints"]
    ports = k8s_object("Service", "buildcast")["spec"]["ports"]
    assert endpoint["port"] in [port["name"] for port in ports]
    assert endpoint["interval"] == "15s"
    async with session.get(gateway.make_url(endpoint["path"])) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert "# HELP buildcast_" in await response.text()


def redis_url() -> tuple[list[dict[str, Any]], str]:
    """The gateways' env and the BUILDCAST_REDIS they get from it."""
    env: list[dict[str, Any]] = only_container(k8s_object("Deployment", "buildcast"))["env"]
    (url,) = (item["value"] for item in env if item["name"] == "BUILDCAST_REDIS")
    return env, url


def k8s_redis(url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Service a Redis URL names (short or full DNS name) and the Deployment behind it."""
    name = (urlsplit(url).hostname or "").split(".")[0]
    return k8s_object("Service", name), k8s_object("Deployment", name)


def secret_of(env: list[dict[str, Any]], name: str) -> dict[str, str]:
    (item,) = (item for item in env if item["name"] == name)
    ref: dict[str, str] = item["valueFrom"]["secretKeyRef"]
    return ref


def test_the_gateways_reach_the_k8s_redis_with_its_password() -> None:
    env, url = redis_url()
    parts = urlsplit(url)
    service, redis = k8s_redis(url)
    (port,) = (p for p in service["spec"]["ports"] if p["port"] == (parts.port or 6379))
    pod_labels = redis["spec"]["template"]["metadata"]["labels"]
    assert selects(service["spec"]["selector"], pod_labels)
    gateway_selector = k8s_object("Service", "buildcast")["spec"]["selector"]
    assert not selects(gateway_selector, pod_labels)  # no viewer is ever sent to Redis
    container = only_container(redis)
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    # Kubernetes expands $(VAR) in a value only from variables defined before it.
    password = re.fullmatch(r"\$\((\w+)\)", parts.password or "")
    assert password, f"BUILDCAST_REDIS has no password from a Secret: {url}"
    names = [item["name"] for item in env]
    assert names.index(password.group(1)) < names.index("BUILDCAST_REDIS")
    args = container["args"]
    served = re.fullmatch(r"\$\((\w+)\)", args[args.index("--requirepass") + 1])
    assert served, args
    assert secret_of(container["env"], served.group(1)) == secret_of(env, password.group(1))


def test_the_k8s_redis_is_small_unprivileged_and_probed() -> None:
    _, redis = k8s_redis(redis_url()[1])
    pod = redis["spec"]["template"]["spec"]
    container = only_container(redis)
    assert redis["spec"]["replicas"] == 1
    security = {**pod["securityContext"], **container["securityContext"]}
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert security["allowPrivilegeEscalation"] is False
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    options = dict(zip(container["args"][1::2], container["args"][2::2], strict=False))
    assert options["--maxmemory-policy"] == "noeviction"  # docs/operations.md#redis
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(container[probe]["exec"]["command"]), probe


@pytest.mark.integration
async def test_the_k8s_redis_runs_and_answers_its_probe_and_the_gateway() -> None:
    """redis-server takes the manifest's arguments; the probe passes only with the password;
    the gateway connects with BUILDCAST_REDIS as Kubernetes expands it."""
    _, url = redis_url()
    container = only_container(k8s_redis(url)[1])
    args = container["args"]
    assert args[0] == "redis-server"
    at = args.index("--requirepass")
    password = "0123456789abcdef" * 4  # hex, as deploy/k8s/README.md makes it
    with RedisServer(extra_args=args[1:at] + args[at + 2 :]) as server:
        with server.client() as client:
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            client.config_set("requirepass", password)
        command = container["readinessProbe"]["exec"]["command"]
        command = [part.replace("redis-cli", f"redis-cli -p {server.port}") for part in command]
        for secret, passes in ((password, True), ("wrong", False)):
            probe = subprocess.run(
                command,
                env={**os.environ, "REDISCLI_AUTH": secret},
                capture_output=True,
                timeout=10,
                check=False,
            )
            assert (probe.returncode == 0) == passes, (secret, probe)
        expanded = urlsplit(re.sub(r"\$\(\w+\)", password, url))
        here = f"{expanded.username or ''}:{expanded.password}@127.0.0.1:{server.port}"
        connection = await connect(expanded._replace(netloc=here).geturl())
        await connection.close()


# --- docker-compose.yml


def test_compose_gateways_wait_for_a_healthy_redis() -> None:
    services = compose()["services"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    gateways = [name for name in services if name.startswith("gateway")]
    assert gateways
    for name in gateways:
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
