"""A retrain run's report: ``report.json``, ``report.md`` and the loss curve, and its terminal summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.files import atomic_write
from finetune.runs import Run


def sources(dataset: dict[str, Any]) -> str:
    """Where the training rows came from, in words."""
    sources = dataset.get("train_sources") or {}
    feedback = sum(n for source, n in sources.items() if source.startswith("iris-feedback"))
    return f"{feedback} from feedback, {sum(sources.values()) - feedback} from FineTome"


def write_report(run: Run) -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``loss.png`` in the run's folder, next to its GGUF."""
    files = {"json": run.dir / "report.json", "markdown": run.dir / "report.md"}
    report = {"name": run.name, "status": run.state.get("status"), **run.state}
    atomic_write(files["json"], json.dumps(report, indent=1, ensure_ascii=False, default=str).encode())
    losses = loss_points(run)
    if losses:
        files["loss_curve"] = plot_losses(losses, run.dir / "loss.png", run.name)
    atomic_write(files["markdown"], (summary(run, markdown=True) + "\n").encode())
    return files


def loss_points(run: Run) -> dict[str, list[tuple[int, float]]]:
    """Training loss by stage and step."""
    if not run.done("train"):
        return {}
    return {
        stage["name"]: [(int(step), float(loss)) for step, loss in stage["losses"]]
        for stage in run.result("train")["stages"]
        if stage["losses"]
    }


def plot_losses(losses: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on a server, and none needed for a file
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    offset = 0
    for stage, points in losses.items():
        steps = [offset + step for step, _ in points]
        axes.plot(steps, [loss for _, loss in points], marker="." if len(points) < 40 else None, label=stage)
        offset = steps[-1]
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_title(f"{title}: training loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def summary(run: Run, *, markdown: bool = False) -> str:
    """What the run did, in a few lines: outcome, data, training, gate figures, timings, files."""
    state = run.state
    lines = [f"retrain {run.name}: {_outcome_words(run)}"]
    if run.done("dataset"):
        data = run.result("dataset")
        splits = data["splits"]
        lines.append(
            f"dataset: {splits['train']} training rows ({sources(data)}); held out "
            f"{splits['eval_feedback']} feedback and {splits['eval_finetome']} FineTome rows; "
            f"KTO {data['kto_rows']}, DPO {data['dpo_rows']} rows exported"
        )
    if run.done("train"):
        trained = run.result("train")
        for stage in trained["stages"]:
            lines.extend(stage_block(stage, f"{trained['backend']} ({trained['precision']})"))
    if run.done("validate"):
        probe = run.result("validate")
        lines.append(f"answers {probe['question']!r} with {probe['answer']!r}")
    if run.done("evaluate"):
        gate = run.result("evaluate")
        lines.append(
            f"gate ({'passed' if gate['passed'] else 'failed'}, vs {gate['compared_with'] or 'nothing'}):"
        )
        lines.extend(f"  {reason}" for reason in gate["reasons"])
        if facts := gate.get("facts"):
            reverse = [f for f in facts if f.get("reverse")]
            lines.append(
                f"  known by the model alone (its question and ≥ 2 of 3 unseen wordings): "
                f"{sum(bool(f.get('known')) for f in facts)}/{len(facts)} taught facts; reverse recalled "
                f"{sum(bool(f.get('reverse_recalled')) for f in reverse)}/{len(reverse)}"
            )
        if not gate["passed"] and gate.get("next_steps"):
            lines.append("What to do next:")
            lines.extend(f"  {step}" for step in gate["next_steps"])
    timings = [f"{step} {entry['seconds']:.1f} s" for step, entry in state["steps"].items()]
    if timings:
        lines.append("timings: " + " · ".join(timings))
    if run.done("export"):
        lines.append(f"model: {run.result('export')['gguf']}")
    lines.append(f"report: {run.dir / 'report.md'}" + (f", {run.dir / 'loss.png'}" if loss_points(run) else ""))
    if markdown:
        body = "\n".join(
            f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}" for line in lines[1:]
        )
        image = "\n\n![training loss](loss.png)" if loss_points(run) else ""
        return f"# {lines[0]}\n\n{body}{image}"
    return "\n".join(lines)


def stage_block(stage: dict[str, Any], backend: str) -> list[str]:
    """One stage of the training step in plain text: its rows by kind, steps, first and last loss,
    seconds, what it started from and was measured against, and TRL's key figures (first → last)."""
    name, kinds = stage["name"], stage.get("examples") or {}
    if name == "kto" and kinds:
        rows = f"{stage['rows']} ratings ({kinds.get('up', 0)} 👍, {kinds.get('down', 0)} 👎)"
    elif name == "dpo" and kinds:
        rows = f"{stage['rows']} pairs (approved correction chosen, the bot's reply rejected)"
    else:
        rows = f"{stage['rows']} rows"
    if stage.get("skipped"):
        return [f"{name}: skipped ({stage['skipped']}); {rows}, nothing trained"]
    pace = f", {stage['seconds_per_step']:.2f} s/step" if stage.get("seconds_per_step") else ""
    resumed = f", resumed from {stage['resumed_from']}" if stage.get("resumed_from") else ""
    losses = stage.get("losses") or []
    loss = f"; loss {losses[0][1]:.4f} → {losses[-1][1]:.4f}" if losses else ""
    took = f"in {stage['seconds']:.1f} s{pace}{resumed}{loss}"
    lines = [f"{name}: {stage['steps']} steps on {rows} with {backend} {took}"]
    if stage.get("started_from"):
        lines.append(f"  started from {stage['started_from']}")
    if stage.get("reference"):
        lines.append(f"  reference: {stage['reference']}")
    figures = stage.get("metrics") or {}
    if figures:
        lines.append(
            "  TRL's log, first → last step: "
            + ", ".join(f"{key} {first:.4f} → {last:.4f}" for key, (first, last) in figures.items())
        )
    return lines


def _outcome_words(run: Run) -> str:
    status = run.state.get("status")
    if run.done("promote"):
        promote = run.result("promote")
        if promote["promoted"]:
            return "promoted (forced past the gate)" if promote["forced"] else "promoted: the bots now serve it"
        if promote.get("ab"):
            ab = promote["ab"]
            return (
                f"in A/B test {ab['experiment']}: it answers {ab['share']:.0%} of conversations until "
                f"both arms have {ab['min_ratings']} ratings; then the ratings decide"
            )
        if promote.get("ab_refused"):
            return f"no A/B test ({promote['ab_refused']}): it stays registered, inactive"
        return "refused by the gate: the active model stays"
    if status == "refused":
        return f"refused: {run.state.get('error')}"
    return str(status)
