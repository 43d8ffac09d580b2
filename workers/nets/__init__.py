"""PyTorch definitions of the zoo's detectors, each exported to ONNX by `workers.zoo`; every net
takes float RGB 0..255 NCHW and returns decoded boxes, so that one post-processing serves all."""
