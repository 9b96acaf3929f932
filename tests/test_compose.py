"""docker-compose.yml, validated without a Docker engine: it parses, every referenced local file
exists, and services, ports, topics, features and paths agree with prometheus.yml, the Grafana
provisioning, the generator's options and the daemon's effective config/streamgmm.yaml.
"""
from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DAEMON_CONFIG = ROOT / "config" / "streamgmm.yaml"
PROMETHEUS_YML = ROOT / "config" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "config" / "grafana"
OPERATIONS = ROOT / "docs" / "operations.md"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def mounts(svc: dict) -> dict[str, str]:
    """{container path: source} of a service's volumes (short syntax)."""
    out = {}
    for v in svc.get("volumes", []):
        parts = v.split(":")
        out[parts[1]] = parts[0]
    return out


def env(svc: dict) -> dict[str, str]:
    e = svc.get("environment", {})
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in e.items()}


def command(svc: dict) -> list[str]:
    c = svc.get("command", [])
    return shlex.split(c) if isinstance(c, str) else [str(x) for x in c]


def published(svc: dict) -> dict[int, int]:
    """{container port: host port}."""
    out = {}
    for p in svc.get("ports", []):
        parts = str(p).split("/")[0].split(":")  # [ip:]host:container[/proto]
        out[int(parts[-1])] = int(parts[-2]) if len(parts) > 1 else int(parts[-1])
    return out


def effective_daemon_config(services):
    """config/streamgmm.yaml as the daemon in the stack sees it (its environment applied)."""
    from streamgmm.service.config import load_config

    return load_config(str(DAEMON_CONFIG), environ=env(services["streamgmm"]))


def generator_args(services) -> argparse.Namespace:
    """The generator's command line, parsed by the generator's own argument parser."""
    from streamgmm.tools import generator

    svc = services["generator"]
    argv = command(svc)
    assert svc["entrypoint"] == ["streamgmm"] and argv[0] == "generate"
    parser = argparse.ArgumentParser(prog="streamgmm generate")
    generator.add_arguments(parser)
    return parser.parse_args(argv[1:])


def kafka_listeners(services) -> dict[str, str]:
    """{listener name: advertised host:port} of the broker."""
    adv = env(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    return {name: addr for name, addr in re.findall(r"(\w+)://([^,]+)", adv)}


# -------------------------------------------------------------------------------------------

def test_services_and_images(services):
    assert set(services) == {"kafka", "topics", "generator", "streamgmm", "prometheus", "grafana"}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    for name, svc in services.items():
        if "image" in svc and "build" not in svc:
            assert not svc["image"].endswith(":latest") and ":" in svc["image"], name
    for name in ("streamgmm", "generator"):
        build = services[name]["build"]
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()
    # the generator runs from the same image as the daemon
    assert services["generator"]["image"] == services["streamgmm"]["image"]


def test_dockerfile_copies_existing_files(services):
    """`docker compose build` needs every COPY source of the Dockerfile in the build context."""
    build = services["streamgmm"]["build"]
    context = ROOT / build["context"]
    dockerfile = (context / build.get("dockerfile", "Dockerfile")).read_text()
    ignore_file = context / ".dockerignore"
    ignored = [ln.strip() for ln in (ignore_file.read_text().splitlines()
                                     if ignore_file.exists() else [])
               if ln.strip() and not ln.startswith(("#", "!"))]
    for line in re.findall(r"^COPY\s+(.+)$", dockerfile, flags=re.M):
        args = [a for a in line.split() if not a.startswith("--")]
        if "--from" in line:
            continue
        for src in args[:-1]:
            assert (context / src).exists(), f"Dockerfile COPY {src}: not in the build context"
            parts = Path(src).parts
            for pat in ignored:
                assert not any(fnmatch.fnmatch("/".join(parts[:i + 1]), pat.strip("/"))
                               for i in range(len(parts))), f"{src} is excluded by {pat!r}"


def test_kafka_is_single_node_kraft(services):
    e = env(services["kafka"])
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node = e["KAFKA_NODE_ID"]
    voters = e["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters.startswith(f"{node}@kafka:")
    ctrl_port = voters.rsplit(":", 1)[1]
    assert f"CONTROLLER://:{ctrl_port}" in e["KAFKA_LISTENERS"]
    names = set(re.findall(r"(\w+)://", e["KAFKA_LISTENERS"]))
    mapped = dict(x.split(":") for x in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert names <= set(mapped)
    assert set(kafka_listeners(services)) <= names
    assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"


def test_local_files_exist(services, compose):
    named = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for target, source in mounts(svc).items():
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
            assert PurePosixPath(target).is_absolute()


def test_dependencies_exist(services):
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps:
            assert dep in services, f"{name} depends on unknown {dep}"
        if isinstance(deps, dict):
            for dep, cond in deps.items():
                assert cond["condition"] in ("service_started", "service_healthy",
                                             "service_completed_successfully")
                if cond["condition"] == "service_healthy":
                    assert "healthcheck" in services[dep]


def test_daemon_service_mounts_config_and_state(services):
    svc = services["streamgmm"]
    m = mounts(svc)
    assert m["/etc/streamgmm/streamgmm.yaml"] == "./config/streamgmm.yaml"
    assert command(svc)[command(svc).index("--config") + 1] == "/etc/streamgmm/streamgmm.yaml"
    cfg = effective_daemon_config(services)
    if cfg.checkpoint.path:
        assert any(cfg.checkpoint.path.startswith(t + "/") for t in m), (
            "checkpoint.path is not on a mounted volume")


def test_daemon_talks_to_the_stack_broker(services):
    cfg = effective_daemon_config(services)
    internal = kafka_listeners(services)["PLAINTEXT"]
    assert list(cfg.kafka.bootstrap_servers) == [internal]
    assert internal.split(":")[0] in services
    assert not cfg.kafka.security or cfg.kafka.security.get(
        "security_protocol", "PLAINTEXT") == "PLAINTEXT"


def test_topics_agree(services):
    cfg = effective_daemon_config(services)
    created = set(re.findall(r"for t in ([^;]+);", " ".join(command(services["topics"])))[0]
                  .split())
    assert cfg.source.type == "kafka"
    assert set(cfg.kafka.topics) <= created
    if cfg.sink.type == "kafka":
        assert cfg.sink.topic in created
    if cfg.dead_letter.type == "kafka":
        assert cfg.dead_letter.topic in created
    args = generator_args(services)
    assert args.topic in cfg.kafka.topics
    assert args.bootstrap_servers == kafka_listeners(services)["PLAINTEXT"]
    assert args.no_create_topic  # the topics service owns creation


def test_generator_writes_what_the_daemon_reads(services):
    from streamgmm.tools.generator import generate, _scenario_from_args

    cfg = effective_daemon_config(services)
    args = generator_args(services)
    assert args.feature_names.split(",") == list(cfg.records.features)
    if cfg.records.key_field:
        assert args.id_field == cfg.records.key_field
    assert args.count == 0 and args.rate > 0
    assert any(d.kind == "shift" for d in args.drift), "the demo needs a scheduled shift"
    # one generated record decodes with the daemon's own record decoder
    from streamgmm.service.records import decode_batch
    import json

    scenario = _scenario_from_args(args)
    recs = [json.dumps(ev.record).encode()
            for ev in generate(50, scenario=scenario, id_field=args.id_field,
                               label_field=args.label_field)]
    dec = decode_batch(recs, cfg.records)
    assert len(dec.good_index) == 50 and not dec.errors
    # the label field is not among the features (the daemon ignores it)
    assert all(not f.startswith(args.label_field) for f in cfg.records.features)
    # the shift comes after warm-up and well after a refit window of data
    shift = next(d for d in args.drift if d.kind == "shift")
    assert shift.start > cfg.detector.warmup_records + cfg.detector.refit.window


def test_prometheus_scrapes_the_daemon(services):
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for sc in jobs["streamgmm"]["static_configs"] for t in sc["targets"]]
    cfg = effective_daemon_config(services)
    assert targets == [f"streamgmm:{cfg.metrics.port}"]
    assert cfg.metrics.enabled and cfg.metrics.host in ("0.0.0.0", "::", "")
    assert cfg.metrics.port in published(services["streamgmm"])
    # the rules Prometheus loads are the tested ones, inside the mounted folder
    svc = services["prometheus"]
    m = mounts(svc)
    assert m["/etc/prometheus"] == "./config/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in command(svc)
    for rf in prom["rule_files"]:
        assert (PROMETHEUS_YML.parent / rf).is_file()


def test_grafana_provisioning_paths_agree(services):
    svc = services["grafana"]
    m = mounts(svc)
    assert m["/etc/grafana/provisioning"] == "./config/grafana/provisioning"
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    url = ds["datasources"][0]["url"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", url).groups()
    assert host in services and host == "prometheus"
    listen = [c for c in command(services["prometheus"]) if c.startswith("--web.listen-address")]
    assert not listen or listen[0].endswith(f":{port}")
    prov = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "streamgmm.yml").read_text())
    folder = prov["providers"][0]["options"]["path"]
    dashboards = [t for t, s in m.items() if s.endswith("streamgmm-dashboard.json")]
    assert dashboards and all(str(PurePosixPath(t).parent) == folder for t in dashboards)
    assert env(svc)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] in dashboards
    # the scrape interval Grafana assumes for $__rate_interval matches prometheus.yml
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert ds["datasources"][0]["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]


def test_published_ports_are_unique(services):
    host_ports = [h for svc in services.values() for h in published(svc).values()]
    assert len(host_ports) == len(set(host_ports))
    assert published(services["grafana"]) == {3000: 3000}
    assert published(services["prometheus"]) == {9090: 9090}


def test_operations_doc_matches_the_stack(services):
    text = OPERATIONS.read_text(encoding="utf-8")
    assert "docker compose up" in text
    for port in (3000, 9090, 9108):
        assert f"localhost:{port}" in text
    for alert in re.findall(r"alert: (\w+)", (ROOT / "config/prometheus/alerts.yml").read_text()):
        assert alert in text, f"{alert} is not explained in docs/operations.md"
    args = generator_args(services)
    shift = next(d for d in args.drift if d.kind == "shift")
    assert f"{shift.start:,}" in text or str(shift.start) in text
