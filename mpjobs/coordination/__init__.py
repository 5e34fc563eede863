"""How processes agree without a server: file locks, leader election and change notification."""
