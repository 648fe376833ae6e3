"""``iris models ab``: A/B tests of a candidate version against the active one, or of two personas on
the active version (``--personas``), judged by ratings. One test runs at a time, of either kind, so
both kinds share these commands: ``status`` and ``stop`` need not ask which one."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from bots.app import load_settings
from bots.cli_models import console_actor
from bots.render import format_ab
from core.experiments import DEFAULT_PERSONA_SHARE, DEFAULT_SHARE, Decision, ExperimentKind

ab_app = typer.Typer(help="A/B tests: serve a candidate to a share of conversations.", no_args_is_help=True)


@ab_app.command("start")
def ab_start(
    candidate: Annotated[str | None, typer.Argument(help="The model version to try.")] = None,
    personas: Annotated[
        tuple[str, str] | None,
        typer.Option(
            "--personas",
            metavar="CONTROL CANDIDATE",
            help="Test two personas on the active version instead: CANDIDATE against CONTROL.",
        ),
    ] = None,
    share: Annotated[
        float | None,
        typer.Option(
            help=f"Of conversations that get the candidate (default {DEFAULT_SHARE}; "
            f"{DEFAULT_PERSONA_SHARE} with --personas)."
        ),
    ] = None,
    min_ratings: Annotated[
        int | None, typer.Option(help="Ratings per arm before the rule decides (default: IRIS_AB_MIN_RATINGS).")
    ] = None,
) -> None:
    """Serve CANDIDATE to a share of conversations and the active version to the rest.

    Running bots pick it up before their next reply. Once both arms have the
    ratings, the candidate is promoted if it is not worse than the active version
    by more than IRIS_AB_MARGIN (at 95 %); otherwise the active version stays.
    With --personas CONTROL CANDIDATE, the same rule makes the winning persona the
    default; chats whose persona someone chose keep it and stay out of the test.
    """
    from bots.app import opened_store
    from core.ab import start
    from storage.experiments import SqlExperiments

    if (candidate is None) == (personas is None):
        typer.echo("not started: name a CANDIDATE version, or --personas CONTROL CANDIDATE", err=True)
        raise typer.Exit(1)
    control = personas[0] if personas else None
    candidate = personas[1] if personas else candidate
    assert candidate is not None
    share = share if share is not None else DEFAULT_PERSONA_SHARE if personas else DEFAULT_SHARE
    settings = load_settings()
    with opened_store(settings) as store:
        try:
            experiment = start(
                SqlExperiments(store.engine, settings.ab),
                store,
                candidate,
                share=share,
                min_ratings=min_ratings or settings.ab.min_ratings,
                margin=settings.ab.margin,
                actor=console_actor(),
                control_persona=control,
            )
        except ValueError as error:
            typer.echo(f"not started: {error}", err=True)
            raise typer.Exit(1) from None
    arms = (
        f"persona {candidate} for {share:.0%} of conversations, persona {control} for the rest "
        "(chats whose persona someone chose keep it and stay out)"
        if personas
        else f"{candidate} for {share:.0%} of conversations, "
        f"{experiment.control or 'the active version'} for the rest"
    )
    typer.echo(
        f"A/B test {experiment.id} started: {arms}; "
        f"decided at {experiment.min_ratings} ratings from at least {experiment.min_raters} people "
        f"on both arms (at most {experiment.ratings_per_person} counted from one person an arm)"
    )


@ab_app.command("status")
def ab_status(
    as_json: Annotated[bool, typer.Option("--json", help="The figures as JSON.")] = False,
) -> None:
    """Per arm: conversations, replies, rated share, ratings counted and from how many people,
    👍 share with its interval; the difference; the rule."""
    from bots.app import opened_store
    from core.ab import latest_report
    from storage.experiments import SqlExperiments

    settings = load_settings()
    with opened_store(settings) as store:
        report = latest_report(SqlExperiments(store.engine, settings.ab))
    if as_json:
        typer.echo(json.dumps(report.to_json() if report else None, ensure_ascii=False))
    else:
        typer.echo(format_ab(report))


@ab_app.command("stop")
def ab_stop(
    promote: Annotated[
        bool, typer.Option("--promote", help="Make the candidate the active version (or the default persona).")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Keep the active version (make the control the default persona).")
    ] = False,
) -> None:
    """End the running A/B test now, whatever the figures say (the admin decides)."""
    from bots.app import opened_store
    from core.ab import conclude
    from storage.experiments import SqlExperiments

    if promote == rollback:
        typer.echo("say --promote or --rollback", err=True)
        raise typer.Exit(2)
    settings = load_settings()
    with opened_store(settings) as store:
        experiments = SqlExperiments(store.engine, settings.ab)
        running = experiments.running_experiment()
        if running is None:
            typer.echo("no A/B test is running", err=True)
            raise typer.Exit(1)
        decision = Decision.PROMOTE if promote else Decision.ROLLBACK
        ended = conclude(experiments, store, store, running, decision, console_actor())
        if ended is None:
            typer.echo("it had just ended (the rule decided first)", err=True)
            raise typer.Exit(1)
        active = store.active_model()
    if ended.kind is ExperimentKind.PERSONA:
        default = ended.report.get("default_persona") or "- (the winning persona was removed)"
        typer.echo(f"A/B test {ended.id} stopped: {decision.value}; default persona: {default}")
        return
    typer.echo(f"A/B test {ended.id} stopped: {decision.value}; active: {active.name if active else '-'}")
