"""Every family's networks: inference latency (torch vs ONNX Runtime fp32 vs INT8) and training-loop overhead.

    python -m bench.families [--quick] [--out bench/results/families.json] [--threads N]

Inference: torch eager (inference_mode) against onnxruntime fp32 and dynamically quantized INT8 (the
project's exporter and tasks.export.make_variant), on the CPU with the same number of intra-op threads,
at batch 1 and 32, timed in interleaved rounds (order rotated each round); median per call.
Training: tasks.train.fit against a minimal hand-written loop over the same model, data, batch size,
seed and epochs, each side run several times alternating; median samples/s and the pipeline's overhead.

Weights are random (latency and throughput do not depend on training) except MiniLM's encoder, which
is the pretrained all-MiniLM-L6-v2 under a random head. Data are synthetic. Needs only torch, numpy,
pandas, onnx, onnxruntime, tokenizers, transformers, pydantic and pyyaml (rich when installed).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    RESULTS_DIR,
    format_load,
    format_ratio,
    machine_info,
    median,
    meets,
    print_table,
    ratio,
    timestamp,
    track,
    verdict,
    write_results,
)

NAME = "families"
SEQ = 32  # tokens per text; every synthetic text fills it, so the text family's padding trim is a no-op
INFER_BATCHES = (1, 32)
BATCH_POOL = 8  # distinct input batches cycled through
VAL_SHARE = 0.1  # validation rows, as a share of the training rows, on both sides of the training bench
GOAL_OVERHEAD_PCT = 10.0
NOISY = 2.0  # a median this many times the best round means the machine was busy with something else
SEED = 0
CLASSES = {"tabular": 2, "image": 10, "text": 4}
INFERENCE_MODELS = (
    ("tabular", "mlp"),
    ("image", "cnn"),
    ("image", "mlp"),
    ("text", "lstm"),
    ("text", "minilm"),
)
TRAINING_MODELS = (("tabular", "mlp"), ("image", "cnn"), ("text", "lstm"))
HIDDEN = {("image", "mlp"): [128, 64]}  # the seed documents' 784-128-64-10 baseline; others: defaults

WEIGHTS_NOTE = (
    "random weights (latency and throughput do not depend on training), except MiniLM: pretrained "
    "all-MiniLM-L6-v2 encoder under a random head; synthetic data"
)
PIPELINE_INCLUDES = (
    "tasks.train.fit: randperm, family.take per batch, autocast context (off on CPU), forward, "
    "cross-entropy, zero_grad, backward, AdamW step, loss.item() per batch; each epoch a validation pass "
    "(loss and accuracy), a copy of the best state and a checkpoint (model + optimizer) to a temp dir; "
    "rich progress bar"
)
MINIMAL_INCLUDES = (
    "hand-written: randperm, index the tensors, forward, cross-entropy, zero_grad, backward, AdamW step; "
    "each epoch the same validation pass (loss and accuracy, same batch size)"
)


@dataclass
class Sizes:
    tabular_rows: int
    image_rows: int
    text_rows: int
    epochs: int
    repeats: int
    rounds: int
    round_ms: float
    case_budget_s: float  # inference: rounds are cut so that one (model, batch) takes about this long
    min_rounds: int


FULL = Sizes(20_000, 4_000, 4_000, 1, repeats=7, rounds=15, round_ms=40.0, case_budget_s=25.0, min_rounds=5)
QUICK = Sizes(256, 64, 64, 1, repeats=1, rounds=2, round_ms=2.0, case_budget_s=1.0, min_rounds=1)


@dataclass
class Case:
    """One network of a family: its fitted preprocessing, train params and synthetic encoded rows."""

    task: str
    model: str
    prep: dict[str, Any]
    params: Any  # tasks.config.TrainParams, resolved
    inputs: list[np.ndarray]
    labels: np.ndarray
    pretrained: bool = False
    notes: dict[str, Any] = field(default_factory=dict)

    def build(self) -> Any:
        """The network, the same initial weights on every call."""
        import torch

        from tasks.families import family

        torch.manual_seed(SEED)
        n_classes = CLASSES[self.task]
        return family(self.task).build(self.model, self.prep, n_classes, self.params, self.pretrained)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.families", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (for the tests)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json", help="results JSON")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads = onnxruntime intra-op threads (default 1)"
    )
    parser.add_argument("--skip-training", action="store_true", help="inference only")
    return parser.parse_args(argv)


# --- synthetic data -------------------------------------------------------------------------------------


def train_params(task: str, model: str, epochs: int) -> Any:
    from tasks.config import TrainParams
    from tasks.train import resolve

    raw = TrainParams(model=model, epochs=epochs, max_length=SEQ, vocab_size=4000, device="cpu", seed=SEED)
    if (task, model) in HIDDEN:
        raw = raw.model_copy(update={"hidden": HIDDEN[(task, model)]})
    return resolve(raw, model)


def synthetic_texts(rows: int, rng: np.random.Generator) -> list[str]:
    """Texts of 40 made-up words from a Zipf-ish vocabulary of 2,000: all longer than SEQ tokens."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(2000)]
    weights = 1.0 / np.arange(1, len(words) + 1)
    picks = rng.choice(len(words), size=(rows, 40), p=weights / weights.sum())
    return [" ".join(words[i] for i in row) for row in picks]


def tabular_cases(rows: int, epochs: int, rng: np.random.Generator) -> list[Case]:
    import pandas as pd

    from tasks.config import Params
    from tasks.families import Split, family

    frame = pd.DataFrame(rng.normal(size=(rows, 30)), columns=[f"f{i:02d}" for i in range(30)])
    frame["target"] = rng.integers(0, CLASSES["tabular"], rows)
    kind = family("tabular")
    prep = kind.fit(Split(frame), {"target": "target"}, Params())
    inputs = kind.encode(Split(frame), prep)
    labels = frame["target"].to_numpy(np.int64)
    return [Case("tabular", "mlp", prep, train_params("tabular", "mlp", epochs), inputs, labels)]


def image_cases(rows: int, epochs: int, rng: np.random.Generator) -> list[Case]:
    import pandas as pd

    from tasks.config import Params
    from tasks.families import Split, family

    pixels = rng.integers(0, 256, size=(rows, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, CLASSES["image"], rows).astype(np.int64)
    split = Split(pd.DataFrame({"label": labels}), pixels)
    kind = family("image")
    prep = kind.fit(split, {}, Params())
    inputs = kind.encode(split, prep)
    return [Case("image", m, prep, train_params("image", m, epochs), inputs, labels) for m in ("cnn", "mlp")]


def text_case(model: str, texts: list[str], epochs: int, rng: np.random.Generator) -> Case:
    import pandas as pd

    from tasks.config import Params
    from tasks.families import Split, family

    split = Split(pd.DataFrame({"text": texts}))
    params = train_params("text", model, epochs)
    kind = family("text")
    prep = kind.fit(split, {"text_column": "text"}, Params(train=params))
    ids, mask = kind.encode(split, prep)
    if ids.shape[1] != SEQ or not mask.all():
        raise RuntimeError(f"synthetic texts encode to {ids.shape[1]} tokens with padding, expected {SEQ}")
    labels = rng.integers(0, CLASSES["text"], len(texts)).astype(np.int64)
    notes = {"vocab_size": prep["vocab_size"]}
    return Case("text", model, prep, params, [ids, mask], labels, pretrained=model == "minilm", notes=notes)


def text_cases(rows: int, epochs: int, rng: np.random.Generator) -> list[Case]:
    texts = synthetic_texts(rows, rng)
    inference_rows = texts[: min(rows, 512)]  # MiniLM is only timed at inference
    return [text_case("lstm", texts, epochs, rng), text_case("minilm", inference_rows, epochs, rng)]


def all_cases(sizes: Sizes) -> dict[tuple[str, str], Case]:
    """Every family's networks with train + validation rows (VAL_SHARE more) of synthetic data."""
    rng = np.random.default_rng(SEED)
    extra = 1 + VAL_SHARE
    cases = [
        *tabular_cases(round(sizes.tabular_rows * extra), sizes.epochs, rng),
        *image_cases(round(sizes.image_rows * extra), sizes.epochs, rng),
        *text_cases(round(sizes.text_rows * extra), sizes.epochs, rng),
    ]
    return {(c.task, c.model): c for c in cases}


# --- inference ------------------------------------------------------------------------------------------

Runner = Callable[[list[np.ndarray]], np.ndarray]  # input arrays in, logits out


def default_opset() -> int:
    """export.opset from params.yaml when there is one, else the exporter's default."""
    from tasks.config import PARAMS_FILE, ExportParams, load_params

    return load_params().export.opset if PARAMS_FILE.exists() else ExportParams().opset


def ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torch_runner(network: Any) -> Runner:
    import torch

    def run(arrays: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return network(*(torch.from_numpy(a) for a in arrays))[0].numpy()

    return run


def ort_runner(session: Any, names: Sequence[str]) -> Runner:
    def run(arrays: list[np.ndarray]) -> np.ndarray:
        return session.run(["logits"], dict(zip(names, arrays, strict=True)))[0]

    return run


def export_runners(case: Case, folder: Path, threads: int) -> tuple[dict[str, Runner], dict[str, int]]:
    """torch eager, onnxruntime fp32 and INT8 (dynamic quantization) of one network; ONNX file sizes."""
    from tasks.export import export_onnx, make_variant
    from tasks.model import Trained

    network = case.build().eval()
    labels = list(range(CLASSES[case.task]))
    trained = Trained(network, case.task, case.model, case.prep, labels, case.params)
    example = [a[:2, :5] if case.task == "text" else a[:2] for a in case.inputs]  # no axis frozen at SEQ
    fp32, int8 = folder / f"{case.task}-{case.model}.onnx", folder / f"{case.task}-{case.model}.int8.onnx"
    with warnings.catch_warnings():  # the exporter's LSTM/indexing advice; parity is measured below instead
        warnings.simplefilter("ignore", UserWarning)
        export_onnx(trained, example, fp32, default_opset())
    logging.disable(logging.WARNING)  # quantize_dynamic's advice to pre-process the model first
    try:
        make_variant("int8", fp32, int8)
    finally:
        logging.disable(logging.NOTSET)
    names = list(trained.family.inputs)
    runners = {
        "torch": torch_runner(network),
        "ort_fp32": ort_runner(ort_session(fp32, threads), names),
        "ort_int8": ort_runner(ort_session(int8, threads), names),
    }
    return runners, {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size}


def sample_batches(case: Case, batch: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    rows = len(case.labels)
    picks = [rng.integers(0, rows, batch) for _ in range(BATCH_POOL)]
    return [[np.ascontiguousarray(a[p]) for a in case.inputs] for p in picks]


def time_calls(run: Runner, batches: Sequence[list[np.ndarray]], calls: int) -> float:
    """Seconds per call, over `calls` calls cycling through the batches."""
    started = time.perf_counter()
    for i in range(calls):
        run(batches[i % len(batches)])
    return (time.perf_counter() - started) / calls


def measure(
    runners: dict[str, Runner], batches: Sequence[list[np.ndarray]], sizes: Sizes, label: str
) -> dict[str, list[float]]:
    """Per-call seconds of each runner in each round, the order rotating every round.

    Each round gives a runner at least round_ms of calls (one call at least); the number of rounds is
    cut so that the whole takes about case_budget_s (min_rounds at least).
    """
    names = list(runners)
    calls, round_s = {}, 0.0
    for name, run in runners.items():
        run(batches[0])  # warm-up
        per_call = time_calls(run, batches, 1)
        calls[name] = max(1, int(sizes.round_ms / 1e3 / max(per_call, 1e-7)))
        round_s += calls[name] * per_call
    rounds = max(sizes.min_rounds, min(sizes.rounds, int(sizes.case_budget_s / max(round_s, 1e-9))))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in track(range(rounds), description=label):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            samples[name].append(time_calls(runners[name], batches, calls[name]))
    return samples


def max_abs_diff(runners: dict[str, Runner], batch: list[np.ndarray]) -> dict[str, float]:
    reference = runners["torch"](batch)
    return {name: float(np.abs(runners[name](batch) - reference).max()) for name in ("ort_fp32", "ort_int8")}


def inference_row(case: Case, batch: int, samples: dict[str, list[float]], diffs: dict) -> dict[str, Any]:
    ms = {name: median(times) * 1e3 for name, times in samples.items()}
    best = {name: min(times) * 1e3 for name, times in samples.items()}
    return {
        "family": case.task,
        "model": case.model,
        "batch": batch,
        "seq": SEQ if case.task == "text" else None,
        "torch_ms": ms["torch"],
        "ort_fp32_ms": ms["ort_fp32"],
        "ort_int8_ms": ms["ort_int8"],
        "best_ms": best,
        "rounds": len(samples["torch"]),
        "torch_over_ort": ratio(ms["torch"], ms["ort_fp32"]),
        "fp32_over_int8": ratio(ms["ort_fp32"], ms["ort_int8"]),
        "torch_over_int8": ratio(ms["torch"], ms["ort_int8"]),
        "noisy": [name for name in ms if ms[name] > NOISY * best[name]],
        "max_abs_logit_diff": diffs,
    }


def bench_inference(cases: dict[tuple[str, str], Case], sizes: Sizes, threads: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED + 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-families-") as tmp:
        for key in INFERENCE_MODELS:
            case = cases[key]
            runners, onnx_bytes = export_runners(case, Path(tmp), threads)
            for batch in INFER_BATCHES:
                batches = sample_batches(case, batch, rng)
                diffs = max_abs_diff(runners, batches[0])
                samples = measure(runners, batches, sizes, f"{case.task} {case.model} batch {batch}")
                rows.append({**inference_row(case, batch, samples, diffs), "onnx_bytes": onnx_bytes})
    return rows


# --- training -------------------------------------------------------------------------------------------


def tensors(case: Case, rows: slice) -> tuple[list[Any], Any]:
    import torch

    inputs = [torch.from_numpy(a[rows].copy()) for a in case.inputs]
    return inputs, torch.from_numpy(case.labels[rows].copy())


def split_data(case: Case, train_rows: int) -> tuple[tuple, tuple]:
    return tensors(case, slice(0, train_rows)), tensors(case, slice(train_rows, None))


@dataclass
class Clock:
    """Wall-clock and process CPU seconds since start (CPU time is little touched by others' load)."""

    wall: float = field(default_factory=time.perf_counter)
    cpu: float = field(default_factory=time.process_time)

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


Timed = tuple[tuple[float, float], float]  # (wall s, CPU s), last validation loss


def pipeline_run(case: Case, train: tuple, val: tuple, params: Any, folder: Path) -> Timed:
    """Seconds of tasks.train.fit, and its last epoch's validation loss."""
    import torch

    from tasks.families import family
    from tasks.train import fit

    network = case.build()
    torch.manual_seed(SEED)
    clock = Clock()
    history = fit(network, train, val, params, folder / "last.pt", take=family(case.task).take)
    return clock.elapsed(), history.epochs[-1]["val_loss"]


def minimal_run(case: Case, train: tuple, val: tuple, params: Any, folder: Path) -> Timed:
    """Seconds of the minimal loop (same epochs, batch size, optimizer and validation pass)."""
    import torch
    from torch.nn.functional import cross_entropy

    network = case.build()
    torch.manual_seed(SEED)
    (x, y), (val_x, val_y) = train, val
    val_batch = max(params.batch_size, 256)  # as fit's validation pass
    clock = Clock()
    optimizer = torch.optim.AdamW(network.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    for _ in range(params.epochs):
        network.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y), params.batch_size):
            index = order[start : start + params.batch_size]
            loss = cross_entropy(network(*[t[index] for t in x])[0], y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        network.eval()
        total, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
        with torch.no_grad():
            for start in range(0, len(val_y), val_batch):
                logits = network(*[t[start : start + val_batch] for t in val_x])[0]
                total += cross_entropy(logits, val_y[start : start + val_batch], reduction="sum")
                correct += (logits.argmax(1) == val_y[start : start + val_batch]).sum()
        val_loss, _val_acc = total.item() / len(val_y), correct.item() / len(val_y)
    return clock.elapsed(), val_loss


def bench_training_case(case: Case, sizes: Sizes, train_rows: int, folder: Path) -> dict[str, Any]:
    """Warm both sides up on a slice, then run them alternately `repeats` times each."""
    train, val = split_data(case, train_rows)
    warm_rows = min(train_rows, 4 * case.params.batch_size)
    warm_params = case.params.model_copy(update={"epochs": 1})
    sides = {"pipeline": pipeline_run, "minimal": minimal_run}
    for run in sides.values():
        run(case, tensors(case, slice(0, warm_rows)), val, warm_params, folder)
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    cpu_seconds: dict[str, list[float]] = {name: [] for name in sides}
    val_loss: dict[str, float] = {}
    for rep in track(range(sizes.repeats), description=f"train {case.task} {case.model}"):
        for name in list(sides) if rep % 2 == 0 else list(sides)[::-1]:
            (wall, cpu), val_loss[name] = sides[name](case, train, val, case.params, folder)
            seconds[name].append(wall)
            cpu_seconds[name].append(cpu)
    samples = train_rows * case.params.epochs
    sps = {name: samples / median(times) for name, times in seconds.items()}
    overhead = (sps["minimal"] / sps["pipeline"] - 1) * 100
    cpu = {name: median(times) for name, times in cpu_seconds.items()}
    return {
        "family": case.task,
        "model": case.model,
        "train_rows": train_rows,
        "val_rows": len(val[1]),
        "batch_size": case.params.batch_size,
        "epochs": case.params.epochs,
        "repeats": sizes.repeats,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "cpu_overhead_pct": (cpu["pipeline"] / cpu["minimal"] - 1) * 100,
        "pipeline_sps": sps["pipeline"],
        "minimal_sps": sps["minimal"],
        "overhead_pct": overhead,
        "meets_goal": meets(overhead, GOAL_OVERHEAD_PCT),
        "last_val_loss": val_loss,
        "same_training": math.isclose(val_loss["pipeline"], val_loss["minimal"], rel_tol=1e-4, abs_tol=1e-6),
    }


def bench_training(cases: dict[tuple[str, str], Case], sizes: Sizes) -> list[dict[str, Any]]:
    train_rows = {"tabular": sizes.tabular_rows, "image": sizes.image_rows, "text": sizes.text_rows}
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-families-") as tmp:
        return [bench_training_case(cases[k], sizes, train_rows[k[0]], Path(tmp)) for k in TRAINING_MODELS]


# --- report ---------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    cases = all_cases(sizes)
    inference = bench_inference(cases, sizes, args.threads)
    training = [] if args.skip_training else bench_training(cases, sizes)
    return {
        "name": NAME,
        "created_at": timestamp(),
        "quick": args.quick,
        "machine": machine_info(),
        "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        "threads": args.threads,
        "threads_note": "torch.set_num_threads(n) = onnxruntime intra_op_num_threads (inter-op 1), CPU",
        "weights_note": WEIGHTS_NOTE,
        "inference": {
            "batches": list(INFER_BATCHES),
            "seq": SEQ,
            "rounds": sizes.rounds,
            "round_ms": sizes.round_ms,
            "case_budget_s": sizes.case_budget_s,
            "results": inference,
        },
        "training": {
            "includes": {"pipeline": PIPELINE_INCLUDES, "minimal": MINIMAL_INCLUDES},
            "val_share": VAL_SHARE,
            "goal_overhead_pct": GOAL_OVERHEAD_PCT,
            "results": training,
        },
    }


def inference_table(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            r["family"],
            r["model"],
            str(r["batch"]),
            f"{r['torch_ms']:.3f}",
            f"{r['ort_fp32_ms']:.3f}",
            f"{r['ort_int8_ms']:.3f}",
            format_ratio(r["torch_over_ort"]),
            format_ratio(r["fp32_over_int8"]),
            f"{r['max_abs_logit_diff']['ort_fp32']:.0e} / {r['max_abs_logit_diff']['ort_int8']:.0e}",
        ]
        for r in rows
    ]


def spread(times: Sequence[float]) -> float:
    return (max(times) - min(times)) / median(times)


def training_table(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            r["family"],
            r["model"],
            f"{r['train_rows']:,}",
            str(r["batch_size"]),
            f"{r['pipeline_sps']:,.0f}",
            f"{r['minimal_sps']:,.0f}",
            f"{r['overhead_pct']:+.1f}%",
            verdict(r["meets_goal"]),
            f"{r['cpu_overhead_pct']:+.1f}%",
            " / ".join(f"{spread(r['seconds'][side]):.0%}" for side in ("pipeline", "minimal")),
            "yes" if r["same_training"] else "NO",
        ]
        for r in rows
    ]


def print_report(report: dict[str, Any]) -> None:
    inference = report["inference"]
    headers = ["family", "model", "batch", "torch ms", "ort fp32 ms", "ort int8 ms", "torch/ort", "fp32/int8"]
    print_table(
        f"Inference, CPU, {report['threads']} thread(s): median ms per call",
        [*headers, "max|Δ logit| fp32 / int8"],
        inference_table(inference["results"]),
    )
    print(
        f"text at seq {inference['seq']}; interleaved rounds (order rotated) of >= "
        f"{inference['round_ms']:g} ms per runtime; a ratio > 1: the right-hand runtime is that much faster"
    )
    print(f"weights: {report['weights_note']}")
    noisy = [
        f"{r['family']} {r['model']} b{r['batch']}: {', '.join(r['noisy'])}"
        for r in inference["results"]
        if r["noisy"]
    ]
    if noisy:
        load = format_load(report["machine"]["load_average"])
        print(f"noisy (median over {NOISY:g}x the best round; load average {load}): {'; '.join(noisy)}")
    training = report["training"]
    if not training["results"]:
        return
    first = training["results"][0]
    headers = ["family", "model", "train rows", "batch", "pipeline sps", "minimal sps"]
    print_table(
        f"Training, CPU, {first['epochs']} epoch(s), val = {training['val_share']:.0%} of train rows: "
        f"median samples/s of {first['repeats']} alternating runs per side",
        [*headers, "overhead", f"<={training['goal_overhead_pct']:g}%", "CPU ovh", "spread p/m", "same"],
        training_table(training["results"]),
    )
    print(
        "overhead = (minimal sps / pipeline sps - 1) * 100, from median wall time; CPU ovh: the same "
        "from median process CPU time (little touched by other load); spread: (max - min) / median of the "
        "runs' wall times, pipeline / minimal"
    )
    print(f"pipeline: {training['includes']['pipeline']}")
    print(f"minimal:  {training['includes']['minimal']}")
    print("same: both sides end with the same validation loss (same seed, same updates)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_benchmark(args)
    print_report(report)
    print(f"wrote {write_results(args.out.stem, report, args.out.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
