"""Python and ONNX model functions, vectorized over Arrow."""
