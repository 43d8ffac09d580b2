"""The discrete-event simulator (virtual time, deterministic per seed) and the Gymnasium env over it."""
