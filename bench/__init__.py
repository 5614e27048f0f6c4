"""Benchmarks: side-by-side measurements in one run, printed as tables with ratios and saved as JSON.

`python -m bench.pipeline` (needs prefect and dvc) and `python -m bench.onnx_vs_torch` (torch and
onnxruntime only). Results land in bench/results/<name>.json.
"""
