"""Record decoding: every bad-record reason, nested paths, imputation, keys/timestamps, CSV."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamgmm.service.config import config_from_dict
from streamgmm.service.records import (
    REASONS,
    compile_spec,
    decode_batch,
    decode_csv_rows,
    missing_csv_columns,
    to_epoch_seconds,
)

SPEC = {"features": ["amount", "latency_ms", "sensor.temp"]}


def rec(**kw):
    base = {"amount": 1.0, "latency_ms": 2.0, "sensor": {"temp": 3.0}}
    base.update(kw)
    return json.dumps(base, allow_nan=True)


def only_error(value, spec=SPEC):
    dec = decode_batch([value], spec)
    assert len(dec) == 0 and dec.X.shape == (0, 3)
    assert len(dec.errors) == 1
    i, reason, message = dec.errors[0]
    assert i == 0 and reason in REASONS
    return reason, message


def test_reasons_are_exactly_the_metric_label_values():
    assert REASONS == ("invalid_json", "not_object", "missing_field", "non_numeric",
                       "non_finite", "too_large")


def test_good_records_bytes_and_str_with_nested_paths():
    dec = decode_batch([rec().encode(), rec(amount=5, latency_ms=-1.5, sensor={"temp": 0})],
                       SPEC)
    assert dec.X.dtype == np.float64
    np.testing.assert_array_equal(dec.X, [[1, 2, 3], [5, -1.5, 0]])
    np.testing.assert_array_equal(dec.good_index, [0, 1])
    assert dec.errors == [] and dec.n_input == 2 and len(dec) == 2


@pytest.mark.parametrize("value, reason, fragment", [
    (b'{"amount": 1', "invalid_json", "invalid JSON"),
    ("not json at all", "invalid_json", "invalid JSON"),
    (b"\xff\xfe\xfa{}", "invalid_json", ""),
    (b"", "invalid_json", "empty"),
    (None, "invalid_json", "empty"),
    ("[1, 2, 3]", "not_object", "got array"),
    ("42", "not_object", "got number"),
    ('"text"', "not_object", "got string"),
    ("null", "not_object", "got null"),
    (json.dumps({"amount": 1, "sensor": {"temp": 3}}), "missing_field", '"latency_ms"'),
    (json.dumps({"amount": 1, "latency_ms": 2}), "missing_field", '"sensor.temp"'),
    (json.dumps({"amount": 1, "latency_ms": 2, "sensor": 7}), "missing_field", '"sensor.temp"'),
    (json.dumps({"amount": 1, "latency_ms": 2, "sensor": [3]}), "missing_field", "sensor.temp"),
    (rec(latency_ms=None), "missing_field", "is null"),
    (rec(amount="3.5"), "non_numeric", '"3.5" (string)'),
    (rec(amount=True), "non_numeric", "true (boolean)"),
    (rec(amount=[1]), "non_numeric", "(array)"),
    (rec(sensor={"temp": {"c": 1}}), "non_numeric", "(object)"),
    (rec(amount=float("nan")), "non_finite", "NaN"),
    (rec(latency_ms=float("inf")), "non_finite", "Infinity"),
    ('{"amount": 1e999, "latency_ms": 2, "sensor": {"temp": 3}}', "non_finite", "amount"),
    ('{"amount": 1, "latency_ms": 2, "sensor": {"temp": ' + "9" * 400 + "}}", "non_finite",
     "out of float64 range"),
])
def test_each_bad_record_gets_its_reason(value, reason, fragment):
    got_reason, message = only_error(value)
    assert got_reason == reason
    assert fragment in message


def test_too_large_counts_bytes_not_characters():
    spec = {**SPEC, "max_bytes": 80}
    small = rec()
    assert len(small.encode()) <= 80
    assert decode_batch([small], spec).errors == []
    big_text = json.dumps({"amount": 1, "latency_ms": 2, "sensor": {"temp": 3},
                           "note": "é" * 20})  # ascii-escaped by json.dumps: 6 chars each
    assert only_error(big_text, spec)[0] == "too_large"
    utf8 = '{"amount": 1, "latency_ms": 2, "sensor": {"temp": 3}, "n": "' + "€" * 10 + '"}'
    assert len(utf8) <= 80 < len(utf8.encode())
    reason, message = only_error(utf8, spec)
    assert reason == "too_large" and str(len(utf8.encode())) in message
    assert only_error(utf8.encode(), spec)[0] == "too_large"


def test_mixed_batch_keeps_input_alignment_and_sorted_errors():
    values = [rec(amount=0), "oops", rec(amount=1), rec(amount=float("nan")), rec(amount=2),
              rec(amount="x"), rec(amount=3)]
    dec = decode_batch(values, SPEC)
    np.testing.assert_array_equal(dec.good_index, [0, 2, 4, 6])
    np.testing.assert_array_equal(dec.X[:, 0], [0, 1, 2, 3])
    assert [(i, r) for i, r, _ in dec.errors] == [(1, "invalid_json"), (3, "non_finite"),
                                                   (5, "non_numeric")]
    assert dec.error_counts() == {"invalid_json": 1, "non_finite": 1, "non_numeric": 1}


def test_literal_dotted_key_is_a_fallback_for_flat_records():
    dec = decode_batch([json.dumps({"amount": 1, "latency_ms": 2, "sensor.temp": 9})], SPEC)
    np.testing.assert_array_equal(dec.X, [[1, 2, 9]])


def test_deeper_nesting():
    spec = {"features": ["a.b.c", "x"]}
    dec = decode_batch([json.dumps({"a": {"b": {"c": 4}}, "x": 1}),
                        json.dumps({"a": {"b": {"d": 4}}, "x": 1})], spec)
    np.testing.assert_array_equal(dec.X, [[4, 1]])
    assert dec.errors[0][:2] == (1, "missing_field") and '"a.b.c"' in dec.errors[0][2]


def test_impute_replaces_missing_null_non_numeric_and_non_finite_only_for_that_field():
    spec = {**SPEC, "impute": {"latency_ms": -1.0}}
    values = [
        json.dumps({"amount": 1, "sensor": {"temp": 3}}),          # missing
        rec(latency_ms=None),                                        # null
        rec(latency_ms="slow"),                                      # non-numeric
        rec(latency_ms=float("nan")),                                # non-finite
        rec(latency_ms=7),                                           # fine
        rec(amount=None),                                            # other field: rejected
        "[1]",                                                       # never imputed
    ]
    dec = decode_batch(values, spec)
    np.testing.assert_array_equal(dec.X[:, 1], [-1, -1, -1, -1, 7])
    np.testing.assert_array_equal(dec.good_index, [0, 1, 2, 3, 4])
    assert [(i, r) for i, r, _ in dec.errors] == [(5, "missing_field"), (6, "not_object")]


def test_keys_and_timestamps_follow_the_good_rows():
    spec = {**SPEC, "key_field": "meta.id", "timestamp_field": "ts"}
    values = [
        rec(meta={"id": "a"}, ts=1_700_000_000),             # epoch seconds
        rec(meta={"id": 7}, ts=1_700_000_000_500),           # epoch milliseconds
        "bad",
        rec(ts="2024-05-01T00:00:00Z"),                      # ISO, no key
        rec(meta={"id": "d"}, ts="2024-05-01T02:00:00+02:00"),
        rec(meta={"id": "e"}, ts="yesterday"),               # unparseable -> NaN, record kept
        rec(meta={"id": "f"}, ts=True),
        rec(meta={"id": "g"}, ts="1700000000"),              # numeric string
    ]
    dec = decode_batch(values, spec)
    np.testing.assert_array_equal(dec.good_index, [0, 1, 3, 4, 5, 6, 7])
    assert dec.keys == ["a", 7, None, "d", "e", "f", "g"]
    ts = dec.timestamps
    assert ts[0] == 1_700_000_000 and ts[1] == pytest.approx(1_700_000_000.5)
    assert ts[2] == 1_714_521_600 and ts[3] == 1_714_521_600
    assert math.isnan(ts[4]) and math.isnan(ts[5])
    assert ts[6] == 1_700_000_000


def test_without_key_or_timestamp_fields_the_lists_are_still_aligned():
    dec = decode_batch([rec(), "x", rec()], SPEC)
    assert dec.keys == [None, None] and dec.timestamps.shape == (2,)
    assert np.isnan(dec.timestamps).all()


def test_epoch_unit_guess():
    assert to_epoch_seconds(1_700_000_000) == 1_700_000_000
    assert to_epoch_seconds(1_700_000_000_000) == 1_700_000_000
    assert to_epoch_seconds(1_700_000_000_000_000) == 1_700_000_000
    assert to_epoch_seconds(1_700_000_000_000_000_000) == 1_700_000_000
    assert to_epoch_seconds("2024-05-01 00:00:00") == 1_714_521_600
    assert math.isnan(to_epoch_seconds(None)) and math.isnan(to_epoch_seconds([1]))


def test_empty_batch_and_all_bad_batch_shapes():
    assert decode_batch([], SPEC).X.shape == (0, 3)
    dec = decode_batch(["x", "y"], SPEC)
    assert dec.X.shape == (0, 3) and dec.good_index.shape == (0,) and len(dec.errors) == 2


def test_spec_from_the_config_section_and_cached():
    cfg = config_from_dict({"records": {"features": ["amount", "sensor.temp"],
                                        "impute": {"amount": 0}, "max_bytes": 100}},
                           environ={})
    spec = compile_spec(cfg.records)
    assert spec.features == ("amount", "sensor.temp") and spec.max_bytes == 100
    assert compile_spec(cfg.records) is spec and compile_spec(cfg) is spec
    dec = decode_batch([json.dumps({"sensor": {"temp": 2}})], cfg.records)
    np.testing.assert_array_equal(dec.X, [[0, 2]])
    with pytest.raises(ValueError, match="impute"):
        compile_spec({"features": ["a"], "impute": {"b": 1}})


def test_feature_names_with_quotes_are_safe_in_the_compiled_getter():
    name = "we'ird\"]+__import__('os')"
    dec = decode_batch([json.dumps({name: 1.5})], {"features": [name]})
    np.testing.assert_array_equal(dec.X, [[1.5]])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=False, allow_infinity=False, width=64),
                          st.integers(-10**15, 10**15)), min_size=1, max_size=20))
def test_decoding_is_exact_for_any_finite_numbers(rows):
    values = [json.dumps({"a": a, "n": {"b": b}}) for a, b in rows]
    dec = decode_batch(values, {"features": ["a", "n.b"]})
    expected = np.array([[a, float(b)] for a, b in rows])
    np.testing.assert_array_equal(dec.X, expected)
    assert dec.errors == []


# ---------------------------------------------------------------------------------------- CSV

HEADER = ["id", "amount", "latency_ms", "sensor.temp", "ts"]


def test_csv_numeric_strings_are_numbers_and_keys_timestamps_come_from_columns():
    spec = {**SPEC, "key_field": "id", "timestamp_field": "ts"}
    rows = [["a", "1.5", "2", " 3e2 ", "1700000000"], ["b", "-4", "0.5", "6", "2024-05-01"]]
    dec = decode_csv_rows(HEADER, rows, spec)
    np.testing.assert_array_equal(dec.X, [[1.5, 2, 300], [-4, 0.5, 6]])
    assert dec.keys == ["a", "b"]
    assert dec.timestamps[0] == 1_700_000_000 and dec.timestamps[1] == 1_714_521_600


def test_csv_bad_rows_get_reasons():
    rows = [
        ["a", "1", "2", "3", "0"],
        ["b", "one", "2", "3", "0"],           # non_numeric
        ["c", "1", "", "3", "0"],              # empty cell -> missing_field
        ["d", "1", "2", "nan", "0"],           # non_finite
        ["e", "1", "2", "inf", "0"],           # non_finite
        ["f", "1", "2"],                       # short row -> missing_field
        ["g", "1", "2", "3", "0", "extra"],    # long row -> not_object
        [],                                    # empty -> not_object
        ["h", "true", "2", "3", "0"],          # non_numeric
    ]
    dec = decode_csv_rows(HEADER, rows, SPEC)
    np.testing.assert_array_equal(dec.good_index, [0])
    assert [(i, r) for i, r, _ in dec.errors] == [
        (1, "non_numeric"), (2, "missing_field"), (3, "non_finite"), (4, "non_finite"),
        (5, "missing_field"), (6, "not_object"), (7, "not_object"), (8, "non_numeric")]
    assert '"sensor.temp"' in dec.errors[2][2]
    # the header has the column: the row is short (not "missing column")
    assert dec.errors[4][2] == 'CSV row too short: no cell for column "sensor.temp"'


def test_csv_impute_and_missing_columns():
    spec = {**SPEC, "impute": {"latency_ms": 9}}
    dec = decode_csv_rows(["amount", "sensor.temp"], [["1", "2"], ["x", "2"]], spec)
    np.testing.assert_array_equal(dec.X, [[1, 9, 2]])
    assert dec.errors[0][:2] == (1, "non_numeric")
    assert missing_csv_columns(["amount", "sensor.temp"], spec) == []
    assert missing_csv_columns(["amount"], SPEC) == ["latency_ms", "sensor.temp"]


def test_csv_too_large():
    dec = decode_csv_rows(["amount", "latency_ms", "sensor.temp"],
                          [["1", "2", "3"], ["1" * 50, "2", "3"]], {**SPEC, "max_bytes": 20})
    np.testing.assert_array_equal(dec.good_index, [0])
    assert dec.errors[0][:2] == (1, "too_large")


def test_csv_large_clean_batch_takes_the_vectorised_path():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5000, 3))
    rows = [[f"k{i}"] + [repr(float(v)) for v in r] + ["0"] for i, r in enumerate(data)]
    dec = decode_csv_rows(HEADER, rows, SPEC)
    np.testing.assert_array_equal(dec.X, data)
    assert dec.errors == []


# ------------------------------------------- the fast JSON path gives json.loads's own outcome

def _outcome(f, raw):
    try:
        return ("ok", f(raw))
    except RecursionError:
        return ("recursion",)
    except ValueError as exc:
        return ("error", type(exc).__name__, str(exc))


TRICKY_JSON = [b'{"a":1}', b'{"a":1}  \n', b'{"a":1} x', b'{"a":1}{"b":2}', b'{"a":',
               b'{"a":NaN}', b'{"a":-Infinity}', b'\xef\xbb\xbf{"a":1}', b'{"a":"\xff"}',
               b' {"a":1}', b"[1,2]", b'{"a":1}\x00', '{"a":1}', '{"a":"\u00e9"}'.encode(),
               b'{"a":1e400}', b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
               b'{"a":1, "a":2}', b'{"\\ud800":1}', b"{}\t\r", b"{", b"{}", "{\"a\": [1, {}]} ",
               '{"a":1}\u2028', b'{"a":1}\xc2\xa0', "\ufeff{}".encode("utf-16")]


@pytest.mark.parametrize("raw", TRICKY_JSON)
def test_fast_json_path_matches_json_loads(raw):
    from streamgmm.service.records import _loads_object

    assert _outcome(_loads_object, raw) == _outcome(json.loads, raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=60).map(lambda b: b"{" + b))
def test_fast_json_path_matches_json_loads_on_any_bytes(raw):
    from streamgmm.service.records import _loads_object

    assert _outcome(_loads_object, raw) == _outcome(json.loads, raw)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=5), st.one_of(st.floats(), st.integers(), st.text(),
                                                      st.none(), st.booleans()), max_size=5),
       st.sampled_from(["", " ", "\n", " x"]))
def test_fast_json_path_matches_json_loads_on_objects(obj, tail):
    from streamgmm.service.records import _loads_object

    for raw in ((json.dumps(obj) + tail), (json.dumps(obj) + tail).encode()):
        a, b = _outcome(_loads_object, raw), _outcome(json.loads, raw)
        if b[0] == "ok":  # (NaN != NaN: compare the re-encoded values)
            assert a[0] == "ok" and json.dumps(a[1]) == json.dumps(b[1]), raw
        else:
            assert a == b, raw


def _same_outcome(raw):
    from streamgmm.service.records import _loads_object

    a, b = _outcome(_loads_object, raw), _outcome(json.loads, raw)
    if b[0] == "ok":  # same values and types (repr: NaN != NaN, -0.0 == 0.0, 1 == 1.0)
        assert a[0] == "ok" and repr(a[1]) == repr(b[1]), raw
    else:
        assert a == b, raw


@pytest.mark.parametrize("depth", [1, 100, 255, 256, 257, 600, 980, 990, 993, 994, 995, 996,
                                   997, 998, 1000, 1200])
@pytest.mark.parametrize("kind", ["object", "array", "padded"])
def test_fast_json_path_matches_json_loads_near_the_recursion_limit(depth, kind):
    """msgspec gives up a few levels deeper than json: records that deep go to json."""
    if kind == "object":
        raw = '{"a":' * depth + "1" + "}" * depth
    elif kind == "array":
        raw = '{"a":' + "[" * depth + "1" + "]" * depth + "}"
    else:  # long enough to skip the length shortcut, few brackets
        raw = '{"pad":"' + "x" * 2000 + '","a":' + "[" * depth + "]" * depth + "}"
    _same_outcome(raw)
    _same_outcome(raw.encode())


@pytest.mark.parametrize("raw, fast", [
    ('{"a":' * 200 + "1" + "}" * 200, True),
    ('{"a":' * 300 + "1" + "}" * 300, False),
    ('{"a":' + "[" * 300 + "]" * 300 + "}", False),
    ('{"pad":"' + "x" * 5000 + '","a":[[1]]}', True),
    ('{"pad":"' + "x" * 5000 + '","a":' + "[" * 260 + "]" * 260 + "}", False),
], ids=["shallow", "deep-object", "deep-array", "long-shallow", "long-deep"])
def test_only_records_far_from_the_recursion_limit_take_msgspec(monkeypatch, raw, fast):
    """msgspec gives up a few levels deeper than json (both count against the recursion
    limit, from wherever they are called): a deeply nested record must take json's path, or a
    record json rejects as nested too deeply could be accepted."""
    from streamgmm.service import records

    used = []
    real = records._msgspec_decode
    monkeypatch.setattr(records, "_msgspec_decode", lambda r: used.append(1) or real(r))
    for r in (raw, raw.encode()):
        used.clear()
        records._loads_object(r)
        assert bool(used) == fast


NUMBERS = ["0", "-0", "-0.0", "1", "1.5", "1e5", "1E+5", "1e-400", "1e400", "-1e400", "1e308",
           "2.2250738585072011e-308", "4.9e-324", "9007199254740993", "18446744073709551615",
           "18446744073709551616", "-9223372036854775809", "1" + "0" * 400,
           "123456789012345678901234567890.5", "0.1000000000000000055511151231257827",
           "01", ".5", "1.", "+1", "--1", "1e", "0x10", "NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("number", NUMBERS)
def test_fast_json_path_matches_json_loads_on_numbers(number):
    for raw in (f'{{"a":{number}}}', f'{{"a":[{number}],"b":{number}}}'):
        _same_outcome(raw)
        _same_outcome(raw.encode())


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-10**40, max_value=10**40).map(str),
    st.tuples(st.integers(min_value=1, max_value=2**60), st.integers(-1100, 1000)).map(
        lambda t: f"{t[0]}e{t[1]}"),
    st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?([eE][+-]?[0-9]{1,3})?",
                  fullmatch=True)))
def test_fast_json_path_parses_every_number_like_json(number):
    _same_outcome(f'{{"a":{number}}}'.encode())


JSON_TOKENS = [b'\\"', b'\\\\', b'\\/', b'\\b', b'\\n', b'\\t', b'\\u00e9', b'\\ud83d\\ude00',
               b'\\ud800', b'\\udc00', b'\\u0000', b'\\x', b'\\', b'"', b'a', b'\xc3\xa9',
               b'\xf0\x9f\x98\x80', b'\xed\xa0\x80', b'\xff', b'\x01', b'\x7f', b' ', b'{',
               b'}', b'[', b']', b',', b':', b'1', b'-', b'.', b'e', b'true', b'false', b'null',
               b'NaN', b'Infinity', b'\t', b'\n', b'"k":', b'"k":1,', b'"k":"v"']


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(JSON_TOKENS), max_size=14),
       st.sampled_from([b'{"k":"%s"}', b'{"k":%s}', b"{%s}", b"%s", b'{"a":1}%s',
                        b'{"k":"v","k":%s}']))
def test_fast_json_path_matches_json_loads_on_token_soup(tokens, template):
    raw = template.replace(b"%s", b"".join(tokens))
    _same_outcome(raw)
    try:
        _same_outcome(raw.decode("utf-8"))
    except UnicodeDecodeError:
        pass


# ------------------------- the typed fast path gives the general path's outcome, record by record

def _general(spec_dict):
    """The same spec without the typed fast path (a fresh RecordSpec, not the cached one)."""
    from streamgmm.service import records

    s = records.compile_spec(spec_dict)
    spec = records.RecordSpec(s.features, s.key_field, s.timestamp_field, s.max_bytes, s.impute)
    spec.__dict__["_typed"] = None
    return spec


def _assert_same_decoding(values, spec_dict):
    from streamgmm.service import records

    fast = records.compile_spec(spec_dict)
    a, b = decode_batch(values, fast), decode_batch(values, _general(spec_dict))
    assert a.X.shape == b.X.shape and np.array_equal(a.X, b.X)
    assert np.array_equal(np.signbit(a.X), np.signbit(b.X))
    assert a.good_index.tolist() == b.good_index.tolist()
    assert a.errors == b.errors
    assert repr(a.keys) == repr(b.keys)
    assert np.array_equal(a.timestamps, b.timestamps, equal_nan=True)
    return fast


TYPED_SPEC = {"features": ["amount", "latency_ms", "sensor.temp", "sensor.rpm"],
              "key_field": "id", "timestamp_field": "ts"}
_values = st.one_of(
    st.floats(allow_nan=False), st.integers(min_value=-10**400, max_value=10**400),
    st.booleans(), st.none(), st.text(max_size=4), st.just(-0.0), st.just(0),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(["temp", "rpm", "x"]),
                                                         st.floats(), max_size=3))
_json_text = st.one_of(st.text(max_size=6).map(json.dumps),
                       st.sampled_from(['"\\ud800"', '"\\x"', '"\xff"', "NaN", "-Infinity",
                                        "01", '"\x01"', "1e400", "[" * 300 + "]" * 300,
                                        '"\\u0061"', "-0", "1E2"]))


@st.composite
def _records(draw):
    obj = {}
    for name in ("amount", "latency_ms", "id", "ts", "extra", "sensor.temp"):
        if draw(st.booleans()):
            obj[name] = draw(_values)
    if draw(st.integers(0, 4)):
        obj["sensor"] = {k: draw(_values) for k in draw(st.lists(
            st.sampled_from(["temp", "rpm", "other"]), max_size=3))}
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 2))):  # duplicate keys and raw JSON json.dumps never writes
        key = draw(st.sampled_from(["amount", "id", "sensor", "ts", "x", "\\u0061mount"]))
        value = draw(st.one_of(_json_text, _values.map(lambda v: json.dumps(v))))
        pos = draw(st.sampled_from(["start", "end"]))
        if text == "{}":
            text = f'{{"{key}":{value}}}'
        elif pos == "start":
            text = f'{{"{key}":{value},' + text[1:]
        else:
            text = text[:-1] + f',"{key}":{value}}}'
    if draw(st.booleans()):
        return text
    raw = text.encode()
    if raw != b"{}" and draw(st.booleans()):  # bytes that are not UTF-8, in a skipped value
        bad = draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xe9t\xe9"]))
        raw = raw[:-1] + b',"skipped":"' + bad + b'"}'
    return raw


@settings(max_examples=500, deadline=None)
@given(st.lists(_records(), min_size=1, max_size=8))
def test_typed_fast_path_decodes_exactly_like_the_general_path(values):
    _assert_same_decoding(values, TYPED_SPEC)


@settings(max_examples=200, deadline=None)
@given(st.lists(_records(), min_size=1, max_size=8))
def test_typed_fast_path_with_imputes_and_no_meta_fields(values):
    _assert_same_decoding(values, {"features": ["amount", "sensor.temp"],
                                   "impute": {"amount": -1.0}})


_PLAIN = ('{"amount":%s,"latency_ms":%s,"sensor":{"temp":%s,"rpm":%s},"id":%s,"ts":%s}')
_num = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**6, 10**6))


@st.composite
def _plain_record(draw):
    nums = [json.dumps(draw(_num)) for _ in range(4)]
    return (_PLAIN % (*nums, json.dumps(draw(st.text(max_size=3))),
                      json.dumps(draw(_num)))).encode()


# records that decode alone one way and, newline-joined with their neighbours, another
_BOUNDARY = [b'{"amount":1,\n"latency_ms":2,"sensor":{"temp":3,"rpm":4}}',
             b'{"amount":1,"latency_ms":2,"sensor":{"temp":3,"rpm":4},"id":"a',
             b'b"}', b'{"amount":1,"latency_ms":2,"sensor":{"temp":3,"rpm":4}}\n',
             b'{"amount":1,"latency_ms":2,"sensor":{"temp":3,"rpm":4}},{"amount":1}',
             b"  ", b"\n", b"[", b"]", b"", b'{"amount":1e400,"latency_ms":2,'
             b'"sensor":{"temp":3,"rpm":4}}', b'{"amount":1,"latency_ms":2,"sensor":'
             b'{"temp":3,"rpm":4},"id":"\xc3\xa9"}', b"{" * 300 + b"}" * 300]


@settings(max_examples=300, deadline=None)
@given(st.lists(_plain_record(), min_size=2, max_size=12),
       st.lists(st.tuples(st.integers(0, 12), st.sampled_from(_BOUNDARY)), max_size=2))
def test_whole_batch_decoding_matches_the_general_path(values, inserts):
    """A batch of plain records takes one msgspec call (`_decode_whole_batch`); one that
    cannot (a newline inside a record, a record split or doubled across the join, blank,
    non-ASCII, out of range, deep) falls back, and either way the outcome is the general
    path's, record by record."""
    from streamgmm.service import records

    for i, raw in inserts:
        values.insert(min(i, len(values)), raw)
    _assert_same_decoding(values, TYPED_SPEC)
    whole = records._decode_whole_batch(values, records.compile_spec(TYPED_SPEC))
    if not inserts:
        assert whole is not None  # plain records: the one-call path is taken


def test_typed_fast_path_is_used_for_plain_records_only():
    fast = _assert_same_decoding(
        [b'{"amount":1,"latency_ms":2,"sensor":{"temp":3,"rpm":4},"id":"r1","ts":5}'],
        TYPED_SPEC)
    assert fast._typed is not None
    # shapes the typed path cannot express keep the general path only
    from streamgmm.service import records

    for spec in ({"features": ["a", "a.b"]}, {"features": ["a.b"], "key_field": "a"},
                 {"features": ["x"], "key_field": "m.id"}, {"features": ['q"uote']},
                 {"features": ["caf\u00e9"]}):
        assert records.compile_spec(spec)._typed is None, spec
