"""The flow's stage list and dvc.yaml must describe the same pipeline."""

import re
from pathlib import Path

import yaml

from flows.stages import STAGES
from tests.project import ROOT


def test_flow_runs_the_stages_of_dvc_yaml_in_order():
    text = (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load(re.sub(r"\$\{[^}]+\}", "x", text))["stages"]
    assert list(STAGES) == list(stages)
    for name, module in STAGES.items():
        assert Path(f"tasks/{module}.py").as_posix() in stages[name]["deps"]
        assert f"-m tasks.{module}" in stages[name]["cmd"]
