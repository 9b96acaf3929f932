"""The Detector's configuration: plain dataclasses that the YAML ``detector`` section maps onto."""
from dataclasses import asdict, dataclass, field, fields

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass
class ThresholdConfig:
    percentile: float = 1.0   # flag the lowest p% of log-densities, 0 < p < 50
    window: int = 20000       # recent scores the streaming percentile is taken over
    calibration_folds: int = 5  # k-fold held-out scores start the threshold (0: in-sample)


@dataclass
class OnlineConfig:
    enabled: bool = True
    step: str = "stepwise"    # stepwise: eta_t = (t + t0)^-alpha; exponential: half_life
    alpha: float = 0.6
    t0: float = 10.0
    half_life: float = None   # records, for step=exponential
    learn_from_anomalies: bool = False
    batch_size: int = 1000    # records per online-EM step (all records, flagged or not)


@dataclass
class DriftConfig:
    enabled: bool = True
    expected_run_length: float = 10_000_000  # mean records between false alarms (stationary)
    feature_tests: bool = True
    reference_records: int = 2000
    block_size: int = 50


@dataclass
class RefitConfig:
    window: int = 20000            # ring buffer of recent records a refit may use
    min_records: int = 2000        # post-change records before a drift refit (<= window)
    cooldown_records: int = 0      # records after a swap before another refit may start
    max_pending_records: int = 10000  # records scored while a background refit runs, at most


@dataclass
class DetectorConfig:
    n_components: object = "auto"  # int >= 1 or "auto" (best BIC up to max_components)
    max_components: int = 8
    covariance_type: str = "full"
    reg_covar: float = 1e-6
    warmup_records: int = 2000
    random_state: int = 0
    min_component_weight: float = 0.02
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    refit: RefitConfig = field(default_factory=RefitConfig)

    @classmethod
    def from_dict(cls, d=None):
        """Build from a (possibly partial) nested dict; unknown keys or bad values raise."""
        d = dict(d or {})
        sub = {"threshold": ThresholdConfig, "online": OnlineConfig, "drift": DriftConfig,
               "refit": RefitConfig}
        kwargs = {}
        names = {f.name for f in fields(cls)}
        for key, value in d.items():
            if key not in names:
                raise ValueError(f"detector.{key}: unknown key")
            if key in sub:
                sub_names = {f.name for f in fields(sub[key])}
                for k2 in (value or {}):
                    if k2 not in sub_names:
                        raise ValueError(f"detector.{key}.{k2}: unknown key")
                kwargs[key] = sub[key](**(value or {}))
            else:
                kwargs[key] = value
        cfg = cls(**kwargs)
        cfg.validate()
        return cfg

    def to_dict(self):
        return asdict(self)

    def changes(self, other):
        """[(dotted key, this value, other's value)] for every setting that differs."""
        def flat(d, prefix=""):
            for k, v in d.items():
                if isinstance(v, dict):
                    yield from flat(v, f"{prefix}{k}.")
                else:
                    yield f"{prefix}{k}", v
        mine, theirs = dict(flat(self.to_dict())), dict(flat(other.to_dict()))
        return [(k, mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]]

    def validate(self):
        """Raise ValueError naming the key of the first invalid value."""
        def bad(key, expected, got):
            raise ValueError(f"detector.{key}: expected {expected}, got {got!r}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v):
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not (self.n_components == "auto" or (is_int(self.n_components)
                                                and self.n_components >= 1)):
            bad("n_components", 'an integer >= 1 or "auto"', self.n_components)
        if not is_int(self.max_components) or self.max_components < 1:
            bad("max_components", "an integer >= 1", self.max_components)
        if self.covariance_type not in COVARIANCE_TYPES:
            bad("covariance_type", f"one of {list(COVARIANCE_TYPES)}", self.covariance_type)
        if not is_num(self.reg_covar) or self.reg_covar < 0:
            bad("reg_covar", "a number >= 0", self.reg_covar)
        k = self.max_components if self.n_components == "auto" else self.n_components
        if not is_int(self.warmup_records) or self.warmup_records < max(2 * k, 10):
            bad("warmup_records", f"an integer >= {max(2 * k, 10)}", self.warmup_records)
        if self.random_state is not None and not is_int(self.random_state):
            bad("random_state", "an integer or null", self.random_state)
        if not is_num(self.min_component_weight) or not 0 <= self.min_component_weight < 0.5:
            bad("min_component_weight", "a number in [0, 0.5)", self.min_component_weight)
        t = self.threshold
        if not is_num(t.percentile) or not 0 < t.percentile < 50:
            bad("threshold.percentile", "a number in (0, 50)", t.percentile)
        if not is_int(t.window) or t.window < 100:
            bad("threshold.window", "an integer >= 100", t.window)
        if not is_int(t.calibration_folds) or not (t.calibration_folds in (0, 1)
                                                  or 2 <= t.calibration_folds <= 10):
            bad("threshold.calibration_folds", "an integer in [0, 10]", t.calibration_folds)
        o = self.online
        if not isinstance(o.enabled, bool):
            bad("online.enabled", "true or false", o.enabled)
        if o.step not in ("stepwise", "exponential"):
            bad("online.step", '"stepwise" or "exponential"', o.step)
        if not is_num(o.alpha) or not 0.5 < o.alpha <= 1:
            bad("online.alpha", "a number in (0.5, 1]", o.alpha)
        if not is_num(o.t0) or o.t0 < 0:
            bad("online.t0", "a number >= 0", o.t0)
        if o.step == "exponential" and (not is_num(o.half_life) or o.half_life <= 0):
            bad("online.half_life", "a number of records > 0 (required when step is "
                "exponential)", o.half_life)
        if not isinstance(o.learn_from_anomalies, bool):
            bad("online.learn_from_anomalies", "true or false", o.learn_from_anomalies)
        if not is_int(o.batch_size) or o.batch_size < 1:
            bad("online.batch_size", "an integer >= 1", o.batch_size)
        dr = self.drift
        if not isinstance(dr.enabled, bool):
            bad("drift.enabled", "true or false", dr.enabled)
        if not is_num(dr.expected_run_length) or dr.expected_run_length < 100:
            bad("drift.expected_run_length", "a number of records >= 100",
                dr.expected_run_length)
        if not isinstance(dr.feature_tests, bool):
            bad("drift.feature_tests", "true or false", dr.feature_tests)
        if not is_int(dr.reference_records) or dr.reference_records < 100:
            bad("drift.reference_records", "an integer >= 100", dr.reference_records)
        if not is_int(dr.block_size) or not 5 <= dr.block_size <= dr.reference_records // 10:
            bad("drift.block_size", "an integer in [5, reference_records / 10]", dr.block_size)
        r = self.refit
        if not is_int(r.window) or r.window < max(2 * k, 10):
            bad("refit.window", f"an integer >= {max(2 * k, 10)}", r.window)
        if not is_int(r.min_records) or r.min_records < max(2 * k, 10):
            bad("refit.min_records", f"an integer >= {max(2 * k, 10)} (capped at refit.window)",
                r.min_records)
        if not is_int(r.cooldown_records) or r.cooldown_records < 0:
            bad("refit.cooldown_records", "an integer >= 0", r.cooldown_records)
        if not is_int(r.max_pending_records) or r.max_pending_records < 0:
            bad("refit.max_pending_records", "an integer >= 0", r.max_pending_records)
