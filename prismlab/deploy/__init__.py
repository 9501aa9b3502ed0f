"""Deployment: ONNX export of a checkpoint's inference form, and the runtimes `prismlab bench infer` times."""
