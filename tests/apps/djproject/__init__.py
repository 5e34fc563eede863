"""A small real Django project whose tasks run on mpjobs (tests/integration/test_django.py).

Its settings read their paths from the environment (DJ_DB, DJ_HOME), so each test
module gets a fresh SQLite database and mpjobs home; DJ_PG_URL puts Django's own
database on PostgreSQL instead (the in-transaction enqueue test).
"""
