"""Model zoo for etch: PyTorch builders exported to ONNX, small trained digits models, LLM-shaped
MatMul models, and accuracy helpers. Start at `models.zoo` (`MODELS`, `build`, `model_path`)."""
