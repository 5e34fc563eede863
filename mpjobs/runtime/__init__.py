"""The process side: a supervisor (the arbiter) forks a coordinator and workers.

- `supervisor.py`: the arbiter: forks, reaps, dispatches signals (`handle_<signal>`).
- `reaping.py`: what a child is, how its death is told, settling its jobs, boot back-off.
- `watchdog.py`: which child to kill and why (limits, terminate-cancels, a silent leader).
- `ledger.py`: the supervisor's store work in short tries, so its loop never stalls.
- `worker.py`: a worker's boot and its claim → run → record loop.
- `batch.py` / `inflight.py`: the one-at-a-time batch and the concurrent loop.
- `executors.py`: running one job (serially, or many on an event loop).
- `journal.py`: what a worker started and finished since its last commit.
- `recovery.py`: settling the jobs of dead owners, from their journals.
- `coordinator.py`: the leader candidate and the leader's duties.
"""
