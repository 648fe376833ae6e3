"""``iris models`` and ``iris retrain``: the versions the bots can serve, and making a new one."""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bots.app import AUDITED_BY_PARENT, load_settings
from bots.settings import Settings
from core.audit import retrain_entries
from core.domain import AuditAction, ModelVersion
from core.model_switch import known_facts
from core.ports import RetrainOutcome
from core.retrain_watch import ACTOR_ENV

if TYPE_CHECKING:
    from finetune.retrain import RetrainConfig


def console_actor() -> str:
    """Who the audit trail names for a command typed in a terminal."""
    return f"console:{getpass.getuser()}"


models_app = typer.Typer(help="The model versions the bots can serve.", no_args_is_help=True)


@models_app.command("list")
def models_list() -> None:
    """The registered model versions; * marks the active one, "broken:" a version whose file does not load.

    "knows 2/3": of the facts taught in the run that made it, how many the model
    recalls by itself (gate, memory off); "knows —": no taught fact was measured.
    """
    from bots.app import ensure_served_model, opened_store

    settings = load_settings()
    with opened_store(settings) as store:
        ensure_served_model(store, settings)
        for version in store.list_models():
            mark, knows = "*" if version.active else " ", known_facts(version.metrics or {})
            typer.echo(f"{mark} {version.name:40} knows {knows:5} {version.gguf_path}")
            if version.load_error:
                kept = "; the bots keep serving the model they had loaded" if version.active else ""
                typer.echo(f"    broken: {version.load_error}{kept}")
            if version.metrics:
                typer.echo(f"    {format_model_metrics(version.metrics)}")


def format_model_metrics(metrics: dict[str, object]) -> str:
    """One line of a retrained version's gate figures (held-out NLL, candidate vs the model it replaced)."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict):
        return ""

    def pair(split: str) -> str:
        figures = gate.get(split) or {}
        before, after = figures.get("active"), figures.get("candidate")
        if after is None:
            return "-"
        return f"{before:.3f} → {after:.3f}" if before is not None else f"{after:.3f}"

    verdict = "passed" if gate.get("passed") else "refused"
    if metrics.get("forced"):
        verdict += " (forced)"
    training = metrics.get("training") if isinstance(metrics.get("training"), dict) else {}
    steps = training.get("steps") if isinstance(training, dict) else None
    line = f"gate {verdict} · feedback NLL {pair('feedback_nll')} · FineTome NLL {pair('finetome_nll')}"
    probe = gate.get("general_probe") or {}
    if probe.get("candidate") and probe.get("active"):
        line += (
            f" · probe {probe['active']['right']}/{probe['active']['total']} → {probe['candidate']['right']}"
        )
    taught = gate.get("taught") or []
    if taught:
        line += f" · taught {sum(bool(f['candidate']['recalled']) for f in taught)}/{len(taught)} recalled"
    return line + (f" · {steps} steps" if steps else "")


@models_app.command("add")
def models_add(
    name: str,
    gguf: Annotated[Path, typer.Option(help="The GGUF file, e.g. exported by Unsloth on a rented GPU.")],
    base_model: Annotated[
        str | None, typer.Option(help="The Hugging Face model it was fine-tuned from (retrains start there).")
    ] = None,
) -> None:
    """Register a GGUF trained elsewhere as an inactive version, once it has loaded and answered."""
    from bots.app import opened_store
    from core.model_check import ModelUnloadable, check_gguf
    from finetune.gate import GateConfig

    path = gguf.expanduser().resolve()
    if not path.is_file():
        typer.echo(f"{gguf}: no such file", err=True)
        raise typer.Exit(1)
    question = GateConfig().probe
    try:
        reply = check_gguf(path, question, max_tokens=48)  # in a child process: llama.cpp may crash on it
    except ModelUnloadable as error:
        typer.echo(f"not added: {error}", err=True)
        raise typer.Exit(1) from None
    with opened_store(load_settings()) as store:
        if any(version.name == name for version in store.list_models()):
            typer.echo(f"a version named {name!r} exists already; pick another name", err=True)
            raise typer.Exit(1)
        store.register_model(name, str(path), base_model, {"added": {"question": question, "answer": reply}})
        store.record_audit(
            console_actor(), AuditAction.ADD, name, {"gguf": str(path), "base_model": base_model}
        )
    typer.echo(f"added {name} (inactive); it answered {question!r} with {reply!r}")
    typer.echo(f"serve it with `iris models activate {name}` or test it with `iris models ab start {name}`")


@models_app.command("server-config")
def models_server_config(
    out: Annotated[Path, typer.Option(help="Where to write llama-cpp-python's server config (JSON).")],
    host: Annotated[str, typer.Option(help="The address the server listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Its port; IRIS_LLM_URL is then http://HOST:PORT/v1.")] = 8080,
) -> None:
    """Every registered version as a model of `python -m llama_cpp.server --config_file OUT`, by its name.

    Requests name the version they want, so a promotion, a rollback or an A/B arm
    needs no restart; a version registered later needs this file written again and
    the server restarted.
    """
    from bots.app import ensure_served_model, opened_store

    settings = load_settings()
    with opened_store(settings) as store:
        ensure_served_model(store, settings)
        versions = sorted(store.list_models(), key=lambda version: not version.active)  # the active one first
    config = llama_server_config(versions, host, port, settings.llm.context_tokens, settings.llm.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(config, indent=2))
    typer.echo(f"{out}: {len(versions)} versions; start: python -m llama_cpp.server --config_file {out}")
    typer.echo(f"then IRIS_LLM_URL=http://{host}:{port}/v1")


def llama_server_config(
    versions: list[ModelVersion], host: str, port: int, context_tokens: int, threads: int | None
) -> dict[str, object]:
    """llama-cpp-python's server settings: each version under its registry name, the first the default."""
    models: list[dict[str, object]] = []
    for version in versions:
        model: dict[str, object] = {
            "model": version.gguf_path,
            "model_alias": version.name,
            "n_ctx": context_tokens,
        }
        if threads:
            model["n_threads"] = threads
        models.append(model)
    return {"host": host, "port": port, "models": models}


@models_app.command("activate")
def models_activate(name: str) -> None:
    """Serve NAME from the next reply on, once its file loads and answers (running bots switch, no restart)."""
    from bots.app import opened_store
    from core.model_switch import SwitchRefused, activate

    with opened_store(load_settings()) as store:
        try:
            version, current = activate(store, name)
        except SwitchRefused as refused:
            typer.echo(str(refused), err=True)
            raise typer.Exit(1) from None
        was = current.name if current else None
        store.record_audit(console_actor(), AuditAction.ACTIVATE, version.name, {"was": was})
    typer.echo(f"active: {version.name}")


@models_app.command("rollback")
def models_rollback() -> None:
    """Serve again the version that was active before the current one, once its file loads and answers."""
    from bots.app import opened_store
    from core.model_switch import SwitchRefused, rollback

    with opened_store(load_settings()) as store:
        try:
            version, current = rollback(store)
        except SwitchRefused as refused:
            typer.echo(str(refused), err=True)
            raise typer.Exit(1) from None
        was = current.name if current else None
        store.record_audit(console_actor(), AuditAction.ROLLBACK, version.name, {"was": was})
    typer.echo(f"active: {version.name} (was {current.name if current else '-'})")


def retrain_config(
    settings: Settings,
    profile: str | None = None,
    *,
    resume: bool = False,
    dry_run: bool = False,
    force: bool = False,
    dataset: Path | None = None,
    ab_share: float | None = None,
) -> RetrainConfig:
    """The retrain settings as the pipeline takes them: the profile with the IRIS_RETRAIN_* overrides."""
    from bots.app import database_url, retrain_dir
    from finetune.profiles import auto_profile_name, get_profile
    from finetune.retrain import RetrainConfig

    name = profile or settings.retrain.profile
    chosen = get_profile(auto_profile_name() if name == "auto" else name)
    return RetrainConfig(
        database_url=database_url(settings),
        work_dir=retrain_dir(settings),
        base_cache=settings.retrain.base_cache or settings.data_dir / "models" / "hf",
        profile=chosen.with_overrides(**settings.retrain.profile_overrides()),
        gate=settings.gate,
        build=replace(settings.dataset, progress=False),  # one progress line per step is printed instead
        feedback=settings.feedback,
        dataset=dataset,
        threads=settings.retrain.threads,
        force=force,
        dry_run=dry_run,
        resume=resume,
        ab_share=ab_share if ab_share is not None else settings.retrain.ab_share,
        ab=settings.ab,
        data_dir=settings.data_dir,
    )


def retrain(
    profile: Annotated[
        str | None, typer.Option(help="llama-3.2-1b, llama-3.2-3b or cpu-tiny (default: IRIS_RETRAIN_PROFILE).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the last killed or failed run.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Build the dataset and show the plan; train nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Promote even if the gate refuses (it must answer).")] = False,
    dataset: Annotated[
        Path | None, typer.Option(help="Train on this built dataset folder (iris dataset build) as it is.")
    ] = None,
    ab: Annotated[
        float | None,
        typer.Option(
            "--ab",
            metavar="SHARE",
            help="A candidate that passes goes to an A/B test on this share of conversations instead of "
            "replacing the active model (default: IRIS_RETRAIN_AB_SHARE).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Progress on stderr, JSON on stdout.")] = False,
) -> None:
    """Train on the feedback, export a GGUF, and promote it (or A/B test it) if it beats the active model."""
    from bots.app import ensure_served_model, opened_store
    from finetune.retrain import NothingToResume
    from finetune.retrain import retrain as run_retrain
    from finetune.runs import RetrainBusy
    from storage.experiments import SqlExperiments
    from storage.locks import LockHeld, database_lock

    settings = load_settings()

    def say(line: str) -> None:
        typer.echo(line, err=as_json)

    def refuse(status: str, message: str) -> None:
        if as_json:
            typer.echo(json.dumps({"status": status, "name": None, "message": message}))
        else:
            typer.echo(message, err=True)
        raise typer.Exit(2)

    try:
        config = retrain_config(
            settings, profile, resume=resume, dry_run=dry_run, force=force, dataset=dataset, ab_share=ab
        )
    except (KeyError, ValueError) as error:
        refuse("not-started", str(error).strip("'\""))
    # A run the bot started is recorded by the bot, with the admin who asked for it; one the web
    # console started, by this process, as the admin the console names.
    actor = os.environ.get(ACTOR_ENV) or console_actor()
    audited = not os.environ.get(AUDITED_BY_PARENT) or bool(os.environ.get(ACTOR_ENV))
    with opened_store(settings) as store:
        try:
            ensure_served_model(store, settings)  # the gate compares with what the bots serve
            if audited and not dry_run:
                start = {"profile": profile, "resume": resume, "force": force}
                store.record_audit(actor, AuditAction.RETRAIN_START, profile, start)
            # One retrain at a time across every process and machine on the database (the run's
            # lock file covers one machine).
            with database_lock(store.engine, "retrain"):
                outcome = run_retrain(config, store, say, SqlExperiments(store.engine, settings.ab), store)
        except LockHeld:
            refuse("busy", "a retrain is already running on another machine; one at a time")
        except (RetrainBusy, NothingToResume) as error:
            refuse("busy" if isinstance(error, RetrainBusy) else "nothing-to-resume", str(error))
        if audited and not dry_run:
            promoted = outcome.status == "promoted"
            result = RetrainOutcome(outcome.status != "failed", promoted, outcome.name, outcome.message)
            for action, target, details in retrain_entries(result):
                store.record_audit(actor, action, target, details)
    if as_json:
        typer.echo(json.dumps(outcome.to_json(), ensure_ascii=False, default=str))
    else:
        typer.echo(outcome.message, err=outcome.status == "failed")  # a failure is an error, for scripts too
    if outcome.status == "failed":
        raise typer.Exit(1)
