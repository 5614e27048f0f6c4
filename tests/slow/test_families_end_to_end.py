"""Image folders and text files from a user's seat: `shipyard run --data ...`, then `shipyard serve`."""

import base64
import io
import json
import subprocess

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.project import (
    BIN,
    env,
    free_port,
    image_folder,
    make_project,
    shipyard,
    stop,
    text_frame,
    wait_for,
)

pytestmark = pytest.mark.slow


def serve(project, *requests: tuple[str, dict]) -> list[httpx.Response]:
    """Start `shipyard serve`, send each (content type, body-or-json) request to /predict, stop it."""
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "shipyard"), "serve", "--port", str(port)],
        cwd=project,
        env=env(HF_HUB_OFFLINE="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/health", timeout=60)
        answers = []
        for content_type, body in requests:
            if content_type == "application/json":
                answers.append(httpx.post(f"{url}/predict", json=body, timeout=60))
            else:
                headers = {"content-type": content_type}
                answers.append(httpx.post(f"{url}/predict", content=body, headers=headers, timeout=60))
        return answers
    finally:
        stop(server)


def test_image_folder_with_bad_files_trains_promotes_and_serves_raw_images(tmp_path):
    project = make_project(tmp_path / "p")
    made = image_folder(project / "shapes")
    (project / "shapes/left/notes.txt").write_text("not an image")
    good = made["top"][1].read_bytes()
    (project / "shapes/top/cut.png").write_bytes(good[: len(good) // 2])

    result = shipyard(project, "run", "--data", "shapes", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    ingest = json.loads((project / "data/ingest.json").read_text())
    assert ingest["task"] == "image" and ingest["image"] == {"height": 12, "width": 12, "channels": 1}
    assert sorted(s["path"] for s in ingest["skipped_files"]) == ["left/notes.txt", "top/cut.png"]
    manifest = json.loads((project / "registry/versions/v0001/manifest.json").read_text())
    assert manifest["task"] == "image" and manifest["model"] == "cnn"
    assert manifest["onnx"]["inputs"][0]["dtype"] == "uint8"
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert metrics["accuracy"] >= 0.9

    pngs = [made[label][2].read_bytes() for label in ("left", "right", "top")]
    images = [base64.b64encode(b).decode() for b in pngs]
    from PIL import Image

    array = np.asarray(Image.open(io.BytesIO(pngs[1]))).tolist()
    batch, raw, nested = serve(
        project,
        ("application/json", {"images": images}),
        ("image/png", pngs[2]),
        ("application/json", {"images": [array]}),
    )
    assert batch.status_code == 200, batch.text
    assert [p["label"] for p in batch.json()["predictions"]] == ["left", "right", "top"]
    assert raw.json()["predictions"][0]["label"] == "top"
    assert nested.json()["predictions"][0]["label"] == "right"


def test_text_file_fine_tunes_minilm_offline_and_serves_raw_texts(tmp_path):
    project = make_project(tmp_path / "p")
    frame = text_frame(rows=160)
    frame = pd.concat([frame, frame.iloc[:10]])  # repeated texts are dropped before the split
    frame.to_csv(project / "messages.csv", index=False)

    result = shipyard(
        project,
        "run",
        "--data",
        "messages.csv",
        "--target",
        "kind",
        timeout=1200,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    ingest = json.loads((project / "data/ingest.json").read_text())
    assert ingest["task"] == "text" and ingest["text_column"] == "message"
    assert ingest["duplicate_texts_dropped"] == 10
    version = project / "registry/versions/v0001"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["model"] == "minilm" and "tokenizer.json" in manifest["files"]
    assert [i["name"] for i in manifest["onnx"]["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["variants"]["int8"]["published"] == (
        manifest["variants"]["int8"]["accuracy"] >= manifest["variants"]["fp32"]["accuracy"] - 0.01
    )
    assert (version / "model.int8.onnx").exists() == manifest["variants"]["int8"]["published"]

    texts = ["claim your free cash prize now txt win", "see you at dinner tonight love", ""]
    (answer,) = serve(project, ("application/json", {"texts": texts}))
    assert answer.status_code == 200, answer.text
    labels = [p["label"] for p in answer.json()["predictions"]]
    assert labels[:2] == ["spam", "ham"]
