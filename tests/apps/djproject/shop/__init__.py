"""The test project app: a model the tasks write with the ORM."""
