"""params.yaml, loaded once into pydantic models; unknown keys and bad values fail with their key path."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import ShipyardError
from tasks.paths import DEFAULT_DATASET

PARAMS_FILE = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestParams(Section):
    source: str = str(DEFAULT_DATASET)
    target: str = "target"
    table: str | None = None
    query: str | None = None
    format: Literal["auto", "csv", "tsv", "parquet", "sql"] = "auto"
    text_column: str | None = None  # text family: the column of texts (null: detected)
    image_size: tuple[int, int] | None = None  # image family: [height, width] (null: the most common)
    bad_files: Literal["skip", "fail"] = "skip"  # images that cannot be read: skip (reported) or fail
    invalid_bytes: Literal["repair", "reject"] = "repair"  # text family: bytes that are not UTF-8
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    seed: int = 42

    @model_validator(mode="after")
    def _fractions_leave_training_rows(self) -> IngestParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must be below 0.9")
        return self


class ColumnContract(Section):
    type: Literal["numeric", "categorical"]
    max_null_fraction: float = Field(0.0, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    values: list[Any] | None = None
    critical: bool = True


class Contract(Section):
    columns: dict[str, ColumnContract]
    labels: list[Any] | None = None
    min_rows: int = Field(1, ge=1)
    max_rows: int | None = None
    max_duplicate_fraction: float = Field(0.0, ge=0, le=1)


class ValidateParams(Section):
    contract: Contract | None = None
    suite: str | None = None
    range_margin: float = Field(0.5, ge=0)
    null_margin: float = Field(0.05, ge=0, le=1)
    max_duplicate_fraction: float = Field(0.05, ge=0, le=1)
    min_class_rows: int = Field(2, ge=1)  # image/text: fewest training rows a class may have
    max_empty_fraction: float = Field(0.0, ge=0, le=1)  # text: share of empty texts tolerated
    on_bad_rows: Literal["fail", "quarantine"] = "fail"  # rows failing a critical row rule
    max_bad_row_fraction: float = Field(0.01, ge=0, le=1)  # quarantine: fail anyway above this share
    sensitive_columns: list[str] = Field(default_factory=list)  # values never shown in reports
    target_leakage: Literal["critical", "warning", "off"] = "critical"  # a feature that is the label
    chunk_rows: int = Field(200_000, ge=1000)  # `contract check`: rows per chunk (bounds memory)


class DriftThresholds(Section):
    psi: float = Field(ge=0)  # population stability index, numeric columns (and text lengths)
    ks: float = Field(ge=0, le=1)  # two-sample Kolmogorov-Smirnov statistic
    js: float = Field(ge=0, le=1)  # Jensen-Shannon distance (base 2), categorical columns
    new_category_rate: float = Field(ge=0, le=1)  # share of rows with a category unseen in training
    oov_increase: float = Field(ge=0, le=1)  # text: out-of-vocabulary rate above the reference's


class DriftParams(Section):
    """New data against the training reference; critical drift stops promotion when `gate` is on."""

    gate: bool = True
    bins: int = Field(10, ge=2, le=100)
    warning: DriftThresholds = Field(
        default_factory=lambda: DriftThresholds(
            psi=0.1, ks=0.1, js=0.1, new_category_rate=0.01, oov_increase=0.05
        )
    )
    critical: DriftThresholds = Field(
        default_factory=lambda: DriftThresholds(
            psi=0.25, ks=0.25, js=0.2, new_category_rate=0.05, oov_increase=0.15
        )
    )


ModelName = Literal["auto", "mlp", "cnn", "lstm", "minilm"]


class TrainParams(Section):
    """null means the chosen model's default (tasks.families.MODEL_DEFAULTS)."""

    model: ModelName = "auto"  # auto: mlp for tables, cnn for images, minilm for texts
    hidden: list[int] | None = None  # hidden layer widths; a single number is one layer
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(10, ge=1)
    max_length: int = Field(128, ge=4, le=512)  # text: tokens per text
    vocab_size: int = Field(16000, ge=100)  # text, lstm: the tokenizer trained on the training texts
    compile: bool = False  # torch.compile the model (optional; helps most on GPU)
    seed: int = 42
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(1, ge=1)  # processes per node; more than one: DistributedDataParallel via torchrun
    nodes: int = Field(1, ge=1)  # machines; more than one needs a rendezvous endpoint (see README)

    @field_validator("hidden", mode="before")
    @classmethod
    def _one_width_is_one_layer(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) and not isinstance(value, bool) else value


class EvaluateParams(Section):
    thresholds: dict[str, float] = Field(default_factory=lambda: {"accuracy": 0.8, "f1_macro": 0.75})
    regression_metrics: list[str] = Field(default_factory=lambda: ["f1_macro"])
    regression_tolerance: float = Field(0.01, ge=0)


class ExportParams(Section):
    opset: int = Field(17, ge=13)
    parity_atol: float = Field(1e-4, gt=0)
    parity_batch_sizes: list[int] = Field(default_factory=lambda: [1, 7, 64])
    parity_shapes: list[tuple[int, int]] = Field(default_factory=lambda: [(1, 8), (7, 64), (64, 128)])
    min_agreement: float = Field(0.999, ge=0, le=1)
    variants: list[Literal["int8", "fp16"]] = Field(default_factory=lambda: ["int8", "fp16"])
    variant_budget: float = Field(0.01, ge=0, le=1)  # a variant may lose at most this much accuracy


class PromoteParams(Section):
    registry: str = "registry"


class ServeParams(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)  # 0: any free port (the log names it)
    validate_inputs: bool = False  # check requests against the model's data contract (422 on violation)
    variant: Literal["auto", "fp32", "int8", "fp16"] = "auto"  # auto: fp16 on GPU, int8 on CPU, if published
    require_gpu: bool = False  # refuse to start unless CUDA is really active
    max_batch_size: int = Field(64, ge=1)  # rows per session.run when requests are batched
    max_wait_ms: float = Field(2.0, ge=0, le=1000)  # wait for requests still being parsed, never when idle
    inline_below_ms: float = Field(
        1.0, ge=0
    )  # idle server, run this quick: answer on the event loop (0: never)
    max_queue: int = Field(256, ge=1)  # requests waiting for the model; more get 503 with Retry-After
    timeout_ms: float = Field(30_000, gt=0)  # per request, from arrival to answer (503 when exceeded)
    max_body_mb: float = Field(32, gt=0)  # request body limit (413), chunked bodies included
    max_items: int = Field(10_000, ge=1)  # records, texts or images in one /predict request
    reload_interval_s: float = Field(2.0, ge=0)  # how often production.json is checked; 0: no hot reload
    drain_seconds: float = Field(2.0, ge=0)  # after SIGTERM: ready is 503 this long, then in-flight finish
    threads: int = Field(0, ge=0)  # onnxruntime intra-op threads; 0: the CPUs this process may use


class SweepParams(Section):
    """`shipyard sweep`: every combination of `grid` is one DVC experiment, run in parallel on Dask."""

    grid: dict[str, list[Any]] = Field(default_factory=dict)  # params key -> values, e.g. train.lr: [1e-3]
    metric: str = "f1_macro"  # the blessed candidate with the best test value of this metric is promoted
    workers: int = Field(2, ge=1)  # local Dask cluster: worker processes
    address: str | None = None  # an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (null: local cluster)


class NotifyParams(Section):
    webhook_url: str | None = None  # failed or not-blessed scheduled runs POST a JSON message here


class Params(Section):
    task: Literal["auto", "tabular", "image", "text"] = "auto"  # auto: inferred from the data
    ingest: IngestParams = Field(default_factory=IngestParams)
    validate_: ValidateParams = Field(default_factory=ValidateParams, alias="validate")
    drift: DriftParams = Field(default_factory=DriftParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    export: ExportParams = Field(default_factory=ExportParams)
    promote: PromoteParams = Field(default_factory=PromoteParams)
    serve: ServeParams = Field(default_factory=ServeParams)
    sweep: SweepParams = Field(default_factory=SweepParams)
    notify: NotifyParams = Field(default_factory=NotifyParams)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_


def _describe(error: dict[str, Any], source: str) -> str:
    path = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key '{path}'"
    got = error.get("input")
    return f"{source}: {path}: {error['msg']} (got {got!r})"


def parse_params(raw: dict[str, Any] | None, source: str = str(PARAMS_FILE)) -> Params:
    """Validate a params mapping; the error names every bad key path."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ShipyardError("; ".join(_describe(e, source) for e in err.errors())) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShipyardError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise ShipyardError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ShipyardError(f"{path}: expected a mapping of sections at the top level")
    return data


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """What every stage's main() calls: params.yaml, validated."""
    return parse_params(read_yaml(path), str(path))


def parse_assignment(text: str) -> tuple[list[str], Any]:
    """`train.epochs=5` -> (["train", "epochs"], 5); the value is read as a YAML scalar or list."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ShipyardError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. train.epochs=5")
    from ruamel.yaml import YAML, YAMLError

    try:  # YAML 1.2, as DVC reads params: 1e-3 is a number
        parsed = YAML(typ="safe", pure=True).load(value) if value.strip() else None
    except YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(
    path: str | Path, overrides: list[tuple[list[str], Any]], out: str | Path = PARAMS_FILE
) -> Params:
    """Apply (key path, value) overrides to a params file, validate, and write the result to `out`.

    Like `dvc exp run --set-param`: the effective params land in params.yaml (comments kept), so that
    `dvc repro` reproduces exactly what ran. Nothing is written when validation fails or nothing changed.
    """
    from ruamel.yaml import YAML

    rt = YAML()
    rt.preserve_quotes = True
    rt.representer.add_representer(
        type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    source = Path(path)
    read_yaml(source)  # a missing or malformed file fails here with a clear message
    doc = rt.load(source.read_text(encoding="utf-8")) or {}
    for keys, value in overrides:
        node = doc
        for depth, key in enumerate(keys[:-1]):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                section = ".".join(keys[: depth + 1])
                raise ShipyardError(f"--set {'.'.join(keys)}: '{section}' is not a section")
        node[keys[-1]] = value
    new_text = _dump(rt, doc)
    params = parse_params(yaml.safe_load(new_text), f"{source} with --set")
    target = Path(out)
    if not target.exists() or target.read_text(encoding="utf-8") != new_text:
        from tasks.io import write_text

        write_text(target, new_text)
    return params


def _dump(rt: Any, doc: Any) -> str:
    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue()
