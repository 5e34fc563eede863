"""Kept so that `from mpjobs.config_apply import apply_config, check_file` still works.

The code lives in `mpjobs.config.apply` (and `mpjobs.config` exports the same names).
"""

from mpjobs.config.apply import CLASS_RUNNER as CLASS_RUNNER
from mpjobs.config.apply import apply_config as apply_config
from mpjobs.config.apply import apply_jobs as apply_jobs
from mpjobs.config.apply import builder_for as builder_for
from mpjobs.config.apply import check_config as check_config
from mpjobs.config.apply import check_file as check_file
from mpjobs.config.apply import config_home_of as config_home_of
