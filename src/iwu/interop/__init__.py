"""Runs in and out of iwu: the published code's checkpoints imported, members exported to ONNX or TorchScript."""
