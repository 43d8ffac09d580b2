"""The one scheduler brain shared by the simulator and the testbed.

System model (profiles, placement, per-antenna delays), feasibility, the seven static policies and the
ASET agent. Nothing here reads the wall clock: time is always a parameter.
"""
