"""ASET in the simulator: DQN training, replay, checkpoints, ONNX export, rollouts and the evaluation against
the static policies, with the `train` and `evaluate` commands. May import topologies, workload, scheduler,
analysis and simulator; what an exported agent runs (scheduler.aset.policy) imports nothing from here.
"""
