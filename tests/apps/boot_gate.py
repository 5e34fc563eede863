"""Imported by every worker of boot_tasks.app at boot: refuses to load while a flag file exists.

The flag's path comes from $MPJOBS_TEST_BOOT_FLAG, so a test can make the next workers
fail to boot (a broken deploy) while the running ones go on.
"""

from __future__ import annotations

import os

_flag = os.environ.get("MPJOBS_TEST_BOOT_FLAG")
if _flag and os.path.exists(_flag):
    raise RuntimeError("boot refused by the test's flag file")
