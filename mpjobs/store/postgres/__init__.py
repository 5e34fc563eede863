"""The PostgreSQL backend: one database shared by every host, for what hosts must agree on.

- rows: the same query modules as SQLite (store/jobs.py, completions.py, schedules.py),
  through `PgConnector` (connection.py), with the few statements that differ in
  queries.py (claims with SKIP LOCKED, pushes with COPY);
- liveness and leadership: session advisory locks (sessions.py, leadership.py), which
  the server frees the moment a session ends;
- the doorbell: LISTEN/NOTIFY, relayed into each host's local doorbell (relay.py).

Each host still keeps its home for what is local (journals, kill notes, the local
doorbell and the leader's heartbeat file). Needs the optional extra `mpjobs[postgres]`.
"""
