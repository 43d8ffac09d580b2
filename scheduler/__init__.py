"""The brain: system model, profiles, placement, feasibility, the seven static policies, the window record, and
ASET's state encoding and inference-time policy (scheduler.aset), called alike by the simulator and the live run.
It reads no clock and opens no connection: time is always a parameter.
"""
