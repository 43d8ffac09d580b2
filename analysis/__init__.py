"""What both environments write and read: per-query records, tallies, summaries, plots, calibration, the
simulator-vs-testbed fidelity comparison, and the results pages under docs/results/.
"""
