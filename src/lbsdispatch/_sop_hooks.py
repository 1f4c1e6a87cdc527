"""Hook specifications of the SOP engine (pluggy), implemented by the host system.

The host (the order system embedding lbsdispatch) writes a plugin: a class or
module whose functions are marked with :data:`hookimpl` and named after the
hooks below, and registers it with ``SopEngine(plugins=[...])`` or
``engine.register(plugin)``.  An implementation takes only the arguments it
needs (pluggy passes them by name), e.g.::

    class WeCom:
        @hookimpl
        def on_welcome_due(self, leader, customer, key, deadline):
            wecom.push_task(leader, customer, dedup_id=key, due=deadline)

Every hook is called with the same keyword arguments (a hook's spec lists
those that matter to it; pluggy drops the rest for each implementation):

sop : str
    The playbook's name.
step : str
    The step's name (for ``on_sla_breached``: the breached step).
key : str
    The idempotency key of this task, ``"{sop}/{step}/{customer}/{order}"``
    (``"{sop}/{step}.sla/{customer}/{order}"`` for an SLA breach).  A task
    that is run again (a retry, or a rerun after a crash) carries the same
    key: drop the call if its key was already applied.
leader, customer, order
    The ids as the dispatcher knows them (``customer`` may be None).
due : float
    When the task was due (epoch seconds).
attempt : int
    1 on the first call, 2 on the first retry, ...
now : float
    When the engine runs the task (epoch seconds; the engine's clock).
deadline : float or None
    Human tasks: when the leader must have done it.
pickup_at : float or None
    When the customer picks the order up, if known.
late_s : float or None
    ``on_sla_breached``: seconds past the deadline.
breach : str or None
    ``on_sla_breached``: ``"late"`` (done after the deadline) or ``"expired"``
    (never done).

A hook that raises has failed: the task is retried with backoff and ends in
the dead letters after the engine's ``max_attempts`` (see docs/sop.md).  A
hook's return value is ignored.
"""
from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec", "SopHookSpecs", "COMMON_ARGS"]

PROJECT = "lbsdispatch"

#: Marks the hook specifications (for hosts adding hooks of their own steps).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a host's implementations of the hooks.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The keyword arguments every hook call carries.
COMMON_ARGS = ("sop", "step", "key", "leader", "customer", "order", "due", "attempt", "now",
               "deadline", "pickup_at", "late_s", "breach")


class SopHookSpecs:
    """The hooks of the default playbook (see the module docstring for the arguments)."""

    @hookspec
    def on_new_neighbor(self, sop, step, key, leader, customer, order, due, attempt, now):
        """Tell the leader at once that a new customer was assigned to them."""

    @hookspec
    def on_welcome_due(self, sop, step, key, leader, customer, order, due, deadline, attempt,
                       now):
        """Open the leader's welcome task (a human task: the leader presses send).

        The leader must report it done (``SopEngine.report_done``) before
        ``deadline``; otherwise ``on_sla_breached`` follows.
        """

    @hookspec
    def on_pickup_reminder(self, sop, step, key, leader, customer, order, due, pickup_at,
                           attempt, now):
        """Remind the customer of tomorrow's pickup."""

    @hookspec
    def on_group_invite(self, sop, step, key, leader, customer, order, due, attempt, now):
        """Invite the customer into the leader's community group (after pickup)."""

    @hookspec
    def on_coupon(self, sop, step, key, leader, customer, order, due, attempt, now):
        """Send the customer a coupon (after joining the group)."""

    @hookspec
    def on_sla_breached(self, sop, step, key, leader, customer, order, due, deadline, late_s,
                        breach, attempt, now):
        """A human task was done late (``breach="late"``) or never (``"expired"``).

        ``late_s`` is how late, in seconds: the time of the done report (or
        of the expiry) minus the deadline.
        """
