"""The model and the one training loop: learning, imputation, checkpoints, resume, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tasks import train as train_stage
from tasks.config import TrainParams
from tasks.errors import ShipyardError
from tasks.families import family
from tasks.families.tabular import TabularMLP
from tasks.features import FeatureSpec, encode_frame, encode_labels, fit_features, label_values
from tasks.io import write_json
from tasks.model import Trained, load_model, save_model
from tasks.paths import CHECKPOINT_DIR, INGEST_REPORT, MODEL_FILE, TRAIN_REPORT
from tasks.train import History, fit, load_checkpoint, resolve, select_device

TARGET = "label"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_params(**overrides) -> TrainParams:
    base = dict(
        hidden=[16], dropout=0.1, epochs=5, batch_size=32, lr=0.01, patience=100, seed=0, device="cpu"
    )
    return resolve(TrainParams(**{**base, **overrides}), "mlp")


class Problem:
    """A tiny separable problem: a fitted spec (and its prep dict), labels and train/val tensors."""

    def __init__(self, make_frame, labels=("no", "yes")) -> None:
        train = make_frame(n=120, labels=labels, seed=0)
        val = make_frame(n=40, labels=labels, seed=1)
        self.spec = fit_features(train, TARGET)
        self.prep = self.spec.model_dump()
        self.labels = label_values(train[TARGET])
        self.train = self.tensors(train)
        self.val = self.tensors(val)

    def tensors(self, frame: pd.DataFrame) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = torch.from_numpy(encode_frame(frame, self.spec))
        return [x], torch.from_numpy(encode_labels(frame[TARGET], self.labels))

    def model(self, params: TrainParams) -> torch.nn.Module:
        torch.manual_seed(params.seed)
        return family("tabular").build("mlp", self.prep, len(self.labels), params)

    def fit(self, params: TrainParams, checkpoint: Path, resume: bool = False):
        model = self.model(params)
        history = fit(model, self.train, self.val, params, checkpoint, resume=resume)
        return model, history


@pytest.fixture
def problem(make_frame) -> Problem:
    return Problem(make_frame)


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- model --------------------------------------------------------------------------------------------


def test_forward_gives_logits_and_probabilities(problem: Problem) -> None:
    model = problem.model(train_params()).eval()
    logits, proba = model(problem.train[0][0][:5])
    assert logits.shape == proba.shape == (5, 2)
    torch.testing.assert_close(proba, torch.softmax(logits, dim=1))
    torch.testing.assert_close(proba.sum(1), torch.ones(5))


def test_model_imputes_missing_numbers_with_the_training_fill(problem: Problem) -> None:
    model = problem.model(train_params()).eval()
    x = problem.train[0][0][:6].clone()
    n_numeric = len(problem.spec.numeric)
    with_nan = x.clone()
    with_nan[:, :n_numeric] = float("nan")
    filled = x.clone()
    filled[:, :n_numeric] = torch.tensor([f.fill for f in problem.spec.numeric])
    with torch.no_grad():
        logits, proba = model(with_nan)
        expected, _ = model(filled)
    assert torch.isfinite(logits).all() and torch.isfinite(proba).all()
    torch.testing.assert_close(logits, expected)


def test_model_tolerates_missing_and_out_of_range_category_codes(problem: Problem) -> None:
    model = problem.model(train_params()).eval()
    x = problem.train[0][0][:1].repeat(4, 1)
    x[:, -1] = torch.tensor([float("nan"), 0.0, -5.0, 999.0])  # the last column is a category code
    with torch.no_grad():
        logits, _ = model(x)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[0], logits[1])  # NaN code == 0 (missing)
    torch.testing.assert_close(logits[2], logits[1])  # negative codes clamp to missing


def test_the_tabular_family_builds_a_tabular_mlp(problem: Problem) -> None:
    model = family("tabular").build("mlp", problem.prep, 3, train_params(hidden=[8, 4]))
    assert isinstance(model, TabularMLP)
    linear = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [8, 4, 3]


def test_null_hidden_means_the_models_default(problem: Problem) -> None:
    from tasks.families import MODEL_DEFAULTS

    model = family("tabular").build("mlp", problem.prep, 2, TrainParams(hidden=None))
    linear = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [*MODEL_DEFAULTS["mlp"]["hidden"], 2]


def test_save_load_round_trip(project: Path, problem: Problem) -> None:
    params = train_params()
    model, _ = problem.fit(params.model_copy(update={"epochs": 2}), Path("ckpt.pt"))
    save_model(MODEL_FILE, Trained(model, "tabular", "mlp", problem.prep, problem.labels, params))
    trained = load_model(MODEL_FILE)
    loaded = trained.network
    assert not loaded.training and isinstance(loaded, TabularMLP)
    assert (trained.task, trained.model, trained.labels) == ("tabular", "mlp", problem.labels)
    assert FeatureSpec.model_validate(trained.prep) == problem.spec and trained.params == params
    assert same_state(loaded.state_dict(), model.state_dict())
    model.eval()
    x = problem.val[0][0]
    x[::3, 0] = float("nan")
    with torch.no_grad():
        for got, want in zip(loaded(x), model(x), strict=True):
            assert torch.equal(got, want)
    assert sorted(p.name for p in MODEL_FILE.parent.iterdir()) == ["model.pt"]


# ---- device -------------------------------------------------------------------------------------------


def test_select_device() -> None:
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_one_is_an_error() -> None:
    with pytest.raises(ShipyardError, match="train.device is 'cuda' but no CUDA device is available"):
        select_device("cuda")


# ---- the loop -----------------------------------------------------------------------------------------


def test_loss_goes_down(project: Path, problem: Problem) -> None:
    model, history = problem.fit(train_params(epochs=15, dropout=0.0), Path("ckpt.pt"))
    losses = [e["loss"] for e in history.epochs]
    assert len(losses) == 15
    assert losses[-1] < 0.5 * losses[0]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert history.epochs[history.best_epoch - 1]["val_accuracy"] >= 0.95


def test_multiclass_learns(project: Path, make_frame) -> None:
    problem = Problem(make_frame, labels=("a", "b", "c"))
    model, history = problem.fit(train_params(epochs=15, dropout=0.0), Path("ckpt.pt"))
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert max(e["val_accuracy"] for e in history.epochs) >= 0.9


def test_checkpoint_each_epoch_atomically(project: Path, problem: Problem, monkeypatch) -> None:
    checkpoint = CHECKPOINT_DIR / "last.pt"
    seen: list[tuple[int, set[str]]] = []
    real_save = train_stage.save_checkpoint

    def spy(path, model, optimizer, history):
        real_save(path, model, optimizer, history)
        seen.append((history.epoch, {p.name for p in path.parent.iterdir()}))

    monkeypatch.setattr(train_stage, "save_checkpoint", spy)
    _, history = problem.fit(train_params(epochs=4), checkpoint)
    assert [epoch for epoch, _ in seen] == [1, 2, 3, 4]
    assert all(files == {"last.pt"} for _, files in seen)  # no temp files left behind
    state = torch.load(checkpoint, weights_only=False)
    assert state["history"]["epoch"] == 4 and len(state["history"]["epochs"]) == 4


def test_a_failed_checkpoint_write_keeps_the_previous_one(
    project: Path, problem: Problem, monkeypatch
) -> None:
    checkpoint = Path("ckpt/last.pt")
    real_save, calls = torch.save, []

    def failing_save(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 3:
            real_save(obj, f, *args, **kwargs)  # half-written file, then the crash
            raise OSError("disk full")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        problem.fit(train_params(epochs=5), checkpoint)
    assert Path(calls[2]) != checkpoint  # written to a temp file, not in place
    assert [p.name for p in checkpoint.parent.iterdir()] == ["last.pt"]
    state = torch.load(checkpoint, weights_only=False)
    assert state["history"]["epoch"] == 2


def test_resume_continues_from_the_checkpoint(project: Path, problem: Problem, monkeypatch) -> None:
    checkpoint = Path("ckpt/last.pt")
    _, first = problem.fit(train_params(epochs=3), checkpoint)
    assert first.epoch == 3

    epochs_trained: list[int] = []
    real_save = train_stage.save_checkpoint
    monkeypatch.setattr(
        train_stage,
        "save_checkpoint",
        lambda path, m, o, history: (epochs_trained.append(history.epoch), real_save(path, m, o, history)),
    )
    resumed_model, resumed = problem.fit(train_params(epochs=5), checkpoint, resume=True)
    assert epochs_trained == [4, 5]  # two more epochs, not five
    assert resumed.epoch == 5 and len(resumed.epochs) == 5
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3, 4, 5]
    assert resumed.epochs[:3] == first.epochs

    # ...and lands exactly where an uninterrupted run does (model, optimizer and RNG state restored)
    straight_model, straight = problem.fit(train_params(epochs=5), Path("other/last.pt"))
    assert resumed.epochs == straight.epochs
    assert same_state(resumed_model.state_dict(), straight_model.state_dict())


def test_resume_without_a_checkpoint_starts_fresh(project: Path, problem: Problem) -> None:
    _, history = problem.fit(train_params(epochs=2), Path("none/last.pt"), resume=True)
    assert history.epoch == 2 and [e["epoch"] for e in history.epochs] == [1, 2]


def test_resume_from_an_incompatible_checkpoint_is_refused(project: Path, problem: Problem) -> None:
    checkpoint = Path("ckpt/last.pt")
    problem.fit(train_params(epochs=1), checkpoint)
    with pytest.raises(
        ShipyardError, match="checkpoint does not match the current model; train without --resume"
    ):
        problem.fit(train_params(epochs=2, hidden=[8]), checkpoint, resume=True)


def test_early_stopping_and_best_state(project: Path, problem: Problem, monkeypatch) -> None:
    scores = iter([(0.5, 0.9), (0.5, 0.8), (0.4, 0.7), (0.3, 0.6), (0.2, 0.5)])  # (loss, acc): best at 1
    states = []
    real_evaluate = train_stage.evaluate_batches

    def fake_evaluate(model, x, y, batch, take=train_stage.plain_take):
        real_evaluate(model, x, y, batch, take)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    monkeypatch.setattr(train_stage, "evaluate_batches", fake_evaluate)
    model, history = problem.fit(train_params(epochs=50, patience=3), Path("ckpt.pt"))
    assert history.epoch == 4 and history.best_epoch == 1  # stopped 3 epochs after the best
    assert same_state(model.state_dict(), states[0])  # the best epoch's weights are restored
    assert not same_state(model.state_dict(), states[-1])


def test_history_round_trips_through_a_checkpoint(project: Path, problem: Problem) -> None:
    model, history = problem.fit(train_params(epochs=2), Path("ckpt.pt"))
    optimizer = torch.optim.AdamW(model.parameters())
    restored = load_checkpoint(Path("ckpt.pt"), model, optimizer)
    assert isinstance(restored, History)
    assert (restored.epoch, restored.best_epoch, restored.epochs) == (2, history.best_epoch, history.epochs)


# ---- the stage ----------------------------------------------------------------------------------------


def write_splits(make_frame) -> None:
    Path("data/splits").mkdir(parents=True)
    make_frame(n=90, seed=0).to_parquet("data/splits/train.parquet", index=False)
    make_frame(n=30, seed=1).to_parquet("data/splits/val.parquet", index=False)
    write_json(INGEST_REPORT, {"task": "tabular", "target": TARGET})


def test_run_writes_model_and_report(project: Path, make_frame, make_params) -> None:
    write_splits(make_frame)
    report = train_stage.run(make_params(train={"epochs": 4}))
    on_disk = json.loads(TRAIN_REPORT.read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(report))
    assert on_disk["device"] == "cpu" and on_disk["epochs_run"] == 4 and len(on_disk["history"]) == 4
    best = on_disk["history"][on_disk["best_epoch"] - 1]
    assert on_disk["best_val_accuracy"] == best["val_accuracy"]
    assert (on_disk["task"], on_disk["model"]) == ("tabular", "mlp")
    trained = load_model(MODEL_FILE)
    assert on_disk["parameters"] == sum(p.numel() for p in trained.network.parameters())
    assert trained.labels == ["no", "yes"] and trained.task == "tabular" and trained.model == "mlp"
    assert FeatureSpec.model_validate(trained.prep).columns == ["x1", "x2", "colour"]
    assert trained.params.epochs == 4 and trained.params.model == "mlp"  # resolved, not "auto"
    assert sorted(p.name for p in (CHECKPOINT_DIR).iterdir()) == ["last.pt"]


def test_run_fills_null_params_with_the_model_defaults(project: Path, make_frame, make_params) -> None:
    from tasks.families import MODEL_DEFAULTS

    write_splits(make_frame)
    train_stage.run(make_params(train={"epochs": 1, "hidden": None, "lr": None, "batch_size": None}))
    params = load_model(MODEL_FILE).params
    defaults = MODEL_DEFAULTS["mlp"]
    assert (params.hidden, params.lr, params.batch_size) == (
        defaults["hidden"],
        defaults["lr"],
        defaults["batch_size"],
    )
    assert params.epochs == 1


def test_run_without_an_ingest_report_says_to_ingest_first(project: Path, make_params) -> None:
    with pytest.raises(ShipyardError, match=r"data/ingest.json not found; run the ingest stage first"):
        train_stage.run(make_params())


def test_run_refuses_a_model_of_another_family(project: Path, make_frame, make_params) -> None:
    write_splits(make_frame)
    with pytest.raises(
        ShipyardError, match=r"train.model: 'cnn' is not a tabular model; choose one of \['mlp'\]"
    ):
        train_stage.run(make_params(train={"model": "cnn"}))


def test_run_is_deterministic_for_a_seed(tmp_path: Path, monkeypatch, make_frame, make_params) -> None:
    states = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        folder = tmp_path / name
        folder.mkdir()
        monkeypatch.chdir(folder)
        write_splits(make_frame)
        train_stage.run(make_params(train={"epochs": 3, "seed": seed, "dropout": 0.2}))
        states[name] = load_model(MODEL_FILE).network.state_dict()
    assert same_state(states["a"], states["b"])
    assert not same_state(states["a"], states["c"])


def test_run_resume_adds_epochs(project: Path, make_frame, make_params) -> None:
    write_splits(make_frame)
    train_stage.run(make_params(train={"epochs": 3}))
    report = train_stage.run(make_params(train={"epochs": 5}), resume=True)
    assert report["epochs_run"] == 5 and [e["epoch"] for e in report["history"]] == [1, 2, 3, 4, 5]
