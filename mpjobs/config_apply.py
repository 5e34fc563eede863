"""Kept so that `from mpjobs.config_apply import apply_config, check_file` still works.

The code lives in `mpjobs.config.apply` (and `mpjobs.config` exports the same names).
"""

from mpjobs.config.apply import (
    CLASS_RUNNER,
    apply_config,
    apply_jobs,
    builder_for,
    check_config,
    check_file,
    config_home_of,
)

__all__ = [
    "CLASS_RUNNER",
    "apply_config",
    "apply_jobs",
    "builder_for",
    "check_config",
    "check_file",
    "config_home_of",
]
