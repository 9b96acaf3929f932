"""Config schema: defaults, validation messages, env overrides, interpolation, paths, secrets.

Every config error class is also run through the real CLI (``python -m streamgmm check-config``)
to check exit code 2, the key path on stderr and no traceback.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamgmm.service.config import loader as config_mod
from streamgmm.service.config import (
    ConfigError,
    config_from_dict,
    detector_dict,
    iter_keys,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
MIN = {"records": {"features": ["amount", "latency_ms"]}}


def cfg_of(d=None, environ=None, **kw):
    base = {"records": {"features": ["amount", "latency_ms"]}}
    for k, v in (d or {}).items():
        base[k] = v
    return config_from_dict(base, environ=environ or {}, **kw)


def err_of(d, environ=None, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as ei:
        config_from_dict(d, environ=environ or {}, **kw)
    return ei.value


# ------------------------------------------------------------------------------- defaults

def test_defaults_match_the_documented_schema():
    cfg = cfg_of()
    assert cfg.source.type == "kafka" and cfg.source.format == "auto" and not cfg.source.follow
    assert cfg.kafka.bootstrap_servers == ("localhost:9092",)
    assert cfg.kafka.topics == ("events",) and cfg.kafka.topic_pattern is None
    assert cfg.kafka.group_id == "streamgmm" and cfg.kafka.auto_offset_reset == "earliest"
    assert cfg.kafka.max_poll_records == 1000 and cfg.kafka.poll_timeout_ms == 500
    assert cfg.kafka.session_timeout_ms == 10000 and cfg.kafka.heartbeat_interval_ms == 3000
    assert cfg.kafka.security == {} and cfg.kafka.consumer == {} and cfg.kafka.producer == {}
    assert cfg.records.max_bytes == 1048576 and cfg.records.impute == {}
    assert cfg.records.key_field is None and cfg.records.timestamp_field is None
    assert (cfg.sink.type, cfg.sink.topic, cfg.sink.emit) == ("kafka", "anomalies", "anomalies")
    assert (cfg.dead_letter.type, cfg.dead_letter.topic) == ("kafka", "events.dlq")
    d = cfg.detector
    assert d.n_components == "auto" and d.max_components == 8 and d.covariance_type == "full"
    assert d.reg_covar == 1e-6 and d.warmup_records == 2000 and d.random_state == 0
    assert d.threshold.percentile == 1.0
    assert (d.online.enabled, d.online.step, d.online.alpha, d.online.t0) == \
        (True, "stepwise", 0.6, 10.0)
    assert d.online.half_life is None and d.online.learn_from_anomalies is False
    assert (d.drift.enabled, d.drift.expected_run_length, d.drift.feature_tests) == \
        (True, 10000000, True)
    assert (d.refit.window, d.refit.cooldown_records) == (20000, 0)
    assert cfg.model.path is None and cfg.model.trusted is False
    assert cfg.checkpoint.path is None and cfg.checkpoint.interval_seconds == 60
    assert (cfg.metrics.enabled, cfg.metrics.host, cfg.metrics.port,
            cfg.metrics.ratio_window) == (True, "0.0.0.0", 9108, 10000)
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "plain")
    assert cfg.shutdown_timeout_seconds == 10


def test_to_dict_has_every_schema_key_in_order_and_round_trips():
    cfg = cfg_of({"kafka": {"security": {"sasl_plain_password": "pw"}}})
    d = cfg.to_dict()
    assert list(d) == ["source", "kafka", "records", "sink", "dead_letter", "detector", "model", "fleet",
                       "checkpoint", "metrics", "logging", "shutdown_timeout_seconds"]
    assert d["kafka"]["security"]["sasl_plain_password"] == "pw"
    assert yaml.safe_load(yaml.safe_dump(d)) == d  # plain data only
    assert config_from_dict(d, environ={}) == cfg
    assert len(iter_keys()) > 50


def test_config_is_frozen_with_attribute_access():
    cfg = cfg_of()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.detector.threshold.percentile = 5  # type: ignore[misc]
    assert cfg.records.features == ("amount", "latency_ms")


def test_detector_dict_is_plain_and_has_exactly_the_schema_keys():
    dd = detector_dict(cfg_of({"detector": {"n_components": 3, "threshold": {"percentile": 2}}}))
    assert set(dd) == {"n_components", "max_components", "covariance_type", "reg_covar",
                       "warmup_records", "random_state", "min_component_weight", "robust_dof", "threshold",
                       "online", "drift", "refit"}
    assert dd["threshold"] == {"percentile": 2.0, "window": 20000, "calibration_folds": 5}
    assert set(dd["online"]) == {"enabled", "step", "alpha", "t0", "half_life",
                                 "learn_from_anomalies", "batch_size"}
    assert set(dd["drift"]) == {"enabled", "expected_run_length", "feature_tests",
                                "reference_records", "block_size"}
    assert set(dd["refit"]) == {"window", "min_records", "cooldown_records", "max_pending_records"}
    assert dd["n_components"] == 3 and type(dd["online"]) is dict


def test_detector_dict_is_accepted_by_the_detectors_own_config():
    from streamgmm.detection import config as detcfg
    dd = detector_dict(cfg_of({"detector": {"online": {"step": "exponential",
                                                          "half_life": 500}}}))
    dc = detcfg.DetectorConfig.from_dict(dd)
    assert dc.online.half_life == 500 and dc.online.step == "exponential"


# ----------------------------------------------------------------------- validation errors

@pytest.mark.parametrize("d, key, fragment", [
    ({"detector": {"treshold": {"percentile": 1}}}, "detector.treshold",
     'did you mean "threshold"'),
    ({"records": {"feature": ["a"]}}, "records.feature", 'did you mean "features"'),
    ({"sinks": {}}, "sinks", 'did you mean "sink"'),
    ({"kafka": {"xyzzy": 1}}, "kafka.xyzzy", "valid keys: bootstrap_servers"),
    ({"detector": {"threshold": {"percentile": "high"}}}, "detector.threshold.percentile",
     'expected a number in (0, 50), got "high"'),
    ({"detector": {"threshold": {"percentile": 50}}}, "detector.threshold.percentile",
     "expected a number in (0, 50), got 50"),
    ({"detector": {"threshold": {"percentile": 0}}}, "detector.threshold.percentile", "(0, 50)"),
    ({"detector": {"online": {"alpha": 0.5}}}, "detector.online.alpha", "(0.5, 1]"),
    ({"detector": {"online": {"alpha": 1.01}}}, "detector.online.alpha", "(0.5, 1]"),
    ({"detector": {"max_components": True}}, "detector.max_components", "got true"),
    ({"kafka": {"max_poll_records": 1.5}}, "kafka.max_poll_records", "an integer >= 1"),
    ({"metrics": {"port": 70000}}, "metrics.port", "[0, 65535]"),
    ({"metrics": {"enabled": "yes please"}}, "metrics.enabled", "true or false"),
    ({"metrics": {"enabled": 1}}, "metrics.enabled", "true or false, got 1"),
    ({"detector": {"covariance_type": "fulll"}}, "detector.covariance_type",
     'did you mean "full"'),
    ({"detector": {"n_components": "many"}}, "detector.n_components", '"auto"'),
    ({"detector": {"n_components": 0}}, "detector.n_components", ">= 1"),
    ({"detector": {"reg_covar": float("nan")}}, "detector.reg_covar", "a number >= 0"),
    ({"detector": {"robust_dof": 0}}, "detector.robust_dof", "> 0"),
    ({"detector": {"robust_dof": "t"}}, "detector.robust_dof", "number"),
    ({"source": {"type": "ftp"}}, "source.type", "one of kafka, file, stdin"),
    ({"logging": {"format": "xml"}}, "logging.format", "one of plain, json"),
    ({"kafka": {"topics": []}}, "kafka.topics", "an empty list"),
    ({"kafka": {"security": ["a"]}}, "kafka.security", "expected a mapping"),
    ({"detector": "fast"}, "detector", "expected a mapping"),
    ({"kafka": {"topic_pattern": "("}}, "kafka.topic_pattern", "invalid regular expression"),
    ({"kafka": {"topics": ["a"], "topic_pattern": "b.*"}}, "kafka.topic_pattern", "not both"),
    ({"kafka": {"topics": None}}, "kafka.topics", "topic_pattern"),
    ({"kafka": {"heartbeat_interval_ms": 20000}}, "kafka.heartbeat_interval_ms",
     "lower than kafka.session_timeout_ms"),
    ({"source": {"type": "file"}}, "source.path", "required when source.type is file"),
    ({"sink": {"type": "file"}}, "sink.path", "required when sink.type is file"),
    ({"dead_letter": {"type": "file"}}, "dead_letter.path", "required"),
    ({"sink": {"topic": "events"}}, "sink.topic", "must not be an input topic"),
    ({"kafka": {"topic_pattern": "^events.*"}}, "dead_letter.topic",
     '"events.dlq", which kafka.topic_pattern "^events.*" matches'),
    ({"kafka": {"topic_pattern": "^(events|anomalies)$"}}, "sink.topic", "matches"),
    ({"sink": {"type": "file", "path": "/tmp/o.jsonl"}, "checkpoint": {"path": "/tmp/o.jsonl"}},
     "checkpoint.path", "must differ from sink.path"),
    ({"source": {"type": "file", "path": "/tmp/in.jsonl"},
      "checkpoint": {"path": "/tmp/in.jsonl"}}, "checkpoint.path", "must differ from source.path"),
    ({"detector": {"refit": {"window": 10**11}}}, "detector.refit.window", "[2, 1000000]"),
    ({"detector": {"threshold": {"window": 10**11}}}, "detector.threshold.window",
     "[100, 10000000]"),
    ({"metrics": {"ratio_window": 10**11}}, "metrics.ratio_window", "[1, 10000000]"),
    ({"kafka": {"bootstrap_servers": ["127.0.0.1:90x92"]}}, "kafka.bootstrap_servers[0]",
     "host:port"),
    ({"kafka": {"bootstrap_servers": ["a:9092", "b:0"]}}, "kafka.bootstrap_servers[1]",
     "from 1 to 65535"),
    ({"detector": {"online": {"step": "exponential"}}}, "detector.online.half_life",
     "required"),
    ({"detector": {"warmup_records": 15}}, "detector.warmup_records",
     "2 * detector.max_components"),
    ({"detector": {"refit": {"window": 3}}}, "detector.refit.window", ">="),
    ({"records": {"features": ["a", "a"]}}, "records.features[1]", "duplicate"),
    ({"records": {"features": ["a..b"]}}, "records.features[0]", "dotted field path"),
    ({"records": {"features": ["a"], "impute": {"b": 0}}}, "records.impute.b",
     "not one of records.features"),
    ({"records": {"features": ["a"], "impute": {"a": "zero"}}}, "records.impute.a",
     "a finite number"),
    # illegal Kafka topic names: kafka-python refuses every send to them, for ever
    ({"dead_letter": {"topic": "payments events dlq"}}, "dead_letter.topic",
     "a Kafka topic name"),
    ({"sink": {"topic": "anomalies/eu"}}, "sink.topic", "a Kafka topic name"),
    ({"kafka": {"topics": ["events", "é"]}}, "kafka.topics[1]", "a Kafka topic name"),
    ({"checkpoint": {"topic": "x" * 250}}, "checkpoint.topic", "at most 249"),
    ({"fleet": {"topic": ".."}}, "fleet.topic", "a Kafka topic name"),
    ({"sink": {"topic": "out"}, "dead_letter": {"topic": "out"}}, "dead_letter.topic",
     "must differ from sink.topic"),
])
def test_bad_values_name_the_key_and_what_was_expected(d, key, fragment):
    full = {"records": {"features": ["amount", "latency_ms"]}}
    full.update(d)
    err = err_of(full)
    assert err.key_path == key
    assert str(err).startswith(f"{key}: ")
    assert fragment in str(err)


def test_unknown_key_is_reported_before_a_missing_required_key():
    err = err_of({"records": {"featurs": ["a"]}})
    assert str(err) == 'records.featurs: unknown key; did you mean "features"?'


def test_records_features_is_required():
    err = err_of({})
    assert err.key_path == "records.features" and "required" in err.message
    assert "features: [" in err.message  # shows an example


def test_config_error_str_and_pickle():
    import pickle
    e = ConfigError("a.b", "bad")
    assert str(e) == "a.b: bad"
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.key_path, e2.message) == ("a.b", "bad")


# ------------------------------------------------------------------------ lenient inputs

def test_numbers_are_normalised_and_yaml_exponent_strings_accepted():
    cfg = cfg_of({"detector": {"reg_covar": "1e-6", "threshold": {"percentile": 2},
                               "refit": {"window": 3.0e4}}})
    assert cfg.detector.reg_covar == 1e-6  # PyYAML reads 1e-6 as a string
    assert cfg.detector.threshold.percentile == 2.0
    assert isinstance(cfg.detector.refit.window, int) and cfg.detector.refit.window == 30000
    err = err_of({**MIN, "detector": {"reg_covar": "0.5"}})  # other quoted numbers: no
    assert err.key_path == "detector.reg_covar"


def test_string_lists_accept_comma_separated_text_and_enums_are_case_insensitive():
    cfg = cfg_of({"kafka": {"bootstrap_servers": "a:9092, b:9092"},
                  "logging": {"level": "debug", "format": "JSON"}})
    assert cfg.kafka.bootstrap_servers == ("a:9092", "b:9092")
    assert cfg.logging.level == "DEBUG" and cfg.logging.format == "json"


def test_topic_pattern_alone_replaces_the_default_topics():
    cfg = cfg_of({"kafka": {"topic_pattern": r"^events-.*"}})
    assert cfg.kafka.topics is None and cfg.kafka.topic_pattern == r"^events-.*"
    # IPv6 and bare host names are addresses too
    cfg = cfg_of({"kafka": {"bootstrap_servers": ["[::1]:9092", "kafka", "::1"]}})
    assert len(cfg.kafka.bootstrap_servers) == 3


def test_an_override_meant_as_a_list_that_is_not_valid_yaml_names_the_variable():
    from streamgmm.service.config import config_from_dict
    with pytest.raises(ConfigError, match="STREAMGMM__RECORDS__FEATURES: is not a valid YAML"):
        config_from_dict({"records": {"features": ["a"]}},
                         environ={"STREAMGMM__RECORDS__FEATURES": "[amount, latency_ms"})
    # other text that YAML cannot parse stays a string (a password, say)
    cfg = config_from_dict({"records": {"features": ["a"]}},
                           environ={"STREAMGMM__KAFKA__SECURITY__SASL_PLAIN_PASSWORD":
                                    "@weird: pass: word"})
    assert cfg.kafka.security["sasl_plain_password"] == "@weird: pass: word"


def test_topics_not_needed_when_nothing_reads_kafka():
    cfg = cfg_of({"source": {"type": "stdin"}, "kafka": {"topics": None},
                  "sink": {"type": "stdout"}, "dead_letter": {"type": "stdout"}})
    assert cfg.kafka.topics is None


def test_warmup_check_uses_fixed_n_components():
    cfg = cfg_of({"detector": {"n_components": 2, "warmup_records": 10, "refit": {
        "window": 20000}}})
    assert cfg.detector.warmup_records == 10


# ------------------------------------------------------------------- environment overrides

def test_env_overrides_are_yaml_typed_case_insensitive_and_nested():
    env = {
        "STREAMGMM__DETECTOR__THRESHOLD__PERCENTILE": "2.5",
        "streamgmm__kafka__topics": "[a, b]",
        "STREAMGMM__Metrics__Enabled": "false",
        "STREAMGMM__SHUTDOWN_TIMEOUT_SECONDS": "30",
        "STREAMGMM__KAFKA__SECURITY__SASL_PLAIN_PASSWORD": "pw",
        "STREAMGMM__RECORDS__IMPUTE__LATENCY_MS": "0",
        "STREAMGMM__DETECTOR__N_COMPONENTS": "3",
    }
    cfg = cfg_of(environ=env)
    assert cfg.detector.threshold.percentile == 2.5
    assert cfg.kafka.topics == ("a", "b")
    assert cfg.metrics.enabled is False
    assert cfg.shutdown_timeout_seconds == 30
    assert cfg.kafka.security == {"sasl_plain_password": "pw"}
    assert cfg.records.impute == {"latency_ms": 0.0}  # matched to the feature's spelling
    assert cfg.detector.n_components == 3


def test_env_overrides_win_over_the_file_and_are_validated():
    cfg = cfg_of({"metrics": {"port": 1234}}, environ={"STREAMGMM__METRICS__PORT": "4321"})
    assert cfg.metrics.port == 4321
    err = err_of(MIN, environ={"STREAMGMM__METRICS__PORT": "lots"})
    assert str(err) == ('metrics.port: expected an integer in [0, 65535], got "lots" '
                        '(set by environment variable STREAMGMM__METRICS__PORT)')


def test_env_override_of_unknown_key_is_an_error_naming_it():
    err = err_of(MIN, environ={"STREAMGMM__DETECTOR__TRESHOLD__PERCENTILE": "2"})
    assert err.key_path == "detector.treshold"
    assert "STREAMGMM__DETECTOR__TRESHOLD__PERCENTILE" in str(err)
    assert 'did you mean "threshold"' in str(err)
    err = err_of(MIN, environ={"STREAMGMM__METRICS__PORT__X": "2"})
    assert err.key_path == "metrics.port" and "not a section" in err.message
    err = err_of(MIN, environ={"STREAMGMM__NOPE": "1"})
    assert err.key_path == "nope"


def test_unrelated_environment_variables_are_ignored():
    cfg = cfg_of(environ={"STREAMGMM_TEST_BROKER_BIN": "/x", "PATH": "/bin"})
    assert cfg == cfg_of()


# --------------------------------------------------------------------------- interpolation

def test_interpolation_with_defaults_escapes_and_typed_whole_values():
    d = {"kafka": {"bootstrap_servers": ["${BROKER}:9092"], "group_id": "g-${ENV:-dev}",
                   "security": {"sasl_plain_password": "${PW}"}},
         "metrics": {"port": "${PORT:-9200}", "enabled": "${METRICS:-true}"},
         "logging": {"level": "INFO"}}
    d["kafka"]["client_id"] = "lit-$${NOT_A_VAR}"  # (a topic name could not hold "${")
    cfg = cfg_of(d, environ={"BROKER": "k1", "PW": "12345"})
    assert cfg.kafka.bootstrap_servers == ("k1:9092",)
    assert cfg.kafka.group_id == "g-dev"
    assert cfg.kafka.security["sasl_plain_password"] == "12345"  # stays a string
    assert cfg.metrics.port == 9200 and cfg.metrics.enabled is True
    assert cfg.kafka.client_id == "lit-${NOT_A_VAR}"


def test_undefined_variable_without_default_names_the_key():
    err = err_of({**MIN, "kafka": {"security": {"sasl_plain_password": "${KAFKA_PW}"}}})
    assert err.key_path == "kafka.security.sasl_plain_password"
    assert "KAFKA_PW" in err.message


def test_interpolation_applies_to_env_override_values():
    cfg = cfg_of(environ={"STREAMGMM__KAFKA__GROUP_ID": "grp-${TEAM}", "TEAM": "fraud"})
    assert cfg.kafka.group_id == "grp-fraud"


# ---------------------------------------------------------------------------------- secrets

@pytest.mark.parametrize("section, value, message", [
    ("consumer", {"fetch_max_bytez": 1}, 'not a KafkaConsumer setting .*"fetch_max_bytes"'),
    ("producer", {"linger_ms": "abc"}, r"expected int .* got \"abc\""),
    ("producer", {"enable_idempotence": 1}, "expected bool"),
    ("security", {"sasl_mechanismz": "PLAIN"}, '"sasl_mechanism"'),
    ("security", {"fetch_max_bytes": 5}, "every kafka-python client"),  # a consumer-only key
])
def test_kafka_client_maps_are_checked_against_kafka_python(section, value, message):
    key = f"kafka.{section}.{next(iter(value))}"
    with pytest.raises(ConfigError, match=message) as exc:
        cfg_of({"kafka": {section: value}})
    assert str(exc.value).startswith(key + ":")


def test_kafka_client_numbers_given_as_text_become_numbers():
    cfg = cfg_of({"kafka": {"producer": {"linger_ms": "50"}, "consumer": {
        "fetch_max_wait_ms": 100, "ssl_check_hostname": False}}})
    assert cfg.kafka.producer == {"linger_ms": 50}
    assert cfg.kafka.consumer == {"fetch_max_wait_ms": 100, "ssl_check_hostname": False}


def test_secrets_are_masked_only_when_asked():
    cfg = cfg_of({"kafka": {"security": {"sasl_plain_password": "hunter2", "ssl_password": "x",
                                         "sasl_mechanism": "PLAIN"},
                            "consumer": {"ssl_password": "t"}}})
    masked = cfg.to_dict(mask_secrets=True)
    assert masked["kafka"]["security"] == {"sasl_plain_password": "***", "ssl_password": "***",
                                           "sasl_mechanism": "PLAIN"}
    assert masked["kafka"]["consumer"] == {"ssl_password": "***"}
    assert "hunter2" not in yaml.safe_dump(masked)
    assert cfg.to_dict()["kafka"]["security"]["sasl_plain_password"] == "hunter2"


# ------------------------------------------------------------------------------------ paths

def test_relative_paths_resolve_against_the_config_file_directory(tmp_path, monkeypatch):
    sub = tmp_path / "conf"
    sub.mkdir()
    f = sub / "c.yaml"
    f.write_text(yaml.safe_dump({
        "source": {"type": "file", "path": "data/in.jsonl"},
        "records": {"features": ["a"]},
        "sink": {"type": "file", "path": "../out/anomalies.jsonl"},
        "checkpoint": {"path": "~/ck.npz"},
        "kafka": {"security": {"ssl_cafile": "tls/ca.pem"}},
    }))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(f), environ={})
    assert cfg.source.path == str(sub / "data" / "in.jsonl")
    assert cfg.sink.path == str(tmp_path / "out" / "anomalies.jsonl")
    assert cfg.checkpoint.path == os.path.expanduser("~/ck.npz")
    assert cfg.kafka.security["ssl_cafile"] == str(sub / "tls" / "ca.pem")
    cfg2 = config_from_dict({"records": {"features": ["a"]},
                             "model": {"path": "m.npz"}}, environ={}, base_dir=sub)
    assert cfg2.model.path == str(sub / "m.npz")


def test_package_prefix_points_into_the_shipped_data_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = cfg_of({"source": {"type": "file", "path": "package:demo.jsonl"}})
    assert Path(cfg.source.path).is_file()
    assert Path(cfg.source.path).parent == Path(config_mod.__file__).resolve().parents[2] / \
        "data"


# ------------------------------------------------------------------------------- YAML files

def test_yaml_errors_give_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("records:\n  features: [a, b\nsink: {}\n")
    with pytest.raises(ConfigError) as ei:
        load_config(f, environ={})
    assert str(f) in str(ei.value) and "line" in str(ei.value)


def test_yaml_top_level_must_be_a_mapping(tmp_path):
    f = tmp_path / "list.yaml"
    f.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(f, environ={})


def test_yaml_duplicate_keys_are_rejected(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("records:\n  features: [a]\nmetrics:\n  port: 1\nmetrics:\n  port: 2\n")
    with pytest.raises(ConfigError,
                       match=r"line 5.*duplicate key \"metrics\" \(first at line 3\)"):
        load_config(f, environ={})


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_example_kafka_config_is_valid_with_the_password_set():
    cfg = load_config(REPO / "config" / "streamgmm.yaml",
                      environ={"KAFKA_SASL_PASSWORD": "s3cret"})
    assert cfg.source.type == "kafka"
    assert cfg.kafka.security["sasl_plain_password"] == "s3cret"
    assert cfg.to_dict(mask_secrets=True)["kafka"]["security"]["sasl_plain_password"] == "***"
    with pytest.raises(ConfigError) as ei:
        load_config(REPO / "config" / "streamgmm.yaml", environ={})
    assert ei.value.key_path == "kafka.security.sasl_plain_password"


def test_demo_config_is_valid_from_any_directory_and_matches_the_packaged_copy(tmp_path,
                                                                                monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(REPO / "config" / "demo.yaml", environ={})
    assert cfg.source.type == "file" and Path(cfg.source.path).is_file()
    assert cfg.sink.type == "stdout"
    packaged = load_config("package:demo.yaml", environ={})
    assert packaged == cfg
    assert (REPO / "config" / "demo.yaml").read_text() == \
        (REPO / "streamgmm" / "data" / "demo.yaml").read_text()


def test_demo_data_has_the_documented_shape():
    from streamgmm.service.records import decode_batch

    path = REPO / "streamgmm" / "data" / "demo.jsonl"
    lines = path.read_bytes().splitlines()
    assert len(lines) == 6000
    dec = decode_batch(lines, {"features": ["amount", "latency_ms", "sensor.temp"]})
    reasons = sorted(r for _, r, _ in dec.errors)
    assert reasons == sorted(["invalid_json", "not_object", "missing_field", "non_numeric",
                              "non_finite"])
    assert dec.X.shape == (5995, 3)


# -------------------------------------------------------------- through the real CLI (exit 2)

def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("STREAMGMM__")}
    env.update(extra)
    return env


def run_cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "streamgmm", *args], capture_output=True,
                          text=True, env=env if env is not None else _clean_env(), cwd=cwd,
                          timeout=120)


CLI_ERROR_CASES = {
    "yaml_syntax": ("records:\n  features: [a, b\n", {}, "line"),
    "not_mapping": ("- just\n- a list\n", {}, "expected a mapping"),
    "unknown_key": ("records: {features: [a]}\ndetector: {treshold: {percentile: 1}}\n", {},
                    'detector.treshold: unknown key; did you mean "threshold"?'),
    "wrong_type": ("records: {features: [a]}\ndetector: {threshold: {percentile: high}}\n", {},
                   'detector.threshold.percentile: expected a number in (0, 50), got "high"'),
    "out_of_range": ("records: {features: [a]}\ndetector: {online: {alpha: 0.3}}\n", {},
                     "detector.online.alpha:"),
    "bool_as_int": ("records: {features: [a]}\nkafka: {max_poll_records: true}\n", {},
                    "kafka.max_poll_records: expected an integer >= 1, got true"),
    "missing_required": ("sink: {type: stdout}\n", {}, "records.features: required"),
    "topics_and_pattern": ("records: {features: [a]}\nkafka: {topics: [x], topic_pattern: y}\n",
                           {}, "kafka.topic_pattern:"),
    "file_source_no_path": ("records: {features: [a]}\nsource: {type: file}\n", {},
                            "source.path: required"),
    "file_sink_no_path": ("records: {features: [a]}\nsink: {type: file}\n", {},
                          "sink.path: required"),
    "half_life": ("records: {features: [a]}\ndetector: {online: {step: exponential}}\n", {},
                  "detector.online.half_life: required"),
    "warmup": ("records: {features: [a]}\ndetector: {warmup_records: 4}\n", {},
               "detector.warmup_records:"),
    "undefined_var": ("records: {features: [a]}\nkafka: {group_id: '${NO_SUCH_VAR_X}'}\n", {},
                      "kafka.group_id: environment variable NO_SUCH_VAR_X is not set"),
    "env_unknown_key": ("records: {features: [a]}\n", {"STREAMGMM__METRICS__PROT": "1"},
                        'metrics.prot: unknown key (environment variable '
                        'STREAMGMM__METRICS__PROT); did you mean "port"?'),
    "env_bad_value": ("records: {features: [a]}\n", {"STREAMGMM__LOGGING__LEVEL": "LOUD"},
                      "logging.level: expected one of DEBUG"),
    "duplicate_key": ("records: {features: [a]}\nsink: {}\nsink: {}\n", {}, "duplicate key"),
}


@pytest.mark.parametrize("case", sorted(CLI_ERROR_CASES))
def test_check_config_exits_2_naming_the_key_without_traceback(tmp_path, case):
    text, env, expected = CLI_ERROR_CASES[case]
    f = tmp_path / f"{case}.yaml"
    f.write_text(text)
    r = run_cli("check-config", str(f), env=_clean_env(**env))
    assert r.returncode == 2, r.stderr
    assert expected in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""


def test_check_config_missing_file_exits_2(tmp_path):
    r = run_cli("check-config", str(tmp_path / "absent.yaml"))
    assert r.returncode == 2 and "absent.yaml" in r.stderr and "Traceback" not in r.stderr


def test_run_with_a_bad_config_exits_2_before_starting(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("records: {features: [a]}\nmetrics: {port: -1}\n")
    r = run_cli("run", "--config", str(f))
    assert r.returncode == 2 and "metrics.port" in r.stderr and "Traceback" not in r.stderr


def test_check_config_prints_effective_yaml_with_secrets_masked(tmp_path):
    r = run_cli("check-config", "--offline", str(REPO / "config" / "streamgmm.yaml"),
                env=_clean_env(KAFKA_SASL_PASSWORD="hunter2",
                               STREAMGMM__DETECTOR__THRESHOLD__PERCENTILE="0.5"))
    assert r.returncode == 0, r.stderr
    assert "hunter2" not in r.stdout
    eff = yaml.safe_load(r.stdout)
    assert eff["kafka"]["security"]["sasl_plain_password"] == "***"
    assert eff["detector"]["threshold"]["percentile"] == 0.5
    assert eff["records"]["features"] == ["amount", "latency_ms", "merchant.risk_score"]
    # the printed config is itself a valid config (with the secret filled back in)
    eff["kafka"]["security"]["sasl_plain_password"] = "x"
    assert config_from_dict(eff, environ={}).detector.threshold.percentile == 0.5


def test_legal_topic_names_of_every_kind_are_taken():
    cfg = cfg_of({"kafka": {"topics": ["payments.events_v2-EU", "x" * 249]},
                  "sink": {"topic": "_anomalies"}, "dead_letter": {"topic": "a..b"}})
    assert cfg.kafka.topics == ("payments.events_v2-EU", "x" * 249)
    assert (cfg.sink.topic, cfg.dead_letter.topic) == ("_anomalies", "a..b")
