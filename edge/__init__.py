"""On-device runtime: numpy + onnxruntime (or TensorRT + pycuda). Never imports torch."""
