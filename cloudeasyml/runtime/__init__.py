"""Model runtime: export to ONNX, the artifact store, onnxruntime sessions and the batcher. Never imports db."""
