"""Application classes, Poisson stream arrivals with a rate schedule, the trace format (record, replay) and
the workload arguments every command shares (args.py).
"""
