"""The daemon's one YAML file: schema, loading, environment overrides and cross-checks."""
from .loader import (Config, ConfigError, config_from_dict, detector_dict, is_secret_key,
                     iter_keys, load_config, resolve_path)

__all__ = ["Config", "ConfigError", "config_from_dict", "detector_dict", "is_secret_key",
           "iter_keys", "load_config", "resolve_path"]
