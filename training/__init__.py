"""ASET's training and evaluation in the simulator: DQN, replay, checkpoints, ONNX export, rollouts.

Sits above `simulator/` and `scheduler/`; the inference-time policy an exported agent runs is
`scheduler.aset.policy`, which imports nothing from here.
"""
