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
