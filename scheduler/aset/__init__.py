"""ASET: a DQN agent that picks, every decision window, which static policy binds the new streams.

Importing this package (and `state`, `meta`, `policy`) needs no torch; training and checkpoints do.
"""
