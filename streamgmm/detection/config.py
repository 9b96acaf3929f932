"""The Detector's settings, declared once (default, type and range, doc line).

The YAML ``detector`` section, its validation, ``Detector(config)`` and the rows of
docs/configuration.md all come from these declarations (see ``streamgmm.schema``).
"""
from dataclasses import asdict, dataclass

from ..schema import (Bool, Choice, ConfigError, Int, NComponents, Num, Optional, build,
                      check_values, section, setting)

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@dataclass(frozen=True)
class ThresholdConfig:
    """Anomaly threshold: the lowest p% of recent log-densities."""

    percentile: float = setting(Num(0, 50, lo_open=True, hi_open=True), 1.0,
                                "flag the lowest p% of log-densities, 0 < p < 50")
    window: int = setting(Int(100, 10_000_000), 20000,
                          "recent scores the streaming percentile is taken over")
    calibration_folds: int = setting(Int(0, 10), 5,
                                     "k-fold held-out scores start the threshold at each "
                                     "(re)fit, so it does not jump when in-sample scores "
                                     "leave the window (leave-one-out on windows of fewer "
                                     "than 10 rows per fold; 0 or 1: in-sample)")


@dataclass(frozen=True)
class OnlineConfig:
    """Online EM: step size (t + t0)^-alpha (stepwise) or constant-rate forgetting."""

    enabled: bool = setting(Bool(), True, "keep the model current with online EM")
    step: str = setting(Choice("stepwise", "exponential"), "stepwise",
                        "`stepwise`: η_t = (t + t0)^−α per mini-batch; `exponential`: "
                        "constant forgetting")
    alpha: float = setting(Num(0.5, 1, lo_open=True), 0.6,
                           "0.5 < α ≤ 1 (smaller follows change faster)")
    t0: float = setting(Num(0), 10.0, "step-size delay, in mini-batches")
    half_life: float = setting(Optional(Num(0, lo_open=True)), None,
                               "`exponential`: records after which old data weighs half")
    learn_from_anomalies: bool = setting(
        Bool(), False, "learn from gross outliers too (scores below the threshold's far-out "
        "fence, for at least half of the members); flagged records above the fence are "
        "learned either way")
    batch_size: int = setting(Int(1), 1000, "records per online-EM step, counting every "
                              "record (flagged or not), whatever the call or poll size")


@dataclass(frozen=True)
class DriftConfig:
    """Drift detection: CUSUM tests on the log-density, the anomaly rate and each feature."""

    enabled: bool = setting(Bool(), True, "run the drift detectors (and refit on drift)")
    expected_run_length: int = setting(
        Int(100), 10_000_000,
        "mean records between false alarms on stationary data (sets the CUSUM thresholds; "
        "a lower bound by Wald's inequality)")
    feature_tests: bool = setting(Bool(), True, "also test each feature's mean")
    reference_records: int = setting(Int(100), 2000,
                                     "records after each (re)fit that calibrate the tests")
    block_size: int = setting(Int(5), 50, "records per block mean fed to the CUSUMs "
                              "(at most `reference_records` / 10)")


@dataclass(frozen=True)
class RefitConfig:
    """Batch refit on a window of recent records after drift, at most once per cooldown."""

    window: int = setting(Int(2, 1_000_000), 20000,
                          "most recent records a refit may use (ring buffer)")
    min_records: int = setting(Int(2), 2000, "post-change records needed before a drift refit "
                               "starts (capped at the window)")
    cooldown_records: int = setting(Int(0), 0, "records after a model swap before another "
                                    "refit may start")
    max_pending_records: int = setting(Int(0), 2000, "records scored while a background "
                                       "refit runs before the caller waits for it (a fast "
                                       "replay cannot starve a refit: it lands within "
                                       "min_records + this after a change)")


def at_next_fit(key: str) -> bool:
    """Whether a changed setting (a dotted key of ``DetectorConfig.changes``) takes effect on
    a ready detector only at its next fit or refit (``Detector.reconfigure``): the model's
    structure and how a fit is made; the threshold, online, drift and refit sections (but
    ``threshold.calibration_folds``) apply at once."""
    return "." not in key or key == "threshold.calibration_folds"


@dataclass(frozen=True)
class DetectorConfig:
    """Every Detector setting; ``from_dict`` validates a (partial) nested dict."""

    n_components: object = setting(NComponents(), "auto", "mixture components, or `auto`: "
                                   "the best BIC among 1..`max_components`")
    max_components: int = setting(Int(1), 8,
                                  "upper bound for `auto` (a fixed `n_components` may be larger)")
    covariance_type: str = setting(Choice(*COVARIANCE_TYPES), "full",
                                   "`full`, `tied`, `diag` or `spherical`; a full "
                                   "covariance costs d^2 per record and d^3 per online step: "
                                   "for records of hundreds of features `diag` (1,555 "
                                   "features: 14,000 against 250 records/s)")
    reg_covar: float = setting(Num(0), 1e-6, "added to every covariance's diagonal (on "
                               "standardised features)")
    warmup_records: int = setting(Int(2), 2000, "records gathered and fitted on when there is "
                                  "no model yet")
    random_state: int = setting(Optional(Int(0)), 0, "seed of the EM initialisations")
    min_component_weight: float = setting(
        Num(0, 0.5, hi_open=True), 0.02,
        "at fit, a component lighter than this is taken for a cluster of anomalies: its "
        "records are dropped and the model refitted")
    robust_dof: float = setting(
        Optional(Num(0, lo_open=True)), None,
        "`auto` only: fit the full-covariance members as robust M-estimates (Student-t weights "
        "with these degrees of freedom, e.g. 5, floored at 0.25 so that a mode that persists "
        "in the stream is still learned), for warm-ups that may hold clusters of "
        "anomalies (a few %); robust full members count in full in the lowest-z combination, "
        "plain ones at half weight; null: plain EM. See BENCHMARKS.md, \"Robust full "
        "members\" and \"Full members at half weight\"")
    threshold: ThresholdConfig = section(ThresholdConfig)
    online: OnlineConfig = section(OnlineConfig)
    drift: DriftConfig = section(DriftConfig)
    refit: RefitConfig = section(RefitConfig)

    @classmethod
    def from_dict(cls, d=None):
        """Build from a (possibly partial) nested dict; unknown keys or bad values raise
        ConfigError (a ValueError) naming the key."""
        cfg = build(cls, d, "detector")
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
        """Each value against its declaration, then the checks that span several keys."""
        check_values(self, "detector")
        k = self.n_components if isinstance(self.n_components, int) else self.max_components
        which = "n_components" if isinstance(self.n_components, int) else "max_components"
        least = max(2 * k, 10)
        for key, value in (("warmup_records", self.warmup_records),
                           ("refit.window", self.refit.window),
                           ("refit.min_records", self.refit.min_records)):
            if value < least:
                raise ConfigError(f"detector.{key}", f"must be >= max(10, 2 * detector."
                                  f"{which}) = {least}, got {value}")
        if self.online.step == "exponential" and self.online.half_life is None:
            raise ConfigError("detector.online.half_life", "required (a number of records "
                              "> 0) when detector.online.step is exponential")
        d = self.drift
        if d.block_size > d.reference_records // 10:
            raise ConfigError("detector.drift.block_size", f"must be <= detector.drift."
                              f"reference_records / 10 ({d.reference_records // 10}), got "
                              f"{d.block_size}")
        return self
