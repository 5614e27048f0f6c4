"""The CUDA path (bf16 autocast, data moved to the device once): runs only where CUDA is present."""

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def test_auto_device_trains_on_cuda_and_exports_with_parity(project, make_params, make_frame):
    from tasks import evaluate, export, ingest, train

    make_frame(n=300).to_csv("data.csv", index=False)
    params = make_params(
        ingest={"source": "data.csv", "target": "label"}, train={"epochs": 5, "device": "auto"}
    )
    ingest.run(params)
    report = train.run(params)
    assert report["device"].startswith("cuda")
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    evaluate.run(params)
    manifest = export.run(params)  # the model is saved on the CPU; parity is checked against ORT
    assert all(r["class_agreement"] >= 0.999 for r in manifest["parity"].values())


@pytest.mark.parametrize("model", ["cnn", "lstm"])
def test_image_and_text_families_train_on_cuda_with_bf16(tmp_path, model):
    """The one loop with device-resident uint8 pixels / token ids under bf16 autocast."""
    from tasks.config import TrainParams
    from tasks.families import family
    from tasks.train import fit, resolve

    device = torch.device("cuda")
    n = 512
    y = torch.randint(0, 3, (n,), device=device)
    if model == "cnn":
        prep = {"height": 16, "width": 16, "channels": 1, "mean": [0.5], "std": [0.3]}
        pixels = torch.randint(0, 60, (n, 16, 16, 1), dtype=torch.uint8, device=device)
        pixels[y == 1, :, :8] = 220
        pixels[y == 2, :8] = 220
        inputs, kind = [pixels], family("image")
    else:
        prep = {"vocab_size": 50, "pad_id": 0}
        ids = torch.randint(4, 20, (n, 12), device=device) + 10 * y[:, None]
        inputs, kind = [ids, torch.ones_like(ids)], family("text")
    settings = resolve(TrainParams(model=model, epochs=6, lr=3e-3), model)
    network = kind.build(model, prep, 3, settings).to(device)
    history = fit(
        network, (inputs, y), (inputs, y), settings, tmp_path / "last.pt", take=kind.take, order=kind.order
    )
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert history.epochs[-1]["val_accuracy"] > 0.6


GPU_METRIC_TOLERANCE = 0.01  # bf16 autocast and cuBLAS are not bit-reproducible: metrics agree to this


def test_training_again_on_cuda_reproduces_the_metrics_within_tolerance(fitted_project, fitted_params):
    """Reproduce from scratch on a GPU: the same seed and data give the same test metrics within tolerance."""
    from tasks import evaluate, train

    params = fitted_params.model_copy(
        update={"train": fitted_params.train.model_copy(update={"device": "cuda"})}
    )
    runs = []
    for _ in range(2):
        assert train.run(params)["device"].startswith("cuda")
        runs.append(evaluate.run(params)["metrics"])
    for name in ("accuracy", "f1_macro"):
        assert runs[0][name] == pytest.approx(runs[1][name], abs=GPU_METRIC_TOLERANCE)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs two GPUs")
def test_two_gpus_train_with_nccl_like_one(fitted_project, fitted_params):
    from tasks import evaluate, train

    params = fitted_params.model_copy(
        update={"train": fitted_params.train.model_copy(update={"device": "cuda"})}
    )
    train.run(params)
    single = evaluate.run(params)["metrics"]
    report = train.run(params, devices=2)
    assert report["processes"] == 2 and report["device"].startswith("cuda")
    both = evaluate.run(params)["metrics"]
    for name in ("accuracy", "f1_macro"):
        assert both[name] == pytest.approx(single[name], abs=GPU_METRIC_TOLERANCE)
