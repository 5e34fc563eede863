"""Scheduling: human durations at the edges, and triggers as pure functions of time."""
