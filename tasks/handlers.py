"""The task types HelixAgent ships: drills (``noop``, ``echo``, ``sleep``, ``fail``) and ``notify``."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage

from tasks.exceptions import PermanentTaskFailure
from tasks.registry import TaskContext, task_type


@task_type("noop")
def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Do nothing; measures the platform's own overhead."""
    return None


@task_type("echo")
def echo(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Return the payload unchanged."""
    return payload


@task_type("sleep")
def sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (default 1), reporting progress and honouring cancellation."""
    seconds = float(payload.get("seconds", 1))
    steps = max(1, int(seconds * 10))
    for step in range(steps):
        if ctx.cancelled():
            return {"slept": seconds * step / steps, "cancelled": True}
        time.sleep(seconds / steps)
        if step % 10 == 9:
            ctx.progress(int(100 * (step + 1) / steps))
    return {"slept": seconds}


@task_type("fail")
def fail(ctx: TaskContext, payload: dict[str, Any]) -> None:
    """Raise an error: retryable unless ``permanent`` is true; ``times`` fails only the first N attempts."""
    times = payload.get("times")
    if times is not None and ctx.attempt > int(times):
        return None
    message = str(payload.get("message", "drill failure"))
    if payload.get("permanent"):
        raise PermanentTaskFailure(message)
    raise RuntimeError(message)


@task_type("notify", "notification")
def notify(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Send an e-mail notification through Django's configured e-mail backend."""
    recipients = payload.get("to")
    if isinstance(recipients, str):
        recipients = [recipients]
    if not recipients or not all(isinstance(r, str) and "@" in r for r in recipients):
        raise PermanentTaskFailure("payload.to: one or more e-mail addresses are required")
    message = EmailMessage(
        subject=str(payload.get("subject", "HelixAgent notification")),
        body=str(payload.get("body", "")),
        from_email=getattr(settings, "DEFAULT_FROM_EMAIL", None),
        to=recipients,
    )
    ctx.progress(50, "sending")
    sent = message.send(fail_silently=False)
    return {"sent": sent, "to": recipients}
