"""ONNX Runtime vs torch eager on the trained model: median latency per call and rows/s, side by side.

    python -m bench.onnx_vs_torch [--model models/model.pt] [--batch-sizes 1 64] [--threads N]

Needs only torch, numpy, pandas, onnx and onnxruntime (runs on the GPU machines). The model is exported
afresh into a temp folder with the project's exporter. Both CPU runtimes use the same number of
intra-op threads; CUDA runs are added when a CUDA device is really active. Backends are timed in
interleaved rounds (order rotated each round) so that drift on the machine hits them alike.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    format_load,
    format_ratio,
    machine_info,
    median,
    print_table,
    ratio,
    timestamp,
    track,
    write_results,
)

NAME = "onnx_vs_torch"
DEFAULT_MODEL = Path("models/model.pt")
TEST_SPLIT = Path("data/splits/test.parquet")
NOISY = 2.0  # a median this many times the best round means the machine was busy with something else
BATCH_POOL = 16  # distinct input batches cycled through, so no call sees the same rows twice in a row


@dataclass
class Backend:
    """One way to run the model: a callable taking a float32 batch and returning logits as numpy."""

    name: str
    device: str
    threads: int | None
    run: Callable[[np.ndarray], np.ndarray]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.onnx_vs_torch", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trained model (models/model.pt)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], metavar="N")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=None,
        help="intra-op threads for both (default: 1 and torch's)",
    )
    parser.add_argument("--rounds", type=int, default=25, help="interleaved timing rounds per batch size")
    parser.add_argument("--round-ms", type=float, default=20.0, help="time per backend per round")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_trained(path: Path) -> tuple[Any, Any]:
    """The trained tabular model and its feature spec; exits with a hint when there is none yet."""
    if not path.exists():
        print(f"error: {path} not found: run `make run` first to train a model", file=sys.stderr)
        sys.exit(1)
    from tasks.features import FeatureSpec
    from tasks.model import load_model

    trained = load_model(path)
    if trained.task != "tabular":
        print(f"error: {path} is a {trained.task} model; use `python -m bench.families`", file=sys.stderr)
        sys.exit(1)
    return trained, FeatureSpec.model_validate(trained.prep)


def default_opset() -> int:
    """export.opset from params.yaml when there is one, else the exporter's default."""
    from tasks.config import PARAMS_FILE, ExportParams, load_params

    return load_params().export.opset if PARAMS_FILE.exists() else ExportParams().opset


def input_rows(spec: Any, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Encoded rows of the test split when it exists, else synthetic rows shaped like the features."""
    if TEST_SPLIT.exists():
        import pandas as pd

        from tasks.features import encode_frame

        return encode_frame(pd.read_parquet(TEST_SPLIT), spec), str(TEST_SPLIT)
    return synthetic_rows(spec, 512, rng), "synthetic"


def synthetic_rows(spec: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """Numeric columns drawn around their training mean/std, categorical codes uniformly."""
    numeric = [rng.normal(f.mean, f.std, n) for f in spec.numeric]
    codes = [rng.integers(0, len(f.categories) + 1, n) for f in spec.categorical]
    return np.column_stack(numeric + codes).astype(np.float32)


def sample_batches(rows: np.ndarray, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.ascontiguousarray(rows[rng.integers(0, len(rows), batch)]) for _ in range(BATCH_POOL)]


def torch_backend(model: Any, device: str, threads: int) -> Backend:
    import copy

    import torch

    if device != "cpu":
        model = copy.deepcopy(model).to(device)  # .to() moves a module in place

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x).to(device))[0].cpu().numpy()

    return Backend("torch eager", device, threads if device == "cpu" else None, run)


def ort_session(path: Path, provider: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def ort_backend(session: Any, device: str, threads: int | None) -> Backend:
    def run(x: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"features": x})[0]

    return Backend("onnxruntime", device, threads, run)


def cuda_present() -> bool:
    import torch

    return torch.cuda.is_available() or Path("/dev/nvidiactl").exists()


def ort_cuda_session(path: Path, threads: int) -> tuple[Any | None, str]:
    """A CUDA session when CUDA is really active (per session.get_providers()), with a note on why not."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None, "onnxruntime has no CUDA provider"
    if not cuda_present():
        return None, "no CUDA device"
    ort.set_default_logger_severity(4)  # a failed CUDA load is reported below, not as a red log line
    try:
        session = ort_session(path, "CUDAExecutionProvider", threads)
    finally:
        ort.set_default_logger_severity(2)
    active = session.get_providers()
    if active[0] != "CUDAExecutionProvider":
        return None, f"CUDA provider listed but not active (session providers: {active})"
    return session, "active"


def cpu_backends(model: Any, onnx_path: Path, threads: int) -> list[Backend]:
    """torch and onnxruntime on the CPU with the same number of intra-op threads."""
    session = ort_session(onnx_path, "CPUExecutionProvider", threads)
    return [torch_backend(model, "cpu", threads), ort_backend(session, "cpu", threads)]


def cuda_backends(model: Any, onnx_path: Path) -> tuple[list[Backend], dict[str, str]]:
    """torch and onnxruntime on CUDA where each really has it, with a note on each."""
    import torch

    session, ort_note = ort_cuda_session(onnx_path, 1)
    backends = [torch_backend(model, "cuda", 0)] if torch.cuda.is_available() else []
    if session is not None:
        backends.append(ort_backend(session, "cuda", None))
    notes = {"ort_cuda": ort_note, "torch_cuda": "active" if torch.cuda.is_available() else "no CUDA device"}
    return backends, notes


def time_calls(backend: Backend, batches: Sequence[np.ndarray], calls: int) -> float:
    """Seconds per call, over `calls` calls cycling through the batches."""
    started = time.perf_counter()
    for i in range(calls):
        backend.run(batches[i % len(batches)])
    return (time.perf_counter() - started) / calls


def calls_per_round(backend: Backend, batches: Sequence[np.ndarray], round_s: float) -> int:
    """Enough calls to fill round_s (after a warm-up), so timer resolution does not matter."""
    time_calls(backend, batches, 2 * len(batches))
    per_call = time_calls(backend, batches, len(batches))
    return max(len(batches), int(round_s / max(per_call, 1e-7)))


def measure(
    backends: Sequence[Backend], batches: Sequence[np.ndarray], rounds: int, round_s: float, label: str
) -> list[list[float]]:
    """Per-call seconds of each backend in each round; the order rotates every round."""
    calls = [calls_per_round(b, batches, round_s) for b in backends]
    samples: list[list[float]] = [[] for _ in backends]
    for r in track(range(rounds), description=label):
        for k in range(len(backends)):
            i = (r + k) % len(backends)
            samples[i].append(time_calls(backends[i], batches, calls[i]))
    return samples


def max_logit_diff(backends: Sequence[Backend], batch: np.ndarray) -> float:
    """Largest |logit difference| of any backend from the first (torch on the CPU)."""
    reference = backends[0].run(batch)
    return max(float(np.abs(b.run(batch) - reference).max()) for b in backends)


def summarize(
    backends: Sequence[Backend], samples: Sequence[Sequence[float]], batch: int
) -> list[dict[str, Any]]:
    """One result per backend: median and best µs per call, rows/s, and torch/ort on the same device."""
    medians = {(b.name, b.device): median(s) for b, s in zip(backends, samples, strict=True)}
    results = []
    for backend, times in zip(backends, samples, strict=True):
        seconds = medians[(backend.name, backend.device)]
        torch_seconds = medians.get(("torch eager", backend.device))
        is_ort = backend.name == "onnxruntime"
        results.append(
            {
                "batch": batch,
                "backend": backend.name,
                "device": backend.device,
                "threads": backend.threads,
                "median_us": seconds * 1e6,
                "best_us": min(times) * 1e6,
                "rows_per_s": batch / seconds,
                "torch_over_ort": ratio(torch_seconds, seconds) if is_ort and torch_seconds else None,
                "rounds": len(times),
            }
        )
    return results


def is_noisy(result: dict[str, Any]) -> bool:
    return result["median_us"] > NOISY * result["best_us"]


def table_rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            str(r["batch"]),
            r["backend"],
            r["device"],
            "-" if r["threads"] is None else str(r["threads"]),
            f"{r['median_us']:,.1f}",
            f"{r['best_us']:,.1f}",
            f"{r['rows_per_s']:,.0f}",
            format_ratio(r["torch_over_ort"]) if r["torch_over_ort"] else "",
        ]
        for r in results
    ]


def export_model(trained: Any, rows: np.ndarray, folder: Path) -> Path:
    from tasks.export import export_onnx

    path = folder / "model.onnx"
    export_onnx(trained, [rows[:2]], path, default_opset())
    return path


def default_threads() -> list[int]:
    """One thread, and torch's default (the physical cores): small models often do best on one."""
    import torch

    return sorted({1, torch.get_num_threads()})


def benchmark_group(
    backends: Sequence[Backend], rows: np.ndarray, args: argparse.Namespace, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Each batch size: interleaved rounds over the backends, then one summary per backend."""
    results, diffs = [], {}
    for batch in args.batch_sizes:
        batches = sample_batches(rows, batch, rng)
        diffs[str(batch)] = max_logit_diff(backends, batches[0])
        label = f"{backends[0].device}, {backends[0].threads or '-'} threads, batch {batch}"
        samples = measure(backends, batches, args.rounds, args.round_ms / 1e3, label)
        results += summarize(backends, samples, batch)
    return results, diffs


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    trained, spec = load_trained(args.model)
    model = trained.network
    rng = np.random.default_rng(args.seed)
    rows, source = input_rows(spec, rng)
    results, diffs = [], {}
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-") as tmp:
        onnx_path = export_model(trained, rows, Path(tmp))
        for threads in args.threads or default_threads():
            torch.set_num_threads(threads)
            group, diffs[f"cpu/{threads}"] = benchmark_group(
                cpu_backends(model, onnx_path, threads), rows, args, rng
            )
            results += group
        gpu, notes = cuda_backends(model, onnx_path)
        if gpu:
            group, diffs["cuda"] = benchmark_group(gpu, rows, args, rng)
            results += group
    results.sort(key=lambda r: r["batch"])
    return {
        "name": NAME,
        "created_at": timestamp(),
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "threads_note": "torch.set_num_threads(n) and ORT intra_op_num_threads = n (inter-op 1) per row",
        "cuda": notes,
        "model": str(args.model),
        "n_features": int(rows.shape[1]),
        "inputs": source,
        "rounds": args.rounds,
        "round_ms": args.round_ms,
        "max_abs_logit_diff": diffs,
        "results": results,
    }


def print_report(report: dict[str, Any]) -> None:
    headers = ["batch", "runtime", "device", "threads", "median µs/call", "best µs", "rows/s", "torch/ort"]
    print_table("ONNX Runtime vs torch eager", headers, table_rows(report["results"]))
    print(
        f"model {report['model']} ({report['n_features']} features), inputs: {report['inputs']}, "
        f"{report['rounds']} interleaved rounds of {report['round_ms']:g} ms per runtime"
    )
    print("threads: torch.set_num_threads(n) = onnxruntime intra_op_num_threads (inter-op 1) on each row")
    print(f"CUDA: onnxruntime {report['cuda']['ort_cuda']}; torch {report['cuda']['torch_cuda']}")
    diffs = ", ".join(
        f"{group} batch {b}: {d:.1e}"
        for group, by_batch in report["max_abs_logit_diff"].items()
        for b, d in by_batch.items()
    )
    print(f"max |logit diff| vs torch CPU: {diffs}")
    print("torch/ort > 1: onnxruntime is faster by that factor (same device, median per call)")
    noisy = [
        f"batch {r['batch']} {r['backend']} {r['threads']} threads" for r in report["results"] if is_noisy(r)
    ]
    if noisy:
        load = format_load(report["machine"]["load_average"])
        print(f"noisy (median over {NOISY:g}x the best round; load average {load}): {', '.join(noisy)}")


def main(argv: Sequence[str] | None = None) -> int:
    report = run_benchmark(parse_args(argv))
    print_report(report)
    print(f"wrote {write_results(NAME, report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
