"""Application classes, Poisson stream arrivals with a rate schedule, and the trace format (record, replay)."""
