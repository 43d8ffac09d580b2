"""ASET at decision time: the state encoding (state), what an agent file says about itself (meta), and the ONNX
policy with its fallback guard (policy). Imports the rest of scheduler/ only: neither training/ (where agents
are trained, evaluated and exported) nor torch.
"""
