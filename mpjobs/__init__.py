"""mpjobs."""
