"""What happens to a job and a schedule: pure decisions, shared by every backend.

Each function here takes records and the time and returns what to write (a
`Completion`, jobs to push, a schedule's new count); none reads or writes a store, a
file or a clock of its own. The store modules only move rows as these say, so a second
backend changes how rows move, never what happens to a job.
"""
