"""SOP definitions (playbooks and their steps) and the time rules they are scheduled by.

Times are epoch seconds (floats) everywhere inside the engine; the leader's
local time (quiet hours, "20:00 the evening before pickup", the hourly cap)
is computed with `zoneinfo`, so daylight-saving changes and zones with
half-hour offsets are handled by the tz database, not by fixed offsets.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Optional, Tuple, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

__all__ = ["Backoff", "Playbook", "QuietHours", "Step", "default_playbook", "TRIGGERS"]

Duration = Union[float, int, timedelta]

#: Triggers a step can wait for, besides ``"step:<name>"`` (another step done).
TRIGGERS = ("assigned", "picked_up", "joined_group")

# sop and step names become parts of the idempotency key "sop/step/customer/order":
# they must not contain the separator, and ":" is kept for the engine's own
# suffix (":sla").
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_HOOK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DAY = 86400.0


def _seconds(value, name) -> float:
    """A duration in seconds from a number or a timedelta (finite, >= 0)."""
    if isinstance(value, timedelta):
        s = value.total_seconds()
    elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        s = float(value)
    else:
        raise ValueError(f"{name} must be seconds or a timedelta, got {value!r}")
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")
    return s


def epoch(value, name) -> float:
    """Epoch seconds from a number or a datetime (naive datetimes are UTC).

    The project's convention (see `lbsdispatch.identity`): a naive datetime
    would otherwise depend on the machine's time zone.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        t = float(value)
        if math.isfinite(t):
            return t
    raise ValueError(f"{name} must be finite epoch seconds or a datetime, got {value!r}")


def zone(value, name) -> ZoneInfo:
    """A ZoneInfo from a name or a tzinfo-like ZoneInfo; ValueError naming ``name``."""
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a time zone name (e.g. 'Asia/Shanghai'), "
                         f"got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name} = {value!r}: unknown time zone") from None


def _at_local(d: date, t: time, tz: ZoneInfo, after: float) -> float:
    """The first instant > ``after`` whose local wall time in ``tz`` is ``d t``.

    An ambiguous wall time (the repeated hour when clocks go back) has two
    instants: the earlier one that is still after ``after`` is taken.  A wall
    time in a spring-forward gap maps to the instant just after the gap
    (zoneinfo's fold=0 reading).
    """
    best = None
    for fold in (0, 1):
        s = datetime.combine(d, t, tzinfo=tz).replace(fold=fold).timestamp()
        if s > after and (best is None or s < best):
            best = s
    return best


@dataclass(frozen=True)
class QuietHours:
    """Hours of the leader's local night in which no message goes out.

    Parameters
    ----------
    start, end : datetime.time
        Quiet from ``start`` (inclusive) to ``end`` (exclusive), local time;
        ``start > end`` spans midnight (the default, 22:00 to 08:00).
        ``start == end`` means no quiet hours.
    """

    start: time = time(22, 0)
    end: time = time(8, 0)

    def __post_init__(self):
        for f in ("start", "end"):
            v = getattr(self, f)
            if not isinstance(v, time) or v.tzinfo is not None:
                raise ValueError(f"QuietHours.{f} must be a naive datetime.time, got {v!r}")

    def contains(self, t: float, tz: ZoneInfo) -> bool:
        """Whether the instant ``t`` falls in the quiet hours of ``tz``."""
        s, e = self.start, self.end
        if s == e:
            return False
        lt = datetime.fromtimestamp(t, tz).time()
        return s <= lt < e if s < e else (lt >= s or lt < e)

    def hold(self, t: float, tz: ZoneInfo) -> float:
        """``t`` if it is outside the quiet hours, else the end of those quiet hours.

        A message due at 23:30 is held to 08:00 the next morning; one due at
        03:00 to 08:00 the same morning.
        """
        s, e = self.start, self.end
        if s == e:
            return t
        local = datetime.fromtimestamp(t, tz)
        lt = local.time()
        if s < e:
            if not (s <= lt < e):
                return t
            d = local.date()
        elif lt >= s:
            d = local.date() + timedelta(days=1)
        elif lt < e:
            d = local.date()
        else:
            return t
        return _at_local(d, e, tz, t)


def local_hour(t: float, tz: ZoneInfo) -> float:
    """Start (epoch seconds) of the leader-local clock hour holding ``t``."""
    local = datetime.fromtimestamp(t, tz)
    start = local.replace(minute=0, second=0, microsecond=0).timestamp()
    if start > t:
        # fromtimestamp rounds to the microsecond: a t less than half a
        # microsecond before the hour lands in the next one.  A second earlier
        # is safely inside t's own hour.
        return local_hour(t - 1.0, tz)
    return start


def next_local_hour(t: float, tz: ZoneInfo) -> float:
    """Start of the first leader-local clock hour after the one holding ``t`` (> t)."""
    start = local_hour(t, tz)
    cand = start + 3600.0
    # A half-hour daylight-saving shift (Australia/Lord_Howe) can make the
    # floor of start + 1 h fall back into the current hour: step on until the
    # next hour really starts after t.
    while True:
        h = local_hour(cand, tz)
        if h > t:
            return h
        cand += 1800.0


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (n = failed attempts so far): ``min(base * factor**(n-1), max)``.

    Deterministic on purpose (no jitter): a test can name the schedule, and
    the tasks of one leader are already spread by the hourly cap.
    """

    base_s: float = 30.0
    factor: float = 2.0
    max_s: float = 3600.0

    def __post_init__(self):
        for f in ("base_s", "max_s"):
            v = getattr(self, f)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"Backoff.{f} must be a positive number of seconds, got {v!r}")
        if not (isinstance(self.factor, (int, float)) and math.isfinite(self.factor)
                and self.factor >= 1):
            raise ValueError(f"Backoff.factor must be >= 1, got {self.factor!r}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1, 2, ...)."""
        return min(self.base_s * self.factor ** (failures - 1), self.max_s)


@dataclass(frozen=True)
class Step:
    """One step of a playbook.

    Parameters
    ----------
    name : str
        Letters, digits, ``_.-`` (part of the idempotency key).
    hook : str
        The hook called when the step is due (a hook specification, see
        `lbsdispatch.sop.SopHookSpecs`, or one the host added).
    trigger : str
        What starts the step: ``"assigned"`` (the order's assignment),
        ``"picked_up"``, ``"joined_group"`` or ``"step:<name>"`` (an earlier
        step of the playbook done).
    delay : seconds or timedelta
        Due this long after the trigger.
    before_pickup : datetime.time, optional
        Due at this leader-local time, ``days_before_pickup`` days before the
        order's pickup (e.g. 20:00 the evening before); at the trigger if that
        time has passed.  Such a step expires at the pickup and waits while
        the pickup time is unknown.
    days_before_pickup : int
        See ``before_pickup``.
    human : bool
        A human task: the hook opens it, the leader does it and the host
        reports it (`SopEngine.report_done`).  States pending, postponed,
        done, expired.
    deadline : seconds or timedelta, optional
        Human tasks: to be done within this of the (quiet-held) due time.
    expire_after : seconds or timedelta, optional
        Human tasks: expire this long after the deadline; other steps: after
        the due time (not run any more).  None: never.
    new_customers_only : bool
        Skip customers the order kept with their bound leader (outcome
        STICKY): they are already in the leader's group.
    quiet_hours : bool
        Held out of the leader's quiet hours.
    capped : bool
        Counts against the leader's hourly cap; excess moves to the next hour.
    wait_max : seconds or timedelta
        A step still waiting for its trigger this long after the assignment
        expires (so that no task stays in the outbox for ever).
    """

    name: str
    hook: str
    trigger: str = "assigned"
    delay: Duration = 0.0
    before_pickup: Optional[time] = None
    days_before_pickup: int = 1
    human: bool = False
    deadline: Optional[Duration] = None
    expire_after: Optional[Duration] = None
    new_customers_only: bool = False
    quiet_hours: bool = True
    capped: bool = False
    wait_max: Duration = 7 * DAY

    def __post_init__(self):
        where = f"Step {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Step.name must be letters, digits, '_', '.' or '-', "
                             f"got {self.name!r}")
        if not isinstance(self.hook, str) or not _HOOK.match(self.hook):
            raise ValueError(f"{where}: hook must be a hook name, got {self.hook!r}")
        if not isinstance(self.trigger, str) or not (
                self.trigger in TRIGGERS or (self.trigger.startswith("step:")
                                             and _NAME.match(self.trigger[5:]))):
            raise ValueError(f"{where}: trigger must be one of {TRIGGERS} or 'step:<name>', "
                             f"got {self.trigger!r}")
        set_ = object.__setattr__     # frozen: normalise durations to float seconds
        set_(self, "delay", _seconds(self.delay, f"{where}: delay"))
        set_(self, "wait_max", _seconds(self.wait_max, f"{where}: wait_max"))
        if self.deadline is not None:
            set_(self, "deadline", _seconds(self.deadline, f"{where}: deadline"))
        if self.expire_after is not None:
            set_(self, "expire_after", _seconds(self.expire_after, f"{where}: expire_after"))
        if self.human and self.deadline is None:
            raise ValueError(f"{where}: a human task needs a deadline")
        if not self.human and self.deadline is not None:
            raise ValueError(f"{where}: deadline is for human tasks (human=True)")
        if self.before_pickup is not None:
            if not isinstance(self.before_pickup, time) or self.before_pickup.tzinfo:
                raise ValueError(f"{where}: before_pickup must be a naive datetime.time, "
                                 f"got {self.before_pickup!r}")
            if self.trigger != "assigned":
                raise ValueError(f"{where}: before_pickup needs trigger 'assigned'")
        if (not isinstance(self.days_before_pickup, (int, np.integer))
                or isinstance(self.days_before_pickup, bool) or self.days_before_pickup < 0):
            raise ValueError(f"{where}: days_before_pickup must be an int >= 0, "
                             f"got {self.days_before_pickup!r}")
        for f in ("human", "new_customers_only", "quiet_hours", "capped"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"{where}: {f} must be True or False, "
                                 f"got {getattr(self, f)!r}")

    @property
    def after_step(self) -> Optional[str]:
        """The step this one waits for (trigger ``step:<name>``), else None."""
        return self.trigger[5:] if self.trigger.startswith("step:") else None


def _sla_step(step: Step) -> Step:
    # The breach of a human task is a task of its own in the outbox (so that
    # it is delivered at least once like every other), run at once: it goes
    # to the operator, not to a customer, so quiet hours do not hold it.
    return Step(name=f"{step.name}.sla", hook="on_sla_breached", quiet_hours=False)


@dataclass(frozen=True)
class Playbook:
    """An SOP: a name and its ordered steps.

    Parameters
    ----------
    name : str
        Letters, digits, ``_.-`` (part of the idempotency key).
    steps : sequence of Step
        In order; a ``step:<name>`` trigger must name an earlier step.
    """

    name: str
    steps: Tuple[Step, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Playbook.name must be letters, digits, '_', '.' or '-', "
                             f"got {self.name!r}")
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps:
            raise ValueError(f"Playbook {self.name!r}: no steps")
        seen = set()
        for i, s in enumerate(steps):
            if not isinstance(s, Step):
                raise ValueError(f"Playbook {self.name!r}: steps[{i}] is not a Step: {s!r}")
            if s.name in seen:
                raise ValueError(f"Playbook {self.name!r}: steps[{i}] repeats the name "
                                 f"{s.name!r}")
            if s.name.endswith(".sla"):
                raise ValueError(f"Playbook {self.name!r}: steps[{i}] name {s.name!r}: the "
                                 f"suffix '.sla' is kept for SLA breaches")
            if s.after_step is not None and s.after_step not in seen:
                raise ValueError(f"Playbook {self.name!r}: steps[{i}] ({s.name!r}) waits for "
                                 f"{s.after_step!r}, which is not an earlier step")
            seen.add(s.name)

    def by_name(self):
        """{step name: Step}, the SLA breach steps of the human tasks included."""
        d = {s.name: s for s in self.steps}
        for s in self.steps:
            if s.human:
                d[f"{s.name}.sla"] = _sla_step(s)
        return d


def default_playbook(*, reminder_at: time = time(20, 0), welcome_within: Duration = 3600.0,
                     welcome_expires_after: Duration = DAY) -> Playbook:
    """The playbook of a new neighbour (name ``"default"``).

    1. ``new_neighbor`` (``on_new_neighbor``): tell the leader at once (not
       held by quiet hours: it goes to the leader's app, not to the customer).
    2. ``welcome`` (``on_welcome_due``): a human task, due within
       ``welcome_within`` (1 hour) of the assignment (held out of quiet hours,
       the hour counted from the held time), expires a day after its deadline.
    3. ``pickup_reminder`` (``on_pickup_reminder``): ``reminder_at`` (20:00)
       leader-local the evening before pickup; under the hourly cap.
    4. ``group_invite`` (``on_group_invite``): after pickup.
    5. ``coupon`` (``on_coupon``): after the customer joined the group.

    Steps 1, 2, 4 and 5 are for new customers only: a STICKY customer is
    already the leader's and in the group.  The pickup reminder goes to
    everyone.
    """
    return Playbook("default", (
        Step("new_neighbor", "on_new_neighbor", new_customers_only=True, quiet_hours=False),
        Step("welcome", "on_welcome_due", human=True, deadline=welcome_within,
             expire_after=welcome_expires_after, new_customers_only=True),
        Step("pickup_reminder", "on_pickup_reminder", before_pickup=reminder_at,
             days_before_pickup=1, capped=True),
        Step("group_invite", "on_group_invite", trigger="picked_up", new_customers_only=True),
        Step("coupon", "on_coupon", trigger="joined_group", new_customers_only=True),
    ))
