"""Workflows: jobs that wait for other jobs (depends_on), chains (`job.then`), groups
and chords (`app.group`, `group.then`). The rows and their resolution are the store's
(store/deps.py); this package builds what is pushed and the handles. docs/workflows.md.
"""

from mpjobs.workflows.groups import Group

__all__ = ["Group"]
