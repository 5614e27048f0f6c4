"""The inference server: onnxruntime over what `promote` published (manifest + model files), never torch."""
