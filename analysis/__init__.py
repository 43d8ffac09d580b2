"""What both environments write and read: per-query records, tallies, summaries and plots."""
