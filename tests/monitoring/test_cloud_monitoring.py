"""Metrics in Cloud Monitoring (docs/monitoring.md): the backend deploy's collector sidecar, its RunMonitoring
config, the dashboard, SLOs and alert policies in deploy/monitoring/, and the documented commands.

What is checked offline, and how:

- the sidecar: cloudbuild.yaml's ``gcloud run deploy`` split per container as gcloud reads it (gcloud's own
  parser runs on it in tests/containers/test_cloudbuild.py), then what gcloud cannot see: which container is
  the ingress, what the collector waits for, that its default scrape target is the backend's port;
- every file in deploy/monitoring/ read into the installed Cloud SDK's own API messages (the apitools
  classes gcloud reads ``--config-from-file`` / ``--policy-from-file`` into), in the SDK's bundled Python:
  a field that is not in the message (a misspelling, a wrong enum value) is reported, as the API would
  refuse it; then the fields each API requires;
- every metric and label a PromQL query or monitoring filter names is in the backend's real ``/metrics``
  (the app started in-process with the embedded model, scraped after real requests);
- the documented commands: gcloud parses each offline (stopping only for want of an account); the REST
  calls (SLOs have no gcloud command) go to the API's documented paths with files that exist.
"""

from __future__ import annotations

import itertools
import json
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from backend.app import create_app
from backend.classifier import Classifier
from backend.config import Settings
from tests.containers import cloudbuild
from tests.containers.cloudrun_limits import (
    check_command,
    check_deploy,
    expand,
    flag_values,
    last_value,
    split_containers,
)
from tests.helpers import CAT, ROOT, need_executable

MONITORING = ROOT / "deploy" / "monitoring"
DOC = ROOT / "docs" / "monitoring.md"
SECTION = "## Metrics in Cloud Monitoring"
# Labels Managed Service for Prometheus adds to every scraped series (the collector's relabeling and the
# prometheus_target resource: run-gmp-sidecar's confgenerator/config.go), queryable in PromQL beside ours.
GMP_LABELS = frozenset(
    {
        "project_id",
        "location",
        "cluster",
        "namespace",
        "job",
        "instance",
        "instanceId",
        "service_name",
        "revision_name",
        "configuration_name",
    }
)
# PromQL's own words, never metric names (functions and keywords used in the files).
PROMQL_WORDS = frozenset(
    {"sum", "max", "min", "avg", "rate", "by", "without", "histogram_quantile", "le", "and", "or", "unless"}
)
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_FILTER_METRIC = re.compile(r'metric\.type="prometheus\.googleapis\.com/([A-Za-z0-9_:]+)/(counter|gauge|histogram)"')
_FILTER_LABEL = re.compile(r"\b(metric|resource)\.labels?\.([A-Za-z_][A-Za-z0-9_]*)")
# The collector image is pinned to a release (x.y.z), never :latest.
PINNED = re.compile(
    r"^us-docker\.pkg\.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:\d+\.\d+\.\d+$"
)
SDK_PYTHON_CHECK = r"""
import json, os, sys
root = os.path.dirname(os.path.dirname(os.path.realpath(sys.argv[1])))
sys.path[:0] = [os.path.join(root, "lib"), os.path.join(root, "lib", "third_party")]
from apitools.base.protorpclite import messages
from apitools.base.py import encoding
from googlecloudsdk.generated_clients.apis.monitoring.v1 import monitoring_v1_messages as v1
from googlecloudsdk.generated_clients.apis.monitoring.v3 import monitoring_v3_messages as v3
TYPES = {"Dashboard": v1.Dashboard, "AlertPolicy": v3.AlertPolicy, "Service": v3.Service,
         "ServiceLevelObjective": v3.ServiceLevelObjective}

def walk(message, path, problems):
    # apitools keeps what it cannot place (unknown fields, enum values it does not know) as unrecognized
    for name in message.all_unrecognized_fields():
        problems.append(f"{path}.{name}: not a field of {type(message).__name__}, or a value it does not take")
    for field in message.all_fields():
        value = message.get_assigned_value(field.name)
        for index, item in enumerate(value if field.repeated else [] if value is None else [value]):
            if isinstance(item, messages.Message):
                walk(item, f"{path}.{field.name}" + (f"[{index}]" if field.repeated else ""), problems)

report = {}
for kind, path in json.load(sys.stdin):
    problems = []
    try:  # as gcloud's monitoring util.MessageFromString reads --config-from-file and --policy-from-file
        walk(encoding.PyValueToMessage(TYPES[kind], json.load(open(path))), kind, problems)
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    report[path] = problems
print(json.dumps(report))
"""
# Which API message each file is (the files' names say it too).
KINDS = {
    "dashboard.json": "Dashboard",
    "alert-slo-burn-rate.json": "AlertPolicy",
    "alert-503-ratio.json": "AlertPolicy",
    "service.json": "Service",
    "slo-latency.json": "ServiceLevelObjective",
    "slo-availability.json": "ServiceLevelObjective",
}


def load(name: str) -> Any:
    return json.loads((MONITORING / name).read_text())


def backend_deploy() -> tuple[list[str], dict[str, list[str]], dict[str, str]]:
    config = cloudbuild.load()
    values = cloudbuild.substitution_values(config)
    args = cloudbuild.step_args(cloudbuild.steps(config)["deploy-backend"], values)
    service, containers = split_containers(args)
    return service, containers, values


def promql_queries() -> dict[str, str]:
    """Every PromQL query of the dashboard and the alert policies, by where it is."""
    queries = {}
    for index, tile in enumerate(load("dashboard.json")["mosaicLayout"]["tiles"]):
        for number, data_set in enumerate(tile["widget"]["xyChart"]["dataSets"]):
            queries[f"dashboard tile {index} ({tile['widget']['title']}) query {number}"] = data_set["timeSeriesQuery"][
                "prometheusQuery"
            ]
    for name in ("alert-503-ratio.json", "alert-slo-burn-rate.json"):
        for condition in load(name)["conditions"]:
            if "conditionPrometheusQueryLanguage" in condition:
                queries[f"{name}: {condition['displayName']}"] = condition["conditionPrometheusQueryLanguage"]["query"]
    return queries


def monitoring_filters() -> dict[str, str]:
    """Every Cloud Monitoring filter of the SLOs (they select GMP's metrics by type and label)."""
    filters = {}
    for name in ("slo-latency.json", "slo-availability.json"):
        request_based = load(name)["serviceLevelIndicator"]["requestBased"]
        for kind, body in request_based.items():
            for key, value in body.items():
                if key.endswith("Filter"):
                    filters[f"{name}: {kind}.{key}"] = value
    return filters


@pytest.fixture(scope="module")
def exported(model_cache: Path, classifier: Classifier) -> dict[str, tuple[str, dict[str, set[str]]]]:
    """The backend's real /metrics after a photo, a non-image and the other routes: each sample name with
    its family's type and the values of each label it carries."""
    app = create_app(Settings(_env_file=None, model_cache_dir=model_cache, access_log=False), lambda _: classifier)
    with TestClient(app, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").text
            time.sleep(0.05)
        assert client.post("/predict", content=CAT.read_bytes()).status_code == 200
        assert client.post("/predict", content=b"not an image" * 50).status_code == 415
        for path in ("/health", "/model"):
            client.get(path)
        text = client.get("/metrics").text
    samples: dict[str, tuple[str, dict[str, set[str]]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            _, labels = samples.setdefault(sample.name, (family.type, {}))
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return samples


# --- the sidecar in the backend's deploy


def test_the_backend_deploy_runs_the_collector_beside_the_backend() -> None:
    service, containers, values = backend_deploy()
    assert list(containers) == ["backend", "collector"]
    backend, collector = containers["backend"], containers["collector"]
    assert check_deploy([*service, "--container=backend", *backend, "--container=collector", *collector]) == []
    # the backend is the ingress container: the only one with a port, its probes and its image
    assert last_value(backend, "--port") == "8080"
    assert last_value(collector, "--port") is None
    assert last_value(backend, "--image") == (
        f"{values['_REGION']}-docker.pkg.dev/{values['PROJECT_ID']}/{values['_REPOSITORY']}/"
        f"{values['_BACKEND_SERVICE']}:{values['COMMIT_SHA']}"
    )
    # the collector: Google's image at a pinned release, started once the backend is ready (its startup
    # probe is /ready: the first scrape finds the model loaded), kept alive by its own health endpoint
    assert PINNED.match(last_value(collector, "--image") or ""), last_value(collector, "--image")
    assert flag_values(collector, "--depends-on") == ["backend"]
    assert "httpGet.path=/ready" in (last_value(backend, "--startup-probe") or "")
    liveness = dict(item.split("=", 1) for item in (last_value(collector, "--liveness-probe") or "").split(","))
    assert (liveness["httpGet.path"], liveness["httpGet.port"]) == ("/liveness", "13133")
    # nothing of the service (identity, scaling, privacy) moved into a container, where gcloud would refuse it
    for flag in ("--region", "--service-account", "--no-allow-unauthenticated", "--concurrency", "--max-instances"):
        assert any(arg.split("=", 1)[0] == flag for arg in service), flag
    # a service deployed before the sidecar had one container named <service>-1: it is replaced, not kept
    assert flag_values(service, "--remove-containers") == [f"{values['_BACKEND_SERVICE']}-1"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("collector", "--depends-on=frontend"), "--depends-on=frontend is not a container"),
        (("collector", "--depends-on=collector"), "--depends-on=collector is not a container"),
        (("collector", "--port=9090"), "exactly one container must have --port"),
        (("collector", "--cpu=3"), "--container=collector: --cpu=3"),
        (("collector", "--cpu=0.25 --memory=1Gi"), "allows at most 512 MiB"),
        (("collector", "--liveness-probe=httpGet.path=liveness"), "must start with /"),
        (("backend", "--cpu=3"), "--cpu=3: above 1 CPU only"),
    ],
)
def test_a_broken_multi_container_deploy_is_caught(change: tuple[str, str], expected: str) -> None:
    """gcloud's parser accepts each of these (it checks dependencies only against the deployed service)."""
    service, containers, _ = backend_deploy()
    name, flags = change
    containers[name] = [*containers[name], *shlex.split(flags)]
    args = [*service]
    for container, own in containers.items():
        args += [f"--container={container}", *own]
    problems = check_command(args)
    assert any(expected in problem for problem in problems), problems


def test_the_collectors_default_config_scrapes_the_backend_and_the_file_says_the_same() -> None:
    """The deploy mounts no config: the collector then scrapes 0.0.0.0:8080/metrics every 30 s
    (run-gmp-sidecar's DefaultRunMonitoringConfig). deploy/monitoring/runmonitoring.yaml is the custom
    config docs/monitoring.md shows how to mount; it must scrape the same target, with RunMonitoring's fields
    only (the collector reads it strictly: an unknown field stops it)."""
    _, containers, _ = backend_deploy()
    assert last_value(containers["backend"], "--port") == "8080"  # the default target's port
    config = yaml.safe_load((MONITORING / "runmonitoring.yaml").read_text())
    assert config["apiVersion"] == "monitoring.googleapis.com/v1beta"
    assert config["kind"] == "RunMonitoring"
    assert set(config) <= {"apiVersion", "kind", "metadata", "spec"}
    assert set(config["spec"]) <= {"endpoints", "targetLabels", "limits"}
    (endpoint,) = config["spec"]["endpoints"]
    allowed = {"port", "scheme", "path", "params", "proxyUrl", "interval", "timeout", "metricRelabeling"}
    assert set(endpoint) <= allowed, set(endpoint) - allowed
    assert str(endpoint["port"]) == last_value(containers["backend"], "--port")
    assert endpoint.get("path", "/metrics") == "/metrics"
    interval = _seconds(endpoint["interval"])
    assert 10 <= interval <= 300
    assert _seconds(endpoint.get("timeout", endpoint["interval"])) <= interval
    metadata = config["spec"].get("targetLabels", {}).get("metadata", [])
    assert set(metadata) <= {"instance", "revision", "service", "configuration"}
    assert "service" in metadata or not metadata  # the dashboard's and SLOs' namespace label needs no more
    for rule in endpoint.get("metricRelabeling", []):
        assert set(rule) <= {"sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement", "action"}


@pytest.mark.slow
def test_the_custom_config_keeps_every_series_the_dashboard_slos_and_alerts_read(
    exported: dict[str, tuple[str, dict[str, set[str]]]],
) -> None:
    """No metricRelabeling 'drop' rule of runmonitoring.yaml drops a series a query or filter reads (each rule
    tried, as Prometheus does, on its source labels joined with ';', for every value the backend exports
    where a query does not pin the label), and each rule does drop something."""
    config = yaml.safe_load((MONITORING / "runmonitoring.yaml").read_text())
    (endpoint,) = config["spec"]["endpoints"]
    reads: list[tuple[str, dict[str, str]]] = []
    for query in promql_queries().values():
        reads += [
            (name, {label: value for label, op, value in matchers if op == "="}) for name, matchers in _selectors(query)
        ]
    for text in monitoring_filters().values():
        pinned = dict(re.findall(r'metric\.label\.([A-Za-z_]+)="([^"]*)"', text))
        reads += [(_sample_name(name, kind), pinned) for name, kind in _FILTER_METRIC.findall(text)]
    rules = [rule for rule in endpoint.get("metricRelabeling", []) if rule.get("action", "replace").lower() == "drop"]
    assert rules, "runmonitoring.yaml drops nothing: then it is the default config with a longer interval"
    for rule in rules:
        sources: list[str] = rule["sourceLabels"]
        separator: str = rule.get("separator", ";")

        def joined(name: str, labels: dict[str, str], sources: list[str] = sources, separator: str = separator) -> str:
            return separator.join(name if s == "__name__" else labels.get(s, "") for s in sources)

        dropped_any = False
        for name, (_, labels) in exported.items():
            for values in _combinations({s: labels.get(s, {""}) for s in sources if s != "__name__"}):
                if re.fullmatch(rule["regex"], joined(name, values)):
                    dropped_any = True
        assert dropped_any, f"{rule} drops nothing the backend exports"
        for name, pinned in reads:
            labels = exported.get(name, ("", {}))[1]
            choices = {s: {pinned[s]} if s in pinned else labels.get(s, {""}) for s in sources if s != "__name__"}
            for values in _combinations(choices):
                assert not re.fullmatch(rule["regex"], joined(name, values)), (rule, name, values)


# --- the monitoring files against the SDK's API messages, and the fields the APIs require


@pytest.mark.slow
def test_every_monitoring_file_is_read_whole_by_the_sdks_api_messages(tmp_path: Path) -> None:
    files = sorted(path.name for path in MONITORING.glob("*.json"))
    assert files == sorted(KINDS), "a file in deploy/monitoring/ with no message type to check it against"
    report = _sdk_check([(KINDS[name], MONITORING / name) for name in files])
    assert report == {str(MONITORING / name): [] for name in files}
    # ...and the same check does catch a misspelt field, an unknown enum value and a field of another level
    dashboard = load("dashboard.json")
    first = dashboard["mosaicLayout"]["tiles"][0]["widget"]["xyChart"]["dataSets"][0]
    first["plotTyp"] = first.pop("plotType")
    dashboard["mosaicLayout"]["tiles"][1]["widget"]["xyChart"]["dataSets"][0]["plotType"] = "LINES"
    slo = load("slo-latency.json")
    slo["serviceLevelIndicator"]["requestBased"]["distributionCut"]["goal"] = 0.99
    (tmp_path / "dashboard.json").write_text(json.dumps(dashboard))
    (tmp_path / "slo.json").write_text(json.dumps(slo))
    bad = _sdk_check([("Dashboard", tmp_path / "dashboard.json"), ("ServiceLevelObjective", tmp_path / "slo.json")])
    assert any(".plotTyp:" in problem for problem in bad[str(tmp_path / "dashboard.json")])
    assert any("dataSets[0].plotType:" in problem for problem in bad[str(tmp_path / "dashboard.json")])
    assert any("distributionCut.goal:" in problem for problem in bad[str(tmp_path / "slo.json")])


def test_the_dashboard_has_the_panels_people_look_at_first() -> None:
    dashboard = load("dashboard.json")
    assert dashboard["displayName"]
    layout = dashboard["mosaicLayout"]
    columns = layout["columns"]
    assert 1 <= columns <= 48
    cells: set[tuple[int, int]] = set()
    for tile in layout["tiles"]:
        x, y, width, height = (tile.get(key, 0) for key in ("xPos", "yPos", "width", "height"))
        assert width > 0, tile["widget"]["title"]
        assert height > 0, tile["widget"]["title"]
        assert x + width <= columns, tile["widget"]["title"]
        area = {(column, row) for column in range(x, x + width) for row in range(y, y + height)}
        assert not area & cells, f"{tile['widget']['title']} overlaps another tile"
        cells |= area
        assert tile["widget"]["title"]
        assert tile["widget"]["xyChart"]["dataSets"]
    queries = " ".join(promql_queries().values())
    # requests and errors by status, latency percentiles, images/s, batch size, queue depth, 503s, decode rejections
    for needed in (
        "sum by (status) (rate(http_requests_total",
        "histogram_quantile(0.5, ",
        "histogram_quantile(0.95, ",
        "histogram_quantile(0.99, ",
        "rate(images_classified_total",
        "inference_batch_size_sum",
        "inference_queue_depth",
        'status="503"',
        "sum by (code) (rate(image_errors_total",
    ):
        assert needed in queries, needed


def test_the_slos_and_alerts_have_what_the_apis_require() -> None:
    assert load("service.json")["displayName"]
    for name in ("slo-latency.json", "slo-availability.json"):
        slo = load(name)
        assert 0 < slo["goal"] < 1
        assert slo["rollingPeriod"] == f"{28 * 86400}s"  # 28 days: whole weeks, the same weekdays in each window
        (kind,) = slo["serviceLevelIndicator"]["requestBased"]
        assert kind in {"distributionCut", "goodTotalRatio"}
    cut = load("slo-latency.json")["serviceLevelIndicator"]["requestBased"]["distributionCut"]
    # the threshold is a bucket boundary of the histogram: the SLI counts whole buckets, not interpolations
    from backend.metrics import _LATENCY_BUCKETS

    assert cut["range"]["max"] in _LATENCY_BUCKETS
    for name in ("alert-slo-burn-rate.json", "alert-503-ratio.json"):
        policy = load(name)
        assert policy["displayName"]
        assert policy["combiner"] in {"AND", "OR"}
        assert policy["documentation"]["content"]
        for condition in policy["conditions"]:
            assert condition["displayName"]
            (kind,) = {key for key in condition if key.startswith("condition")}
            assert kind in {"conditionThreshold", "conditionPrometheusQueryLanguage"}
    # the burn-rate alert names SLOs the documented REST calls create, by their ids
    section = _section()
    for condition in load("alert-slo-burn-rate.json")["conditions"]:
        slo_id = re.search(r"serviceLevelObjectives/([a-z0-9-]+)", condition["conditionThreshold"]["filter"])
        assert slo_id, condition["displayName"]
        assert f"serviceLevelObjectiveId={slo_id[1]}" in section, condition["displayName"]


def test_every_query_and_filter_selects_the_backend_service_cloudbuild_deploys() -> None:
    """The collector labels every series namespace=<Cloud Run service>; the files name the default service."""
    service = cloudbuild.load()["substitutions"]["_BACKEND_SERVICE"]
    for where, query in promql_queries().items():
        for _, matchers in _selectors(query):
            assert ("namespace", "=", service) in matchers, where
    for where, text in monitoring_filters().items():
        assert f'resource.label.namespace="{service}"' in text, where
    for condition in load("alert-slo-burn-rate.json")["conditions"]:
        assert f"/services/{service}/" in condition["conditionThreshold"]["filter"]


# --- every metric and label named exists in the backend's real /metrics


@pytest.mark.slow
def test_every_promql_metric_and_label_is_exported_by_the_backend(
    exported: dict[str, tuple[str, dict[str, set[str]]]],
) -> None:
    problems = _unknown_in_promql(promql_queries(), exported)
    assert not problems, problems
    # ...and a misspelt metric or label would be caught
    assert _unknown_in_promql({"x": 'sum by (code) (rate(image_error_total{namespace="a"}[5m]))'}, exported)
    assert _unknown_in_promql({"x": 'sum(rate(images_classified_total{namespace="a",route="/"}[5m]))'}, exported)
    assert _unknown_in_promql({"x": 'sum by (reason) (rate(image_errors_total{namespace="a"}[5m]))'}, exported)


@pytest.mark.slow
def test_every_slo_filter_names_a_gmp_metric_of_the_backend(
    exported: dict[str, tuple[str, dict[str, set[str]]]],
) -> None:
    """GMP names a scraped family prometheus.googleapis.com/<name>/<kind>, <name> as the exposition's TYPE
    line says it (``http_requests_total``: the collector adds no suffix)."""
    for where, text in monitoring_filters().items():
        metrics = _FILTER_METRIC.findall(text)
        assert metrics, where
        for name, kind in metrics:
            sample = _sample_name(name, kind)
            assert sample in exported, (where, name)
            assert exported[sample][0] == kind, (where, name, exported[sample][0])
            labels = exported[sample][1]
            for scope, label in _FILTER_LABEL.findall(text):
                if scope == "metric":
                    assert label in labels, (where, label)
                else:
                    assert label in GMP_LABELS, (where, label)


# --- the documented commands


def test_the_section_documents_every_file_and_no_other() -> None:
    section = _section()
    named = set(re.findall(r"deploy/monitoring/([a-z0-9.-]+)", section))
    assert named == {path.name for path in MONITORING.iterdir()}


def test_the_documented_grants_are_predefined_roles() -> None:
    preamble, _ = cloudbuild.documented_commands()
    lines = [line for line in _shell_lines() if line.startswith("gcloud ")]
    for command in expand(lines, cloudbuild.sample_preamble(preamble)):
        assert check_command(command.args) == [], command.line


@pytest.mark.slow
def test_gcloud_accepts_every_documented_monitoring_command(tmp_path: Path) -> None:
    gcloud = cloudbuild.offline_gcloud(need_executable("gcloud"), tmp_path)
    workdir = gcloud[2]
    (workdir / "deploy").mkdir()
    (workdir / "deploy" / "monitoring").symlink_to(MONITORING)  # the commands run from the repository's root
    preamble, _ = cloudbuild.documented_commands()
    preamble = cloudbuild.sample_preamble(preamble)
    commands = [line for line in _shell_lines() if line.startswith("gcloud ")]
    assert any("dashboards create" in c for c in commands)
    assert sum("policies create" in c for c in commands) == 2
    # the README's setup has set the project (`gcloud config set project`): so does this configuration
    assert cloudbuild.run_gcloud(gcloud, 'gcloud config set project "$PROJECT_ID"', preamble)[0] == 0
    results = {command: cloudbuild.run_gcloud(gcloud, command, preamble) for command in commands}
    refused = cloudbuild.rejected(results)
    assert not refused, refused
    # gcloud reads the file before it needs an account: a broken one is refused offline
    (tmp_path / "broken.json").write_text('{"displayName": "x", "mosaicLayout": ')
    code, out = cloudbuild.run_gcloud(
        gcloud, f"gcloud monitoring dashboards create --config-from-file={tmp_path}/broken.json"
    )
    assert code != 0, out
    assert cloudbuild.NO_ACCOUNT not in out, out


def test_the_documented_rest_calls_create_the_service_and_its_slos() -> None:
    """Cloud Monitoring's SLOs have no gcloud command: the section creates them with the REST API
    (services.create, services.serviceLevelObjectives.create). Run with a ``curl`` that records its
    arguments: each call is a POST of one of the files to the documented path."""
    preamble, _ = cloudbuild.documented_commands()
    lines = [line for line in _shell_lines() if line.startswith("curl ")]
    script = "\n".join(
        [
            "set -euo pipefail",
            cloudbuild.sample_preamble(preamble),
            "gcloud() { echo sample-token; }",
            "curl() { printf '%s\\0' \"$@\"; printf '\\n\\0'; }",
            *lines,
        ]
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True, cwd=ROOT)
    calls = [call.split("\0")[:-1] for call in out.stdout.split("\n\0")[:-1]]
    assert len(calls) == 3, calls
    created = {}
    for call in calls:
        (url,) = [arg for arg in call if arg.startswith("https://")]
        assert "-X" not in call or call[call.index("-X") + 1] == "POST"
        (data,) = [call[i + 1] for i, arg in enumerate(call) if arg in {"-d", "--data", "--data-binary"}]
        assert data.startswith("@deploy/monitoring/"), data
        assert (ROOT / data[1:]).is_file()
        assert "Authorization: Bearer sample-token" in call
        assert "Content-Type: application/json" in call
        match = re.fullmatch(
            r"https://monitoring\.googleapis\.com/v3/projects/[a-z0-9-]+/services"
            r"(?:\?serviceId=(?P<service>[a-z0-9-]+)|/(?P<parent>[a-z0-9-]+)/serviceLevelObjectives"
            r"\?serviceLevelObjectiveId=(?P<slo>[a-z0-9-]+))",
            url,
        )
        assert match, url
        created[match["service"] or match["slo"]] = (match["parent"], data)
    service = cloudbuild.load()["substitutions"]["_BACKEND_SERVICE"]
    assert created == {
        service: (None, "@deploy/monitoring/service.json"),
        "predict-latency": (service, "@deploy/monitoring/slo-latency.json"),
        "predict-availability": (service, "@deploy/monitoring/slo-availability.json"),
    }


# --- helpers


def _section() -> str:
    return cloudbuild.doc_section(DOC, SECTION)


def _shell_lines() -> list[str]:
    lines = []
    for block in cloudbuild.SHELL_BLOCK.findall(_section()):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def _seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, f"{duration!r} is not a duration in s or m"
    return int(match[1]) * (60 if match[2] == "m" else 1)


def _selectors(query: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, operator, value)]) of each ``metric{...}`` selector in a PromQL query. Every query in
    these files selects with braces (the namespace matcher), so a bare metric name is not looked for."""
    for name, body in _SELECTOR.findall(query):
        yield name, _MATCHER.findall(body)


def _unknown_in_promql(queries: dict[str, str], exported: dict[str, tuple[str, dict[str, set[str]]]]) -> list[str]:
    problems = []
    for where, query in queries.items():
        selected = list(_selectors(query))
        if not selected:
            problems.append(f"{where}: no metric selector in {query!r}")
        names = set()
        for name, matchers in selected:
            if name in PROMQL_WORDS:
                continue
            if name not in exported:
                problems.append(f"{where}: the backend exports no {name}")
                continue
            names.add(name)
            for label, _, _ in matchers:
                if label not in exported[name][1].keys() | GMP_LABELS:
                    problems.append(f"{where}: {name} has no label {label}")
        for grouping in _GROUPING.findall(query):
            for label in (part.strip() for part in grouping.split(",")):
                if label and not any(label in exported[name][1].keys() | GMP_LABELS for name in names):
                    problems.append(f"{where}: no selected metric has the label {label} it groups by")
    return problems


def _combinations(choices: dict[str, set[str]]) -> Iterator[dict[str, str]]:
    """Every assignment of one value to each label."""
    keys = sorted(choices)
    for values in itertools.product(*(sorted(choices[key]) for key in keys)):
        yield dict(zip(keys, values, strict=True))


def _sample_name(name: str, kind: str) -> str:
    """The exposition's sample that carries a GMP metric (a histogram's buckets are its ``_bucket`` samples)."""
    return f"{name}_bucket" if kind == "histogram" else name


def _sdk_check(files: list[tuple[str, Path]]) -> dict[str, list[str]]:
    """Each file read into the installed Cloud SDK's message class, in the SDK's own Python: problems by path."""
    gcloud = Path(need_executable("gcloud")).resolve()
    sdk = gcloud.parent.parent
    python = sdk / "platform" / "bundledpythonunix" / "bin" / "python3"
    if not python.exists():
        pytest.skip(f"no bundled Python in {sdk}")
    result = subprocess.run(
        [str(python), "-c", SDK_PYTHON_CHECK, str(gcloud)],
        input=json.dumps([[kind, str(path)] for kind, path in files]),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    report: dict[str, list[str]] = json.loads(result.stdout)
    return report
