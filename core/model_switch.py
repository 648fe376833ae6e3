"""Serving another registered version: ``iris models activate`` / ``rollback`` and the console's buttons.

A version is served only once its file has loaded and answered in a child process
(``core.model_check.check_gguf``): a damaged GGUF would otherwise silence every reply. The
caller audits the change under its own actor.
"""

from __future__ import annotations

from core.domain import ModelVersion
from core.model_check import ModelUnloadable, check_gguf
from core.ports import ModelRegistry


class SwitchRefused(Exception):
    """The version was not served; ``str(error)`` is the sentence to show."""


def ensure_loads(
    registry: ModelRegistry, version: ModelVersion, refusal: str, current: ModelVersion | None
) -> None:
    """Load ``version``'s file and answer with it, or raise ``SwitchRefused`` (``refusal``: its start).

    A refused version is recorded as broken (``iris models list`` shows why); one
    that answers has any earlier mark cleared.
    """
    try:
        check_gguf(version.gguf_path)
    except ModelUnloadable as error:
        registry.report_model_load(version.name, str(error))
        kept = f"; {current.name} stays active" if current else ""
        raise SwitchRefused(f"{refusal}: {error}{kept}") from None
    if version.load_error:
        registry.report_model_load(version.name, None)


def activate(registry: ModelRegistry, name: str) -> tuple[ModelVersion, ModelVersion | None]:
    """Serve ``name`` from the next reply on; the version now active and the one it replaced."""
    current = registry.active_model()
    wanted = next((version for version in registry.list_models() if version.name == name), None)
    if wanted is None:
        raise SwitchRefused(f"no model version named {name!r}")
    ensure_loads(registry, wanted, f"not activated: {name}", current)
    return registry.activate_model(name), current


def rollback(registry: ModelRegistry) -> tuple[ModelVersion, ModelVersion | None]:
    """Serve again the version that was active before the current one; it and the one it replaced."""
    current = registry.active_model()
    previous = registry.previous_model()
    if previous is None:
        raise SwitchRefused("no earlier active version to roll back to")
    ensure_loads(registry, previous, f"not rolled back to {previous.name}", current)
    return registry.activate_model(previous.name), current


def known_facts(metrics: dict[str, object]) -> str:
    """'known/total' taught facts the version recalls by itself, from its stored gate figures; '—' without."""
    gate = metrics.get("gate")
    facts = gate.get("facts") if isinstance(gate, dict) else None
    if not isinstance(facts, list) or not facts:
        return "—"
    return f"{sum(isinstance(f, dict) and f.get('known') is True for f in facts)}/{len(facts)}"
