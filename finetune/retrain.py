"""The retrain pipeline: feedback → dataset → LoRA → GGUF → gate → registry → report.

    iris retrain                          # the profile for this machine, promote if better
    iris retrain --profile cpu-tiny --dry-run
    iris retrain --resume                 # continue the last unfinished run from its checkpoint
    iris retrain --force                  # promote even when the gate says no (it must still load and answer)

Each run lives in its own folder (``<retrain dir>/runs/<name>/``) with a
``state.json`` that records every finished step, so a killed run continues
where it stopped; training itself resumes from its last complete checkpoint.
The active model changes only in the ``promote`` step, the last but one: a
failed, refused or killed run leaves the bots serving what they served.
"""

from __future__ import annotations

import fcntl
import gc
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from core.ports import ModelRegistry
from finetune.gate import GateConfig, GateFailure, check_answers, evaluate
from finetune.profiles import BUNDLED, Profile, choose_backend, choose_quant, detect_precision
from finetune.training import TrainingData, read_jsonl

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
Status = Literal["running", "promoted", "refused", "failed", "dry-run"]

STEPS = ("dataset", "train", "merge", "export", "validate", "evaluate", "register", "promote", "report")


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock."""


class NothingToResume(RuntimeError):
    """--resume found no unfinished run."""


@dataclass(frozen=True)
class RetrainConfig:
    """Everything one run needs; ``iris retrain`` fills it from the settings."""

    database_url: str
    work_dir: Path  # runs go to work_dir/runs/NAME
    base_cache: Path  # bases converted from GGUF for transformers, reused across runs
    profile: Profile
    gate: GateConfig = field(default_factory=GateConfig)
    finetome: str = "sample"
    build: Any = None  # finetune.dataset.BuildConfig; None: its defaults
    dataset: Path | None = None  # an already built dataset folder, used as it is
    threads: int | None = None  # torch CPU threads; None: torch decides
    force: bool = False
    dry_run: bool = False
    resume: bool = False


@dataclass
class RetrainResult:
    """How a run ended, for the terminal, the JSON output and the chat."""

    status: Status
    name: str
    run_dir: Path
    message: str
    gguf: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "name": self.name,
            "run_dir": str(self.run_dir),
            "gguf": self.gguf,
            "message": self.message,
            "error": self.error,
            "metrics": self.metrics,
        }


# --- the run's folder and state --------------------------------------------------------


class Run:
    """A run's folder and ``state.json``: what finished, with its results and timings."""

    def __init__(self, directory: Path, state: dict[str, Any]) -> None:
        self.dir = directory
        self.state = state

    @classmethod
    def create(cls, work_dir: Path, profile: Profile, *, dry_run: bool) -> Run:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = f"{profile.name}-{stamp}" + ("-dry-run" if dry_run else "")
        directory = work_dir / "runs" / name
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = work_dir / "runs" / f"{name}-{suffix}"
        directory.mkdir(parents=True)
        state = {
            "name": directory.name,
            "status": "dry-run" if dry_run else "running",
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "profile": profile.to_dict(),
            "steps": {},
            "attempts": 1,
        }
        run = cls(directory, state)
        run.save()
        return run

    @classmethod
    def load(cls, directory: Path) -> Run:
        return cls(directory, json.loads((directory / "state.json").read_text()))

    @classmethod
    def unfinished(cls, work_dir: Path) -> Run | None:
        """The newest run that was killed or failed, if any."""
        runs = []
        for state_file in (work_dir / "runs").glob("*/state.json"):
            try:
                run = cls.load(state_file.parent)
            except (OSError, ValueError):
                continue
            if run.state.get("status") in ("running", "failed"):
                runs.append(run)
        return max(runs, key=lambda run: run.state["started"], default=None)

    @property
    def name(self) -> str:
        return str(self.state["name"])

    @property
    def profile(self) -> Profile:
        return Profile.from_dict(self.state["profile"])

    def done(self, step: str) -> bool:
        return step in self.state["steps"]

    def result(self, step: str) -> dict[str, Any]:
        return dict(self.state["steps"][step]["result"])

    def record(self, step: str, result: dict[str, Any], seconds: float) -> None:
        self.state["steps"][step] = {"result": result, "seconds": round(seconds, 2)}
        self.save()

    def finish(self, status: Status, error: str | None = None) -> None:
        self.state["status"] = status
        self.state["error"] = error
        self.state["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.save()

    def save(self) -> None:
        partial = self.dir / "state.json.partial"
        partial.write_text(json.dumps(self.state, indent=1, ensure_ascii=False, default=str))
        partial.replace(self.dir / "state.json")  # a kill mid-write keeps the previous state


@contextmanager
def exclusive(work_dir: Path) -> Iterator[None]:
    """One retrain at a time per retrain folder (the CLI and a chat /retrain share it)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with (work_dir / "retrain.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainBusy("another retrain is running; wait for it to finish") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the pipeline -----------------------------------------------------------------------------


class Pipeline:
    """Runs the steps of one run in order, skipping those a previous attempt finished."""

    def __init__(self, config: RetrainConfig, registry: ModelRegistry, run: Run, progress: Progress) -> None:
        self.config = config
        self.registry = registry
        self.run = run
        self.progress = progress
        self.profile = run.profile

    def execute(self, steps: tuple[str, ...] = STEPS) -> None:
        for step in steps:
            number = f"[{STEPS.index(step) + 1}/{len(STEPS)}]"
            if self.run.done(step):
                self.progress(f"{number} {step}: done in an earlier attempt")
                continue
            self.progress(f"{number} {step}")
            began = time.perf_counter()
            result = getattr(self, f"step_{step}")()
            seconds = time.perf_counter() - began
            self.run.record(step, result, seconds)
            self.progress(f"{number} {step}: {seconds:.1f} s")

    # --- steps ---

    @property
    def dataset_dir(self) -> Path:
        if self.run.done("dataset"):  # a resumed run keeps the dataset it started with
            return Path(self.run.result("dataset")["dir"])
        return self.config.dataset if self.config.dataset is not None else self.run.dir / "dataset"

    def step_dataset(self) -> dict[str, Any]:
        if self.config.dataset is not None:
            if not (self.config.dataset / "train.jsonl").exists():
                raise FileNotFoundError(
                    f"{self.config.dataset} has no train.jsonl (build one: iris dataset build)"
                )
            report_file = self.config.dataset / "report.json"
            report = json.loads(report_file.read_text()) if report_file.exists() else {}
        else:
            from finetune.dataset import BuildConfig, build_dataset

            build = self.config.build or BuildConfig()
            self.progress(f"exporting feedback and building the dataset (FineTome: {self.config.finetome})")
            built = build_dataset(
                self.config.finetome, self.dataset_dir, database_url=self.config.database_url, config=build
            )
            report = json.loads(built.to_json())
        return composition(self.dataset_dir, report)

    def _data(self) -> TrainingData:
        feedback = self.dataset_dir / "feedback"
        return TrainingData.from_files(
            self.dataset_dir / "train.jsonl",
            kto=feedback / "kto.jsonl",
            dpo=feedback / "dpo.jsonl",
            held_out=read_jsonl(self.dataset_dir / "eval_feedback.jsonl"),
        )

    def step_train(self) -> dict[str, Any]:
        from finetune.training import train

        result = train(
            self.profile,
            self._data(),
            self.run.dir / "train",
            base_cache=self.config.base_cache,
            resume=True,  # a fresh run has no checkpoints; a resumed one continues from its last
            threads=self.config.threads,
            progress=self.progress,
        )
        gc.collect()
        return result.to_dict()

    def step_merge(self) -> dict[str, Any]:
        from finetune.export import merge_adapter

        trained = self.run.result("train")
        merged = merge_adapter(
            trained["base"],
            Path(trained["adapter_dir"]),
            self.run.dir / "merged",
            backend=trained["backend"],
            max_seq_length=self.profile.max_seq_length,
        )
        gc.collect()
        return {"path": str(merged.path), "parameters": merged.parameters}

    def step_export(self) -> dict[str, Any]:
        from finetune.export import export_gguf, gguf_metadata

        merged = self.run.result("merge")
        quant = choose_quant(self.profile, merged["parameters"])
        gguf = export_gguf(Path(merged["path"]), self.run.dir, self.run.name, quant, progress=self.progress)
        # The GGUF holds everything now; the merged copy is the size of the model in float32.
        shutil.rmtree(merged["path"], ignore_errors=True)
        return {"gguf": str(gguf), "quant": quant, "bytes": gguf.stat().st_size, "header": gguf_metadata(gguf)}

    def step_validate(self) -> dict[str, Any]:
        gguf = self.run.result("export")["gguf"]
        answer = check_answers(gguf, self.config.gate.probe, self.config.gate.probe_tokens)
        self.progress(f"the new model answers {self.config.gate.probe!r} with {answer!r}")
        return {"question": self.config.gate.probe, "answer": answer}

    def step_evaluate(self) -> dict[str, Any]:
        gguf = self.run.result("export")["gguf"]
        active = self.registry.active_model()
        self.progress(
            f"scoring {Path(gguf).name} and the active model {active.name if active else '(none)'} "
            "on the held-out feedback and FineTome rows"
        )
        verdict = evaluate(
            gguf,
            active.gguf_path if active else None,
            self.dataset_dir / "eval_feedback.jsonl",
            self.dataset_dir / "eval_finetome.jsonl",
            self.config.gate,
            active_name=active.name if active else None,
        )
        for reason in verdict.reasons:
            self.progress(f"gate: {reason}")
        return verdict.metrics()

    def metrics(self) -> dict[str, Any]:
        trained = self.run.result("train")
        return {
            "run": self.run.name,
            "run_dir": str(self.run.dir),
            "profile": self.profile.name,
            "objective": self.profile.objective,
            "training": {key: value for key, value in trained.items() if key != "stages"}
            | {"stages": [{k: v for k, v in s.items() if k != "losses"} for s in trained["stages"]]},
            "dataset": self.run.result("dataset"),
            "export": {k: v for k, v in self.run.result("export").items() if k != "header"},
            "gate": self.run.result("evaluate"),
        }

    def step_register(self) -> dict[str, Any]:
        gguf = self.run.result("export")["gguf"]
        base = self.profile.base_model
        if base == BUNDLED:
            from core.generation import BUNDLED_BASE_MODEL

            base = BUNDLED_BASE_MODEL
        version = self.registry.register_model(self.run.name, gguf, base, self.metrics())
        return {"name": version.name, "id": version.id}

    def step_promote(self) -> dict[str, Any]:
        gate = self.run.result("evaluate")
        if gate["passed"] or self.config.force:
            previous = self.registry.active_model()
            metrics = self.metrics() | {"forced": not gate["passed"]}
            self.registry.register_model(self.run.name, self.run.result("export")["gguf"], None, metrics)
            self.registry.activate_model(self.run.name)
            self.progress(f"promoted {self.run.name}: the bots serve it from their next reply")
            return {
                "promoted": True,
                "forced": not gate["passed"],
                "previous": previous.name if previous else None,
            }
        self.progress(f"refused {self.run.name}: the active model stays")
        return {"promoted": False, "forced": False}

    def step_report(self) -> dict[str, Any]:
        files = write_report(self.run)
        return {key: str(value) for key, value in files.items()}


def composition(dataset_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """What the run trains and is judged on: rows per split and per source."""
    splits = {
        name: sum(1 for line in (dataset_dir / f"{name}.jsonl").open() if line.strip())
        if (dataset_dir / f"{name}.jsonl").exists()
        else 0
        for name in ("train", "eval_feedback", "eval_finetome")
    }
    feedback = dataset_dir / "feedback"
    return {
        "dir": str(dataset_dir),
        "splits": splits,
        "train_sources": report.get("train_sources", {}),
        "kto_rows": len(read_jsonl(feedback / "kto.jsonl")),
        "dpo_rows": len(read_jsonl(feedback / "dpo.jsonl")),
        "build_steps": {step["name"]: step["counts"] for step in report.get("steps", [])},
    }


# --- the entry point -----------------------------------------------------------------------------


def retrain(config: RetrainConfig, registry: ModelRegistry, progress: Progress = print) -> RetrainResult:
    """Run (or resume) one retrain; never raises for a failed step — the outcome says what happened.

    ``RetrainBusy`` and ``NothingToResume`` are raised before anything starts.
    """
    with exclusive(config.work_dir):
        if config.resume:
            found = Run.unfinished(config.work_dir)
            if found is None:
                raise NothingToResume(f"no unfinished run in {config.work_dir / 'runs'} to resume")
            run = found
            run.state["attempts"] = run.state.get("attempts", 1) + 1
            run.state["status"] = "running"
            run.save()
            progress(f"resuming {run.name} (attempt {run.state['attempts']})")
        else:
            run = Run.create(config.work_dir, config.profile, dry_run=config.dry_run)
            progress(f"retrain {run.name}: profile {config.profile.name}, objective {config.profile.objective}")
        pipeline = Pipeline(config, registry, run, progress)
        if config.dry_run:
            return _dry_run(pipeline)
        try:
            pipeline.execute(STEPS[:5])  # dataset … validate
        except GateFailure as refusal:
            pipeline.execute(("report",))
            return _finish(pipeline, "refused", f"{refusal}; nothing was registered", str(refusal))
        except Exception as error:
            log.exception("retrain %s failed", run.name)
            run.finish("failed", f"{type(error).__name__}: {error}")
            message = (
                f"{run.name} failed: {error}. The active model is unchanged; `iris retrain --resume` continues."
            )
            return RetrainResult("failed", run.name, run.dir, message, error=f"{type(error).__name__}: {error}")
        try:
            pipeline.execute(STEPS[5:])
        except Exception as error:
            log.exception("retrain %s failed", run.name)
            run.finish("failed", f"{type(error).__name__}: {error}")
            message = f"{run.name} failed: {error}. `iris retrain --resume` continues."
            return RetrainResult("failed", run.name, run.dir, message, error=f"{type(error).__name__}: {error}")
        promoted = run.result("promote")["promoted"]
        return _finish(pipeline, "promoted" if promoted else "refused", None, None)


def _failed(run: Run, error: Exception) -> RetrainResult:
    log.exception("retrain %s failed", run.name)
    what = f"{type(error).__name__}: {error}"
    run.finish("failed", what)
    message = f"{run.name} failed: {error}. The active model is unchanged; `iris retrain --resume` continues."
    return RetrainResult("failed", run.name, run.dir, message, error=what)


def _finish(pipeline: Pipeline, status: Status, reason: str | None, error: str | None) -> RetrainResult:
    run = pipeline.run
    run.finish(status, error)
    if run.done("report"):
        write_report(run)  # again, now that the run's final status is known
    text = summary(run)
    if reason:
        text = f"{text}\n{reason}"
    gguf = run.result("export")["gguf"] if run.done("export") else None
    metrics = pipeline.metrics() if run.done("evaluate") else {}
    return RetrainResult(status, run.name, run.dir, text, gguf, metrics, error)


def _dry_run(pipeline: Pipeline) -> RetrainResult:
    """Build the dataset and say what a real run would do; train nothing, change nothing."""
    run, profile = pipeline.run, pipeline.profile
    pipeline.execute(("dataset",))
    data = pipeline._data()
    backend = choose_backend(profile)
    rows = len(data.sft_rows())
    per_step = profile.batch_size * profile.grad_accum
    steps = profile.max_steps if profile.max_steps > 0 else max(1, round(rows * profile.epochs / per_step))
    active = pipeline.registry.active_model()
    plan: dict[str, Any] = {
        "profile": profile.name,
        "base_model": profile.base_model,
        "backend": backend,
        "precision": detect_precision().name,
        "stages": profile.stages,
        "sft_rows": rows,
        "kto_rows": len(data.kto),
        "dpo_rows": len(data.dpo),
        "steps": steps,
        "learning_rate": profile.learning_rate,
        "active_model": active.name if active else None,
        "dataset": run.result("dataset"),
    }
    run.state["plan"] = plan
    run.finish("dry-run")
    lines = [
        f"dry run {run.name}: nothing trained, the registry unchanged",
        f"profile {profile.name} on {profile.base_model} with {backend} ({plan['precision']}), "
        f"stages {' then '.join(profile.stages)}",
        f"{rows} training rows ({_sources(plan['dataset'])}), {steps} steps at lr {profile.learning_rate:g}",
        f"held out: {plan['dataset']['splits']['eval_feedback']} feedback, "
        f"{plan['dataset']['splits']['eval_finetome']} FineTome rows; "
        f"KTO rows {plan['kto_rows']}, DPO rows {plan['dpo_rows']}",
        f"compared with the active model: {plan['active_model'] or '(none)'}",
    ]
    pipeline.progress("\n".join(lines))
    return RetrainResult("dry-run", run.name, run.dir, "\n".join(lines), metrics={"plan": plan})


def _sources(dataset: dict[str, Any]) -> str:
    sources = dataset.get("train_sources") or {}
    feedback = sum(n for source, n in sources.items() if source.startswith("iris-feedback"))
    return f"{feedback} from feedback, {sum(sources.values()) - feedback} from FineTome"


# --- the report ------------------------------------------------------------------------------------


def write_report(run: Run) -> dict[str, Path]:
    """``report.json``, ``report.md`` and ``loss.png`` in the run's folder, next to its GGUF."""
    files = {"json": run.dir / "report.json", "markdown": run.dir / "report.md"}
    report = {"name": run.name, "status": run.state.get("status"), **run.state}
    files["json"].write_text(json.dumps(report, indent=1, ensure_ascii=False, default=str))
    losses = loss_points(run)
    if losses:
        files["loss_curve"] = plot_losses(losses, run.dir / "loss.png", run.name)
    files["markdown"].write_text(summary(run, markdown=True) + "\n")
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
            f"dataset: {splits['train']} training rows ({_sources(data)}); held out "
            f"{splits['eval_feedback']} feedback and {splits['eval_finetome']} FineTome rows; "
            f"KTO {data['kto_rows']}, DPO {data['dpo_rows']} rows exported"
        )
    if run.done("train"):
        trained = run.result("train")
        for stage in trained["stages"]:
            if stage.get("skipped"):
                lines.append(f"{stage['name']}: skipped ({stage['skipped']})")
                continue
            pace = f", {stage['seconds_per_step']:.2f} s/step" if stage.get("seconds_per_step") else ""
            resumed = f", resumed from {stage['resumed_from']}" if stage.get("resumed_from") else ""
            last = f", last loss {stage['losses'][-1][1]:.4f}" if stage["losses"] else ""
            lines.append(
                f"{stage['name']}: {stage['steps']} steps on {stage['rows']} rows with {trained['backend']} "
                f"({trained['precision']}) in {stage['seconds']:.1f} s{pace}{resumed}{last}"
            )
    if run.done("validate"):
        probe = run.result("validate")
        lines.append(f"answers {probe['question']!r} with {probe['answer']!r}")
    if run.done("evaluate"):
        gate = run.result("evaluate")
        lines.append(
            f"gate ({'passed' if gate['passed'] else 'failed'}, vs {gate['compared_with'] or 'nothing'}):"
        )
        lines.extend(f"  {reason}" for reason in gate["reasons"])
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


def _outcome_words(run: Run) -> str:
    status = run.state.get("status")
    if run.done("promote"):
        promote = run.result("promote")
        if promote["promoted"]:
            return "promoted (forced past the gate)" if promote["forced"] else "promoted: the bots now serve it"
        return "refused by the gate: the active model stays"
    if status == "refused":
        return f"refused: {run.state.get('error')}"
    return str(status)
