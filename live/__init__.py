"""The live run on the emulated network: run spec, worker plan, process supervision, the antenna
scheduler service, stream sources, record merging and the report.

Sits above `testbed/` (the network), `workers/`, `simulator/` (dry runs) and `scheduler/` (decisions).
"""
