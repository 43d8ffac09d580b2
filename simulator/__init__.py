"""The discrete-event simulator (virtual time, deterministic per seed), its batching model, the Gymnasium
environment over it, and the `simulate` and `trace` commands.
"""
