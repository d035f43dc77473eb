"""Evaluate and Export score one classifier; multi-task and self-supervised runs are sent to their own pages."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from core.storage import cards, runs
from core.config import RunConfig

APP = str(Path(__file__).resolve().parent.parent / "streamlit_app.py")


def _run_with_checkpoint(extra: dict) -> runs.Run:
    run = runs.create(RunConfig.from_dict({"data": "sample:shapes", "extra": extra}))  # a config saved before typed fields
    run.append({"type": "start", "time": 0.0})
    run.append({"type": "end", "time": 1.0, "status": "finished"})
    # a valid file whose card these pages read from its header; its one tensor is never loaded
    card = {"format": cards.FORMAT, "kind": "multitask" if extra["technique"] == "multitask" else "adapted",
            "backbone": "resnet18"}
    run.best_weights.write_bytes(save({"unused": torch.zeros(1)}, metadata={cards.CARD_KEY: json.dumps(card)}))
    return run


@pytest.mark.parametrize("page", ["5_evaluate", "6_export"])
@pytest.mark.parametrize("technique, target", [("multitask", "9 · Multi-task"), ("simclr", "10 · Pretrain")])
def test_a_non_classifier_run_is_not_offered_and_the_page_points_to_its_own(page, technique, target, tmp_path,
                                                                             monkeypatch):
    monkeypatch.setenv("TRANSFER_STUDIO_HOME", str(tmp_path))
    run = _run_with_checkpoint({"technique": technique})
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["job"] = run.id
    at.run()
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    info = "\n".join(str(e.value) for e in at.info)
    assert f"The current run ({technique}) is not one classifier" in info
    assert "no run has a checkpoint yet" in info  # it is not in the run list: nothing to score here
    assert any(target in str(link.value) for link in at.get("page_link"))
