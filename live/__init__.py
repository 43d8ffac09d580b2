"""The live run on the emulated network: the run spec (spec, options), the worker plan (plan), the processes
(procs, faults), bring-up and teardown (orchestrate), the antenna scheduler (antenna: its state; scheduler:
its service), the stream sources (source), the run dir (rundir), record merging (merge), the report, compare.

May import topologies, workload, scheduler, analysis, simulator (dry runs), workers and testbed (the network).
"""
