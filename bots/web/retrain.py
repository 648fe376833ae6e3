"""The Retrain page: start a run, follow its steps and loss, read the gate's verdict, change what is served.

The same rules as the command line, through the same code: a run is ``iris retrain`` in its own
process (``core.retrain_watch.RetrainRuns``, implemented by ``finetune.launcher``), so training
cannot take the console down, one runs at a time (also against a run typed in a terminal), the
gate decides promotion, and there is no ``--force`` here. Activate and roll back are
``iris models activate`` / ``rollback`` (``core.model_switch``: the file must load and answer),
and stopping an A/B test is ``iris models ab stop`` (``core.ab.conclude``). Everything is audited
as ``web:<admin>``; the run's own start and outcome by the run, under the same name.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bots.render import format_ab
from bots.web.auth import admin_only
from bots.web.pages import render
from core.ab import conclude, latest_report
from core.domain import AuditAction, ModelVersion
from core.experiments import Decision
from core.model_switch import SwitchRefused, activate, known_facts, rollback
from core.ports import ModelRegistry
from core.retrain_watch import LossCurve, RetrainRefused, RetrainRuns

log = logging.getLogger(__name__)

NOT_SET_UP = "Retraining is not set up on this deployment (the console was started without a retrainer)."
CHART = (560, 200, 40)  # the loss chart's width, height and margin, in SVG units


def routes() -> list[Route]:
    return [
        Route("/retrain", retrain_page),
        Route("/retrain/run", run_fragment),
        Route("/retrain/start", start, methods=["POST"]),
        Route("/retrain/activate", activate_version, methods=["POST"]),
        Route("/retrain/rollback", roll_back, methods=["POST"]),
        Route("/retrain/ab-stop", stop_ab, methods=["POST"]),
    ]


def _runs(request: Request) -> RetrainRuns | None:
    retrainer = request.app.state.service.admin.retrainer
    return retrainer if isinstance(retrainer, RetrainRuns) else None


def _registry(request: Request) -> ModelRegistry:
    # The composition root's store is the model registry too (bots.app builds one SqlStore).
    return cast(ModelRegistry, request.app.state.service.store)


def _actor(request: Request) -> str:
    return f"web:{request.state.session.name}"


async def _page(request: Request, message: str | None = None, status_code: int = 200) -> Response:
    runs = _runs(request)
    run = await asyncio.to_thread(runs.current_run) if runs else None
    registry = _registry(request)
    versions = await asyncio.to_thread(registry.list_models)
    previous = await asyncio.to_thread(registry.previous_model)
    ab = request.app.state.service.admin.ab
    report = await asyncio.to_thread(latest_report, ab.experiments) if ab else None
    context = {
        "message": message,
        "profiles": runs.profiles() if runs else [],
        "not_set_up": None if runs else NOT_SET_UP,
        "run": run,
        "chart": chart(run.losses) if run else None,
        "versions": [(version, known_facts(version.metrics or {}), gate_word(version)) for version in versions],
        "previous": previous,
        "ab_text": format_ab(report) if report else None,
        "ab_running": bool(report and report.experiment.running),
    }
    return render(request, "retrain.html", context, status_code=status_code)


@admin_only
async def retrain_page(request: Request) -> Response:
    return await _page(request)


@admin_only
async def run_fragment(request: Request) -> Response:
    """The run's card, polled every 2 s while it goes on; when a followed run ends, the whole page
    reloads (``HX-Refresh``), so the model list shows what it promoted."""
    runs = _runs(request)
    run = await asyncio.to_thread(runs.current_run) if runs else None
    if request.query_params.get("following") and (run is None or not run.going_on):
        return Response(status_code=200, headers={"HX-Refresh": "true", "cache-control": "no-store"})
    context = {"run": run, "chart": chart(run.losses) if run else None}
    return render(request, "retrain_run.html", context)


@admin_only
async def start(request: Request) -> Response:
    runs = _runs(request)
    if runs is None:
        return await _page(request, NOT_SET_UP, 409)
    form = await request.form()
    profile, share_text = form.get("profile"), form.get("ab")
    if not isinstance(profile, str) or not isinstance(share_text or "", str):
        return await _page(request, "Choose a profile.", 400)
    share: float | None = None
    if share_text and str(share_text).strip():
        try:
            share = float(str(share_text).strip())
        except ValueError:
            return await _page(request, "The A/B share is a number between 0 and 1, e.g. 0.2.", 400)
    try:
        await asyncio.to_thread(runs.start_run, profile, share, _actor(request))
    except RetrainRefused as refused:
        return await _page(request, str(refused), 409)
    log.info("retrain (%s, ab %s) started by %s", profile, share, _actor(request))
    return RedirectResponse("/retrain", status_code=303)


@admin_only
async def activate_version(request: Request) -> Response:
    """``iris models activate NAME``: promote a registered version (a retrain's candidate, or any)."""
    form = await request.form()
    name = form.get("name")
    if not isinstance(name, str) or not name:
        return await _page(request, "Choose a version to activate.", 400)
    return await _switch(request, AuditAction.ACTIVATE, lambda registry: activate(registry, name))


@admin_only
async def roll_back(request: Request) -> Response:
    """``iris models rollback``: serve again the version that was active before."""
    return await _switch(request, AuditAction.ROLLBACK, rollback)


async def _switch(request: Request, action: AuditAction, switch: Any) -> Response:
    registry = _registry(request)
    try:
        version, was = await asyncio.to_thread(switch, registry)
    except SwitchRefused as refused:
        return await _page(request, f"Nothing changed: {refused}.", 409)
    trail = request.app.state.service.admin.trail
    await trail.record(_actor(request), action, version.name, {"was": was.name if was else None})
    return await _page(
        request,
        f"Active: {version.name} (was {was.name if was else '-'}); the bots serve it from their next reply.",
    )


@admin_only
async def stop_ab(request: Request) -> Response:
    """``iris models ab stop --promote|--rollback``: the admin ends the running A/B test now."""
    form = await request.form()
    wanted = form.get("decision")
    if wanted not in ("promote", "rollback"):
        return await _page(request, "Say promote or rollback.", 400)
    ab = request.app.state.service.admin.ab
    running = await asyncio.to_thread(ab.experiments.running_experiment) if ab else None
    if running is None:
        return await _page(request, "No A/B test is running.", 409)
    decision = Decision.PROMOTE if wanted == "promote" else Decision.ROLLBACK
    audit = request.app.state.service.admin.trail.store
    ended = await asyncio.to_thread(
        conclude, ab.experiments, _registry(request), audit, running, decision, _actor(request)
    )
    if ended is None:
        return await _page(request, "It had just ended (the rule decided first); nothing changed.", 409)
    active = await asyncio.to_thread(_registry(request).active_model)
    return await _page(
        request, f"A/B test {ended.id} stopped: {decision.value}; active: {active.name if active else '-'}."
    )


def gate_word(version: ModelVersion) -> str:
    """'passed' / 'refused' (and 'forced') from a retrained version's stored gate, '' for others."""
    metrics = version.metrics or {}
    gate = metrics.get("gate")
    if not isinstance(gate, dict):
        return ""
    return ("gate passed" if gate.get("passed") else "gate refused") + (
        " (forced)" if metrics.get("forced") else ""
    )


def chart(curves: tuple[LossCurve, ...]) -> dict[str, Any] | None:
    """The loss curves as SVG polylines (drawn server-side: no script, nothing inline to allow)."""
    points = [point for curve in curves for point in curve.points]
    if not points:
        return None
    width, height, margin = CHART
    last = max(max(curve.max_steps or 0, curve.points[-1][0]) for curve in curves if curve.points)
    offsets, total = [], 0
    for curve in curves:  # stages one after another on the x axis
        offsets.append(total)
        total += max(curve.max_steps or 0, curve.points[-1][0]) if curve.points else 0
    low, high = min(loss for _, loss in points), max(loss for _, loss in points)
    span, steps = (high - low) or 1.0, max(total, last, 1)

    def x(step: float) -> float:
        return round(margin + (width - 2 * margin) * step / steps, 1)

    def y(loss: float) -> float:
        return round(height - margin - (height - 2 * margin) * (loss - low) / span, 1)

    lines = [
        {
            "stage": curve.stage,
            "points": " ".join(f"{x(offset + step)},{y(loss)}" for step, loss in curve.points),
            "dots": [(x(offset + step), y(loss)) for step, loss in curve.points],
        }
        for curve, offset in zip(curves, offsets, strict=True)
    ]
    return {
        "width": width,
        "height": height,
        "margin": margin,
        "lines": lines,
        "low": f"{low:.3f}",
        "high": f"{high:.3f}",
        "steps": steps,
    }
