"""ASET in the simulator: DQN training, replay, checkpoints, ONNX export, rollouts and the evaluation against
the static policies, with the `train` and `evaluate` commands.
"""
