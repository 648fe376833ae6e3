"""KTO and DPO trained through ``iris retrain``, on the feedback people gave through the real service.

The runs are those of ``test_retrain.py`` (its seed: six people correct the same
fact, approved, and one 👍; its deployment and shared base cache), with
``IRIS_RETRAIN_OBJECTIVE`` ``sft+kto`` or ``sft+dpo``, two SFT steps and two
preference steps: enough to run TRL's KTOTrainer and DPOTrainer on the SFT
adapter as production does, not to teach anything. The module's ``seeded`` and
``deployment`` are ``test_retrain``'s fixtures, imported.

What is checked is what the run stored and said: every step done, the stage's
rows by kind against what people did (``iris stats``), the SFT adapter as the
stage's start and reference (the tensors, not only the record), the gate's
verdict on the result, and one block per stage in the report and the output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from bots.cli import app as cli_app
from finetune.retrain import STEPS
from finetune.runs import Run
from tests.finetune import test_retrain
from tests.finetune.test_retrain import Deployment

pytest.importorskip("trl", reason="the retrain tests need the train-cpu extras: pip install -e '.[train-cpu]'")

STAGES = {
    "IRIS_RETRAIN_MAX_STEPS": "2",
    "IRIS_RETRAIN_PREFERENCE_STEPS": "2",
    # Nothing held out: a rating asking a held-out question would leave the KTO rows (as it should),
    # and then they would no longer be every rating given.
    "IRIS_DATASET_EVAL_FRACTION": "0",
    # The gate runs on the result, as in every run; fewer and shorter answers keep it to seconds.
    "IRIS_GATE_PROBE_QUESTIONS": "4",
    "IRIS_GATE_PROBE_ANSWER_TOKENS": "12",
    "IRIS_GATE_FACT_ANSWER_TOKENS": "16",
}

# test_retrain's fixtures, requested here by name: its seed, a deployment on a copy of it, the base cache.
seeded, deployment, base_cache = test_retrain.seeded, test_retrain.deployment, test_retrain.base_cache


def iris_retrain(deployment: Deployment, objective: str) -> tuple[Result, Run]:
    """``iris retrain`` as an admin types it, with ``objective``; the run it made."""
    env = {**deployment.env, **STAGES, "IRIS_RETRAIN_OBJECTIVE": objective}
    result = CliRunner().invoke(cli_app, ["retrain"], env=env)
    assert result.exit_code == 0, result.output[-4000:]
    (run_dir,) = deployment.runs.iterdir()
    return result, Run.load(run_dir)


def ratings(deployment: Deployment) -> tuple[int, int]:
    """The 👍 and 👎 people gave, as ``iris stats --json`` shows an admin."""
    shown = CliRunner().invoke(cli_app, ["stats", "--json"], env=deployment.env)
    assert shown.exit_code == 0, shown.output
    by_model = json.loads(shown.output)["by_model"]
    return sum(m["up"] for m in by_model), sum(m["down"] for m in by_model)


def adapter_tensors(adapter: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def check_preference_stage(run: Run, output: str, name: str) -> dict[str, Any]:
    """What a preference stage must show: trained after SFT, from and against its adapter, gated, reported."""
    import torch

    assert all(run.done(step) for step in STEPS), run.state["steps"].keys()
    trained = run.result("train")
    sft, stage = trained["stages"]
    assert isinstance(stage, dict)
    assert (sft["name"], stage["name"]) == ("sft", name)
    assert sft["skipped"] is None and stage["skipped"] is None
    assert stage["steps"] == 2 and [step for step, _ in stage["losses"]] == [1, 2]
    for done in ("sft", name):
        assert (run.dir / "train" / done / "done.json").exists()

    # The stage continued the SFT adapter and TRL measured it against a frozen copy of it.
    sft_adapter, stage_adapter = run.dir / "train" / "sft" / "adapter", run.dir / "train" / name / "adapter"
    assert stage["started_from"] == str(sft_adapter)
    assert stage["reference"] == "a frozen copy of the sft adapter (TRL's 'ref' adapter)"
    before, after = adapter_tensors(sft_adapter), adapter_tensors(stage_adapter)
    reference = adapter_tensors(stage_adapter / "ref")  # TRL's reference, saved beside the adapter
    assert before.keys() == after.keys() == reference.keys()
    assert all(torch.equal(before[key], reference[key]) for key in before)
    changed = [key for key in before if not torch.equal(before[key], after[key])]
    assert changed, f"the {name} stage left the SFT adapter as it was"
    # After the first update the policy has moved away from the frozen reference: a reward (β times the
    # log-ratio of policy and reference) is beyond float noise (KTO logged 1.5e-4 at step 1, before any update).
    rewards = [
        last for key, (_, last) in stage["metrics"].items() if key in ("rewards/chosen", "rewards/rejected")
    ]
    assert any(abs(reward) > 1e-3 for reward in rewards), stage["metrics"]

    # The model that was exported and gated is the stage's, and the gate's verdict is stored with it.
    assert trained["adapter_dir"] == str(stage_adapter)
    gate = run.result("evaluate")
    assert isinstance(gate["passed"], bool) and gate["reasons"]
    assert run.result("register")["name"] == run.name

    # One block per stage, in the stored report and in what `iris retrain` printed.
    report = (run.dir / "report.md").read_text()
    stored = json.loads((run.dir / "report.json").read_text())
    assert stored["steps"]["train"]["result"]["stages"][1] == stage
    for text in (report, output):
        assert f"sft: 2 steps on {sft['rows']} rows with trl (fp32)" in text
        assert f"{name}: 2 steps on {stage['rows']} " in text
        assert f"started from {sft_adapter}" in text
        assert "reference: a frozen copy of the sft adapter" in text
        assert "TRL's log, first → last step: " in text
        first, last = stage["losses"][0][1], stage["losses"][-1][1]
        assert f"loss {first:.4f} → {last:.4f}" in text
    return stage


def test_kto_trains_on_every_rating_after_sft_against_the_sft_adapter(deployment: Deployment) -> None:
    up, down = ratings(deployment)
    assert up and down  # the seed has both

    result, run = iris_retrain(deployment, "sft+kto")

    stage = check_preference_stage(run, result.output, "kto")
    assert stage["examples"] == {"up": up, "down": down}
    assert stage["rows"] == up + down == run.result("dataset")["kto_rows"]
    assert {"rewards/chosen", "rewards/rejected", "kl"} <= stage["metrics"].keys()
    assert f"kto: 2 steps on {up + down} ratings ({up} 👍, {down} 👎)" in result.output


def test_dpo_trains_on_the_correction_pairs_after_sft_against_the_sft_adapter(deployment: Deployment) -> None:
    result, run = iris_retrain(deployment, "sft+dpo")

    stage = check_preference_stage(run, result.output, "dpo")
    pairs = run.result("dataset")["dpo_rows"]
    approved = deployment.app.store.stats().corrections_approved
    assert 1 <= pairs <= approved  # a correction equal to the reply it corrects is no pair
    assert stage["examples"] == {"pairs": pairs} and stage["rows"] == pairs
    assert {"rewards/margins", "rewards/accuracies"} <= stage["metrics"].keys()
    assert f"dpo: 2 steps on {pairs} pairs (approved correction chosen" in result.output


async def test_kto_with_only_thumbs_up_is_skipped_with_its_reason_and_sft_still_runs(
    deployment: Deployment,
) -> None:
    """The people who pressed 👎 change their minds; KTO has nothing to contrast, and says so."""
    from core.domain import CorrectionStatus

    app = deployment.app
    for correction in app.store.corrections(CorrectionStatus.APPROVED):
        await app.service.feedback.rate(correction.person, correction.turn_id, up=True)
    up, down = ratings(deployment)
    assert up and not down

    result, run = iris_retrain(deployment, "sft+kto")

    reason = f"KTO learns from 👍 against 👎 and needs both; the feedback has {up} 👍 and 0 👎 it may train on"
    assert f"kto: will be skipped ({reason})" in result.output  # said before anything trains
    assert all(run.done(step) for step in STEPS)  # the corrections are still taught, and gated
    sft, kto = run.result("train")["stages"]
    assert sft["skipped"] is None and sft["steps"] == 2
    assert kto["skipped"] == reason and kto["steps"] == 0 and kto["examples"] == {"up": up, "down": 0}
    assert run.result("train")["adapter_dir"] == str(run.dir / "train" / "sft" / "adapter")
    block = f"kto: skipped ({reason}); {up} ratings ({up} 👍, 0 👎), nothing trained"
    assert block in result.output and block in (run.dir / "report.md").read_text()
    assert "Traceback" not in result.output
