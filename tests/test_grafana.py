"""Grafana dashboard and provisioning; every PromQL expression (dashboard and alert rules) parses
with promtool and names only metrics and labels the daemon really exports.

"Really exports" is checked twice: against the table in docs/architecture.md, and against a real
HTTP scrape of a metrics server started here with the daemon's own metrics module
(`streamgmm.service.runtime.metrics.DaemonMetrics` served by `streamgmm.service.runtime.health.HealthServer`).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "config" / "grafana" / "streamgmm-dashboard.json"
PROVISIONING = ROOT / "config" / "grafana" / "provisioning"
ALERTS = ROOT / "config" / "prometheus" / "alerts.yml"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

needs_promtool = pytest.mark.usefixtures("promtool")  # fails, never skips, without it

# Plausible values for Grafana's template variables when an expression is checked.
TEMPLATE_VALUES = {
    "job": "streamgmm",
    "instance": "streamgmm:9108",
    "__rate_interval": "1m",
    "__interval": "30s",
    "__range": "1h",
    "datasource": "prometheus",
}
# Labels Prometheus itself adds or uses: target labels and histogram buckets.
PROMETHEUS_LABELS = {"job", "instance"}


# ---------------------------------------------------------------------------------------------
# collecting expressions
# ---------------------------------------------------------------------------------------------

def substitute(expr: str) -> str:
    """Replace $var / ${var} / [[var]] Grafana variables with plausible values."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name not in TEMPLATE_VALUES:
            raise AssertionError(f"unknown template variable {name!r} in {expr!r}")
        return TEMPLATE_VALUES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", repl, expr)


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def iter_panels(panels):
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str, str]]:
    """(where, raw expr, legendFormat) for every PromQL expression in the dashboard."""
    dash = load_dashboard()
    out = []
    for p in iter_panels(dash["panels"]):
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"],
                        t.get("legendFormat", "")))
    for a in dash["annotations"]["list"]:
        if a.get("expr"):
            out.append((f"annotation {a['name']!r}", a["expr"],
                        a.get("textFormat", "") + " " + a.get("titleFormat", "")))
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", q)
        assert m, f"variable {v['name']}: unsupported query {q!r}"
        # the selector is PromQL; the label it lists is checked through the legend channel
        out.append((f"variable {v['name']!r}", m.group(1), "{{%s}}" % m.group(2)))
    return out


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def alert_expressions() -> list[tuple[str, str, str]]:
    """(where, expr, label templates) for every alert rule."""
    out = []
    for r in alert_rules():
        templates = " ".join(str(v) for v in r.get("annotations", {}).values())
        out.append((f"alert {r['alert']}", r["expr"], templates))
    return out


ALL_EXPRESSIONS = dashboard_expressions() + alert_expressions()


# ---------------------------------------------------------------------------------------------
# a small PromQL lexer: which metric names and label names does an expression use?
# (promtool decides whether it parses; this only reads names out of expressions that do)
# ---------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w:]))  # after offset: `offset 2m`
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},@])
""", re.VERBOSE)

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "atan2", "inf", "nan",
            "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
            "bottomk", "topk", "quantile"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def tokenize(expr: str) -> list[tuple[str, str]]:
    pos, out = 0, []
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise AssertionError(f"cannot tokenize {expr[pos:pos + 20]!r} in {expr!r}")
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            out.append((kind, m.group()))
        pos = m.end()
    return out


def names_in(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """({metric name: label names in its selector}, grouping label names) of one expression."""
    toks = tokenize(expr)
    metrics: dict[str, set[str]] = {}
    grouping: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text.lower() in GROUPING and nxt == "(":
            j = i + 2
            while toks[j][1] != ")":
                if toks[j][0] == "ident":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
            continue
        if kind == "ident" and text.lower() not in KEYWORDS and nxt != "(":
            labels = metrics.setdefault(text, set())
            if nxt == "{":
                i = _read_matchers(toks, i + 1, labels)
                continue
        elif kind == "op" and text == "{":  # selector without a metric name
            i = _read_matchers(toks, i, metrics.setdefault("", set()))
            continue
        i += 1
    return metrics, grouping


def _read_matchers(toks, i, labels: set) -> int:
    """Collect label names of a {...} matcher list starting at toks[i] == '{'; index after '}'."""
    assert toks[i][1] == "{"
    i += 1
    while toks[i][1] != "}":
        if toks[i][0] == "ident" and toks[i + 1][1] in ("=", "!=", "=~", "!~"):
            labels.add(toks[i][1])
        i += 1
    return i + 1


def template_labels(text: str) -> set[str]:
    """Label names a legend ({{label}}) or alert template ($labels.label) refers to."""
    return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text)) | set(
        re.findall(r"\$labels\.(\w+)", text))


def test_lexer_reads_names():
    m, g = names_in('sum by (le, instance) (rate(a_bucket{job=~"x", le!="1"}[5m])) / '
                    'on (job) group_left (version) b_info + histogram_quantile(0.5, c) > bool 2')
    assert m == {"a_bucket": {"job", "le"}, "b_info": set(), "c": set()}
    assert g == {"le", "instance", "job", "version"}
    m, _ = names_in('{__name__="x", job="y"} or absent(up{job="s"}) unless time() - 1e3')
    assert m == {"": {"__name__", "job"}, "up": {"job"}}
    m, g = names_in("a < on (group) group_left () max by (group) (a offset 2m) - b offset 1h30m")
    assert m == {"a": set(), "b": set()} and g == {"group"}


# ---------------------------------------------------------------------------------------------
# what the daemon exports
# ---------------------------------------------------------------------------------------------

def documented_metrics() -> dict[str, set[str]]:
    """{sample name: label names} from the metric table in docs/architecture.md."""
    out: dict[str, set[str]] = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\|\s*`(streamgmm_\w+)`\s*\|\s*([^|]+)\|\s*([^|]*)\|", line)
        if not m:
            continue
        name, typ, labels = m.group(1), m.group(2).strip(), m.group(3)
        # label names are backticked; label values follow in parentheses
        label_names = set(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels)))
        if typ.startswith("histogram"):
            out[name + "_bucket"] = label_names | {"le"}
            out[name + "_sum"] = set(label_names)
            out[name + "_count"] = set(label_names)
        else:
            out[name] = label_names
    assert len(out) > 20, "metric table not found in docs/architecture.md"
    return out


@pytest.fixture(scope="module")
def scraped_metrics() -> dict[str, set[str]]:
    """{sample name: label names} from a real HTTP scrape of the daemon's metrics server."""
    from streamgmm.service.runtime.health import Health, HealthServer
    from streamgmm.service.runtime.metrics import DaemonMetrics

    metrics = DaemonMetrics(ratio_window=100, target_ratio=0.01)
    # Per-partition lag series exist only once partitions are assigned: assign one.
    metrics.set_lag({("events", 0): 5})
    metrics.observe_scored([-3.0, -20.0], [False, True], ages=[0.1, 0.2])
    # The threshold exists only once a model does (no sample in warm-up): give it one.
    from types import SimpleNamespace

    metrics.observe_model(SimpleNamespace(threshold_=-12.0, ready=True, n_components=2,
                                          model_version=1))
    metrics.observe_checkpoint()
    # Fleet series exist only on a fleet member: make this one a member of group "g".
    from streamgmm.service.fleet.status import FleetStatus

    metrics.observe_fleet(FleetStatus(group="g", version=1, published=1))
    server = HealthServer("127.0.0.1", 0, Health(), metrics).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.stop()
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def check_names(where: str, expr: str, templates: str, exported: dict[str, set[str]]) -> list:
    """Problems with the metric and label names of one expression (empty list: fine)."""
    problems = []
    metrics, grouping = names_in(substitute(expr))
    all_labels = set().union(*exported.values()) | PROMETHEUS_LABELS
    for name, labels in metrics.items():
        if name == "":
            problems.append(f"{where}: selector without a metric name in {expr!r}")
            continue
        if name == "up":
            allowed = PROMETHEUS_LABELS
        elif name in exported:
            allowed = exported[name] | PROMETHEUS_LABELS
        else:
            problems.append(f"{where}: metric {name!r} is not exported")
            continue
        if labels - allowed:
            problems.append(f"{where}: {name} has no label(s) {sorted(labels - allowed)}")
    if grouping - all_labels:
        problems.append(f"{where}: grouping by unknown label(s) {sorted(grouping - all_labels)}")
    used = template_labels(templates) - {"value"}
    if used - all_labels:
        problems.append(f"{where}: template uses unknown label(s) {sorted(used - all_labels)}")
    return problems


def test_documented_and_scraped_metrics_agree(scraped_metrics):
    """The metrics module exports exactly the documented names and labels."""
    assert documented_metrics() == scraped_metrics


@pytest.mark.parametrize("source", ["docs/architecture.md", "real scrape"])
def test_expressions_use_only_exported_names(source, scraped_metrics):
    exported = documented_metrics() if source == "docs/architecture.md" else scraped_metrics
    problems = []
    for where, expr, templates in ALL_EXPRESSIONS:
        problems += check_names(where, expr, templates, exported)
    assert not problems, "\n".join(problems)


def test_name_check_catches_mistakes(scraped_metrics):
    """The checker is not vacuous: a typo in a metric or a label is reported."""
    assert check_names("x", "rate(streamgmm_records_total[1m])", "", scraped_metrics)
    assert check_names("x", 'streamgmm_dead_letters_total{cause="a"}', "", scraped_metrics)
    assert check_names("x", "sum by (partition) (streamgmm_ready)", "{{partition}}",
                       scraped_metrics) == []
    assert check_names("x", "sum by (shard) (streamgmm_ready)", "", scraped_metrics)
    assert check_names("x", "streamgmm_ready", "{{ $labels.pod }}", scraped_metrics)


def test_every_exported_family_is_on_the_dashboard(scraped_metrics):
    """Nothing the daemon exports is left without a panel (build info included)."""
    used = set()
    for _, expr, _ in dashboard_expressions():
        used |= set(names_in(substitute(expr))[0])
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in scraped_metrics}
    missing = [f for f in families
               if f not in used and not any(u.startswith(f + "_") for u in used)]
    assert not missing, missing


# ---------------------------------------------------------------------------------------------
# promtool parses every expression
# ---------------------------------------------------------------------------------------------

def promtool_parses(expr: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `promtool check rules` on a rule file holding expr as a recording rule."""
    rule_file = tmp_path / "expr_rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": [
        {"record": "check:expression", "expr": expr}]}]}), encoding="utf-8")
    return subprocess.run([PROMTOOL, "check", "rules", str(rule_file)], capture_output=True,
                          text=True, timeout=60)


@needs_promtool
@pytest.mark.parametrize("where,expr", [(w, e) for w, e, _ in ALL_EXPRESSIONS],
                         ids=[w for w, _, _ in ALL_EXPRESSIONS])
def test_expression_parses_with_promtool(where, expr, tmp_path):
    res = promtool_parses(substitute(expr), tmp_path)
    assert res.returncode == 0 and "SUCCESS" in res.stdout, (
        f"{where}: {substitute(expr)!r}\n{res.stdout}\n{res.stderr}")


@needs_promtool
def test_promtool_rejects_a_bad_expression(tmp_path):
    res = promtool_parses('sum by (le (rate(streamgmm_anomalies_total[1m]))', tmp_path)
    assert res.returncode != 0


# ---------------------------------------------------------------------------------------------
# the dashboard model
# ---------------------------------------------------------------------------------------------

def test_dashboard_model_basics():
    dash = load_dashboard()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] and dash["title"] and dash["id"] is None
    ids = [p["id"] for p in iter_panels(dash["panels"])]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("job", "instance"):
        v = variables[name]
        assert v["type"] == "query"
        assert v["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    assert "$job" in json.dumps(variables["instance"]["query"])


def test_every_panel_has_datasource_description_and_unit():
    dash = load_dashboard()
    for p in iter_panels(dash["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert len(p.get("description", "")) > 30, p["title"]
        unit = p["fieldConfig"]["defaults"].get("unit")
        if p["type"] == "heatmap":
            unit = p["options"]["yAxis"].get("unit")
        assert unit, f"{p['title']}: no unit"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}"
            assert 'job=~"$job"' in t["expr"] and 'instance=~"$instance"' in t["expr"], t["expr"]


def test_panels_do_not_overlap():
    cells = {}
    for p in load_dashboard()["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def _panels_using(pattern: str):
    rx = re.compile(pattern)
    return [p for p in iter_panels(load_dashboard()["panels"])
            if any(rx.search(t["expr"]) for t in p.get("targets", []))]


@pytest.mark.parametrize("what,pattern,unit", [
    ("records/s", r"rate\(streamgmm_records_processed_total", "suffix: rec/s"),
    ("anomaly ratio", r"streamgmm_anomaly_ratio\{", "percentunit"),
    ("refit duration", r"streamgmm_refit_duration_seconds_bucket", "s"),
    ("batch time", r"histogram_quantile\(0\.99, .*streamgmm_batch_duration_seconds_bucket", "s"),
    ("record age", r"histogram_quantile\(0\.99, .*streamgmm_record_age_seconds_bucket", "s"),
    ("lag", r"by \(topic, partition\) \(streamgmm_consumer_lag_records", "short"),
    ("dead letters", r"by \(reason\) \(rate\(streamgmm_dead_letters_total", "suffix: rec/s"),
    ("checkpoint age", r"streamgmm_checkpoint_age_seconds", "s"),
    ("threshold", r"streamgmm_threshold\{", "none"),
    ("fleet version per member", r"by \(group, instance\) \(streamgmm_fleet_model_version\{",
     "none"),
    ("fleet version spread", r"max by \(group\) \(streamgmm_fleet_model_version\{.*\}\) - "
     r"min by \(group\) \(streamgmm_fleet_model_version\{", "none"),
    ("fleet sync age", r"streamgmm_fleet_sync_age_seconds\{", "s"),
    ("fleet stats published", r"rate\(streamgmm_fleet_statistics_published_total", "suffix: msg/s"),
    ("fleet stats merged", r"rate\(streamgmm_fleet_statistics_merged_total", "suffix: msg/s"),
    ("fleet bytes/s", r"by \(instance, topic, direction\) \(rate\(streamgmm_fleet_bytes_total",
     "Bps"),
])
def test_required_panels(what, pattern, unit):
    panels = [p for p in _panels_using(pattern) if p["type"] == "timeseries"]
    assert panels, f"no time-series panel for {what}"
    assert any(p["fieldConfig"]["defaults"]["unit"] == unit for p in panels), what


def test_fleet_row_holds_every_fleet_panel():
    """A "Fleet" row below the single-daemon panels: all fleet panels under it, none above, and
    the leader per member as a state timeline."""
    panels = load_dashboard()["panels"]
    rows = [p for p in panels if p["type"] == "row"]
    fleet_row = next(p for p in rows if p["title"] == "Fleet")
    assert fleet_row is rows[-1]
    below = [p for p in panels if p["gridPos"]["y"] > fleet_row["gridPos"]["y"]]
    fleet = [p for p in panels if p["type"] != "row" and any(
        "streamgmm_fleet_" in t["expr"] for t in p["targets"])]
    assert fleet and fleet == below
    assert all(all("streamgmm_fleet_" in t["expr"] for t in p["targets"]) for p in fleet)
    leader = [p for p in _panels_using(r"by \(group, instance\) \(streamgmm_fleet_leader\{")
              if p["type"] == "state-timeline"]
    assert len(leader) == 1
    texts = {m["text"] for m in leader[0]["fieldConfig"]["defaults"]["mappings"]
             for m in m["options"].values()}
    assert texts == {"member", "LEADER"}
    assert _panels_using(r"streamgmm_fleet_members\{")


def test_anomaly_ratio_panel_shows_target_and_quantiles_are_p50_p99():
    ratio = [p for p in _panels_using(r"streamgmm_anomaly_ratio\{") if p["type"] == "timeseries"]
    assert any("streamgmm_target_anomaly_ratio" in t["expr"] for p in ratio
               for t in p["targets"])
    for metric in ("batch_duration_seconds", "record_age_seconds"):
        p = _panels_using(f"streamgmm_{metric}_bucket")[0]
        qs = sorted(re.search(r"histogram_quantile\(([\d.]+)", t["expr"]).group(1)
                    for t in p["targets"])
        assert qs == ["0.5", "0.99"]


def test_heatmap_and_up_ready_panels():
    heat = [p for p in _panels_using(r"streamgmm_log_density_bucket") if p["type"] == "heatmap"]
    assert len(heat) == 1
    t = heat[0]["targets"][0]
    assert t["format"] == "heatmap" and t["legendFormat"] == "{{le}}"
    assert "sum by (le)" in t["expr"]
    assert heat[0]["options"]["calculate"] is False
    assert _panels_using(r"^up\{") and _panels_using(r"streamgmm_ready\{")


def test_drift_and_refit_annotations():
    anns = {a["name"]: a for a in load_dashboard()["annotations"]["list"]}
    assert "streamgmm_drift_events_total" in anns["Drift events"]["expr"]
    assert "streamgmm_refits_total" in anns["Refits"]["expr"]
    for name in ("Drift events", "Refits"):
        assert anns[name]["enable"] is True
        assert anns[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}


# ---------------------------------------------------------------------------------------------
# provisioning
# ---------------------------------------------------------------------------------------------

def test_datasource_provisioning():
    doc = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus" and ds["isDefault"] is True
    assert re.fullmatch(r"http://[\w-]+:\d+", ds["url"])


def test_dashboard_provisioning():
    doc = yaml.safe_load((PROVISIONING / "dashboards" / "streamgmm.yml").read_text())
    assert doc["apiVersion"] == 1
    (prov,) = doc["providers"]
    assert prov["type"] == "file" and prov["options"]["path"].startswith("/")


@needs_promtool
def test_ready_stat_is_not_ready_while_an_instance_cannot_be_scraped(tmp_path):
    """Measured with two daemons: one stopped (up 0, its streamgmm_ready series gone stale),
    the Ready stat still said READY from the other. Evaluated by promtool on the panel's own
    expression: an unscrapable instance counts as not ready; all up and ready is 1."""
    import subprocess

    dash = load_dashboard()
    panel = next(p for p in iter_panels(dash["panels"]) if p.get("title") == "Ready")
    expr = substitute(panel["targets"][0]["expr"]).replace('instance=~"streamgmm:9108"',
                                                           'instance=~".+"')
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": 'up{job="streamgmm", instance="a:9108"}', "values": "1 1 1 0 0 0"},
                {"series": 'streamgmm_ready{job="streamgmm", instance="a:9108"}',
                 "values": "1 1 1"},            # a is not scraped from 3m on: no samples
                {"series": 'up{job="streamgmm", instance="b:9108"}', "values": "1x5"},
                {"series": 'streamgmm_ready{job="streamgmm", instance="b:9108"}',
                 "values": "1x5"},
            ],
            "promql_expr_test": [
                {"expr": expr, "eval_time": "2m", "exp_samples": [{"labels": "{}", "value": 1}]},
                # 8m: a's last ready sample (2m) is stale, its up (0 at 5m) is not; b is ready
                {"expr": expr, "eval_time": "8m", "exp_samples": [{"labels": "{}", "value": 0}]},
            ],
        }],
    }
    path = tmp_path / "ready_test.yml"
    path.write_text(yaml.safe_dump(test))
    res = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, f"{expr}\n{res.stdout}\n{res.stderr}"
