"""The retrain pipeline: feedback → dataset → LoRA → GGUF → gate → registry → report.

    iris retrain                          # the profile for this machine, promote if better
    iris retrain --profile cpu-tiny --dry-run
    iris retrain --resume                 # continue the last unfinished run from its checkpoint
    iris retrain --force                  # promote even when the gate says no (it must still load and answer)
    iris retrain --ab 0.2                 # a candidate that passes goes to an A/B test on 20 % of conversations

Each run lives in its own folder (``<retrain dir>/runs/<name>/``) with a
``state.json`` that records every finished step, so a killed run continues
where it stopped; training itself resumes from its last complete checkpoint.
The active model changes only in the ``promote`` step, the last but one: a
failed, refused or killed run leaves the bots serving what they served.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.ab import start as start_ab
from core.experiments import ABConfig
from core.ports import AuditLog, Experiments, ModelRegistry
from finetune import jsonl
from finetune.config import BuildConfig, FeedbackConfig, GateConfig
from finetune.duplicates import normalize
from finetune.gate import NEXT_NO_ANSWER, GateFailure, check_answers, check_servable, evaluate, probe_questions
from finetune.profiles import BUNDLED, Profile, choose_backend, choose_quant, detect_precision
from finetune.report import sources, summary, write_report
from finetune.rows import prompt_and_answer
from finetune.runs import Progress, Run, Status, exclusive
from finetune.stages import preference_gap
from finetune.teaching import Fact, facts_from_export, read_facts, write_facts
from finetune.training_data import TrainingData, teaching_steps

log = logging.getLogger(__name__)


UNTAUGHT = "eval_feedback_untaught.jsonl"  # held-out feedback asking no taught question

STEPS = ("dataset", "train", "merge", "export", "validate", "evaluate", "register", "promote", "report")


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
    build: BuildConfig = field(default_factory=BuildConfig)  # FineTome, filters, splits
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)  # consent, scrubbing, context
    dataset: Path | None = None  # an already built dataset folder, used as it is
    threads: int | None = None  # torch CPU threads; None: torch decides
    force: bool = False
    dry_run: bool = False
    resume: bool = False
    # A/B test instead of promotion: the candidate's share of conversations (None: promote at once),
    # and the rule's ratings per arm and margin (core.experiments).
    ab_share: float | None = None
    ab: ABConfig = field(default_factory=ABConfig)
    data_dir: Path | None = None  # where the deployment's pseudonym key is (finetune.feedback.Pseudonyms)


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
        """The fields as ``iris retrain --json`` prints them."""
        return asdict(self) | {"run_dir": str(self.run_dir)}


# --- the pipeline -----------------------------------------------------------------------------


class Pipeline:
    """Runs the steps of one run in order, skipping those a previous attempt finished."""

    def __init__(
        self,
        config: RetrainConfig,
        registry: ModelRegistry,
        run: Run,
        progress: Progress,
        experiments: Experiments | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.experiments = experiments
        self.audit = audit
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
            from finetune.dataset import build_dataset
            from finetune.feedback import Pseudonyms

            build = self.config.build
            self.progress(f"exporting feedback and building the dataset (FineTome: {build.finetome})")
            built = build_dataset(
                build.finetome,
                self.dataset_dir,
                database_url=self.config.database_url,
                config=build,
                feedback=self.config.feedback,
                pseudonyms=Pseudonyms.of_deployment(self.config.data_dir) if self.config.data_dir else None,
            )
            report = json.loads(built.to_json())
        facts, anchors = self._anchored(taught_facts(self.dataset_dir))
        write_facts(self.dataset_dir / "teach.json", facts)
        for fact in facts:
            self.progress(
                f"taught: {fact.question!r} → {fact.answer!r} ({fact.corrections} corrections, "
                f"{len(fact.train_wordings)} training wordings, {len(fact.held_out)} held out, "
                f"{len(fact.anchors)} anchors; key words {', '.join(fact.keywords)})"
            )
        return composition(self.dataset_dir, report) | {"facts": len(facts), "anchors": anchors}

    def _anchored(self, facts: list[Fact]) -> tuple[list[Fact], dict[str, Any]]:
        """The facts with their anchor rows (``finetune.anchors``), answered by the GGUF training starts at."""
        from finetune.anchors import base_answers, with_anchors
        from finetune.base_model import resolve_base
        from finetune.probe import load_probe

        base = resolve_base(self.profile.base_model)
        active = self.registry.active_model()
        # The base's own GGUF; else the active version when it was trained from the same base (a Hub id).
        same = active is not None and active.base_model == self.profile.base_model
        gguf = base if base.endswith(".gguf") else active.gguf_path if active and same else None
        if not facts or gguf is None:
            return facts, {"rows": 0, "skipped": 0, "answered_by": None}
        began = time.perf_counter()
        probe = [q.question for q in load_probe()]
        anchored, skipped = with_anchors(facts, base_answers(gguf, self.config.gate.fact_answer_tokens), probe)
        rows = sum(len(fact.anchors) for fact in anchored)
        self.progress(f"anchors: {rows} questions around the taught facts answered by {Path(gguf).name}")
        seconds = round(time.perf_counter() - began, 1)
        return anchored, {"rows": rows, "skipped": skipped, "answered_by": Path(gguf).name, "seconds": seconds}

    def _held_out_feedback(self) -> Path:
        untaught = self.dataset_dir / UNTAUGHT
        return untaught if untaught.exists() else self.dataset_dir / "eval_feedback.jsonl"

    @property
    def facts(self) -> list[Fact]:
        return read_facts(self.dataset_dir / "teach.json")

    def _data(self) -> TrainingData:
        feedback = self.dataset_dir / "feedback"
        return TrainingData.from_files(
            self.dataset_dir / "train.jsonl",
            kto=feedback / "kto.jsonl",
            dpo=feedback / "dpo.jsonl",
            held_out=jsonl.read_finetome(self._held_out_feedback(), missing_ok=True),
            facts=self.facts,
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
            "on the taught facts, the general-knowledge probe and the held-out feedback and FineTome rows"
        )
        verdict = evaluate(
            gguf,
            active.gguf_path if active else None,
            self._held_out_feedback(),
            self.dataset_dir / "eval_finetome.jsonl",
            self.config.gate,
            active_name=active.name if active else None,
            facts=self.facts,
            probe=probe_questions(self.config.gate),
            probe_cache=self.config.work_dir / "probe-answers.json",
            finetome_synthetic=self.config.build.finetome == "sample",
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
            from core.gguf import BUNDLED_BASE_MODEL

            base = BUNDLED_BASE_MODEL
        version = self.registry.register_model(self.run.name, gguf, base, self.metrics())
        return {"name": version.name, "id": version.id}

    def step_promote(self) -> dict[str, Any]:
        gate = self.run.result("evaluate")
        if gate["passed"] or self.config.force:
            check_servable(self.run.result("export")["gguf"])  # a file that no longer loads is never served
        if self.config.ab_share is not None and (gate["passed"] or self.config.force):
            return self._start_ab(self.config.ab_share)
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

    def _start_ab(self, share: float) -> dict[str, Any]:
        """Serve the candidate to ``share`` of conversations; the people's ratings decide (core.ab)."""
        if self.experiments is None:
            raise RuntimeError("an A/B test needs the experiments store")
        try:
            experiment = start_ab(
                self.experiments,
                self.audit,
                self.run.name,
                share=share,
                min_ratings=self.config.ab.min_ratings,
                margin=self.config.ab.margin,
                actor="retrain",
            )
        except ValueError as refused:
            self.progress(f"no A/B test for {self.run.name}: {refused}; it stays registered, inactive")
            return {"promoted": False, "forced": False, "ab": None, "ab_refused": str(refused)}
        self.progress(
            f"A/B test {experiment.id}: {self.run.name} answers {share:.0%} of conversations "
            f"from the next reply; the rule decides at {experiment.min_ratings} ratings on both arms"
        )
        ab = {"experiment": experiment.id, "share": share, "min_ratings": experiment.min_ratings}
        return {"promoted": False, "forced": False, "ab": ab}

    def step_report(self) -> dict[str, Any]:
        files = write_report(self.run)
        return {key: str(value) for key, value in files.items()}


def taught_facts(dataset_dir: Path) -> list[Fact]:
    """Every approved correction of the dataset's feedback export, grouped into facts, and the
    held-out feedback the gate may still use: the rows that ask no taught question.

    Every correction is taught, also one whose question the build held out (with a
    handful of questions, holding one out would leave that fact untaught); such a row
    is no longer held out, so ``eval_feedback_untaught.jsonl`` leaves it out.
    """
    facts = facts_from_export(dataset_dir / "feedback")
    taught = {normalize(q) for fact in facts for q in fact.questions}
    untaught = []
    for row in jsonl.read_finetome(dataset_dir / "eval_feedback.jsonl", missing_ok=True):
        pair = prompt_and_answer(row)
        if pair and normalize(pair[0][-1]["content"]) not in taught:
            untaught.append(row)
    jsonl.write(dataset_dir / UNTAUGHT, untaught)
    return facts


def composition(dataset_dir: Path, report: dict[str, Any]) -> dict[str, Any]:
    """What the run trains and is judged on: rows per split and per source."""
    splits = {
        name: jsonl.count(dataset_dir / f"{name}.jsonl") for name in ("train", "eval_feedback", "eval_finetome")
    }
    feedback = dataset_dir / "feedback"
    return {
        "dir": str(dataset_dir),
        "splits": splits,
        "train_sources": report.get("train_sources", {}),
        "kto_rows": jsonl.count(feedback / "kto.jsonl"),
        "dpo_rows": jsonl.count(feedback / "dpo.jsonl"),
        "build_steps": {step["name"]: step["counts"] for step in report.get("steps", [])},
    }


# --- the entry point -----------------------------------------------------------------------------


def retrain(
    config: RetrainConfig,
    registry: ModelRegistry,
    progress: Progress = print,
    experiments: Experiments | None = None,
    audit: AuditLog | None = None,
) -> RetrainResult:
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
            run.claim()
            run.save()
            progress(f"resuming {run.name} (attempt {run.state['attempts']})")
        else:
            run = Run.create(config.work_dir, config.profile, dry_run=config.dry_run)
            progress(f"retrain {run.name}: profile {config.profile.name}, objective {config.profile.objective}")
        pipeline = Pipeline(config, registry, run, progress, experiments, audit)
        if config.dry_run:
            return _dry_run(pipeline)
        try:
            pipeline.execute(STEPS[:5])  # dataset … validate
        except GateFailure as refusal:
            pipeline.execute(("report",))
            reason = f"{refusal}; nothing was registered\nWhat to do next: {NEXT_NO_ANSWER}"
            return _finish(pipeline, "refused", reason, str(refusal))
        except Exception as error:
            _log_failure(run.name, error)
            run.finish("failed", f"{type(error).__name__}: {error}")
            message = (
                f"{run.name} failed: {error}. The active model is unchanged; `iris retrain --resume` continues."
            )
            return RetrainResult("failed", run.name, run.dir, message, error=f"{type(error).__name__}: {error}")
        try:
            pipeline.execute(STEPS[5:])
        except Exception as error:
            _log_failure(run.name, error)
            run.finish("failed", f"{type(error).__name__}: {error}")
            message = f"{run.name} failed: {error}. `iris retrain --resume` continues."
            return RetrainResult("failed", run.name, run.dir, message, error=f"{type(error).__name__}: {error}")
        promote = run.result("promote")
        status: Status = "promoted" if promote["promoted"] else "ab-test" if promote.get("ab") else "refused"
        return _finish(pipeline, status, None, None)


def _log_failure(name: str, error: Exception) -> None:
    """A failed step in the log: one line for the machine's state (a full disk, a read-only or missing
    file: the error names the file), a traceback for anything else, which is a bug to look into."""
    if isinstance(error, OSError):
        log.error("retrain %s failed: %s", name, error)
    else:
        log.exception("retrain %s failed", name)


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
    rows = len(data.sft_rows(profile.teach_weight, profile.teach_wordings))
    per_step = profile.batch_size * profile.grad_accum
    most = teaching_steps(profile, len(data.facts))
    steps = most if most > 0 else max(1, round(rows * profile.epochs / per_step))
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
        f"{rows} training rows ({sources(plan['dataset'])}), {steps} steps at lr {profile.learning_rate:g}",
        f"held out: {plan['dataset']['splits']['eval_feedback']} feedback, "
        f"{plan['dataset']['splits']['eval_finetome']} FineTome rows; "
        f"KTO rows {plan['kto_rows']}, DPO rows {plan['dpo_rows']}",
        f"compared with the active model: {plan['active_model'] or '(none)'}",
    ]
    gaps = {stage: gap for stage in profile.stages if (gap := preference_gap(stage, data)) is not None}
    plan["skipped"] = gaps
    lines.extend(f"{stage}: would be skipped ({gap})" for stage, gap in gaps.items())
    pipeline.progress("\n".join(lines))
    return RetrainResult("dry-run", run.name, run.dir, "\n".join(lines), metrics={"plan": plan})
