"""The live run on the emulated network: the run spec (spec, options), the worker plan (plan), the processes
(procs, faults), bring-up and teardown (orchestrate), the antenna scheduler (antenna: its state; scheduler:
its service) and its windows log (windowlog), the stream sources (source), the run dir (rundir), record
merging (merge), the report, compare. Which packages it may import: docs/architecture.md.
"""
