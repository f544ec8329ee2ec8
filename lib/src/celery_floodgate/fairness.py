"""Fair admission: each tenant's share of a bounded queue, and criticality classes.

First come, first served lets one fast client fill a queue and leaves every other
client refused until it drains. With a `Fairness` policy (``install(app, limits,
fairness=Fairness())``) a submission names its tenant and its class, and:

* **Classes.** ``sheddable`` work is refused once the queue holds
  ``class_fractions["sheddable"]`` of its limit (50 %), ``default`` work at
  ``class_fractions["default"]`` (90 %), ``critical`` work only at the full limit.
  A flood of sheddable work leaves half the queue to the rest; critical work
  (beat's aggregation, the outbox sweep) always finds the top 10 %.
* **Shares.** Above the watermark (``watermark`` of the limit, 50 %), a tenant
  that already holds its share of the queue is refused, while tenants under their
  share are admitted up to their class's bound. A tenant's share is the limit
  divided among the tenants holding messages (the one submitting included), in
  proportion to their ``weights`` (default 1). Below the watermark anyone is
  admitted, so a lone tenant can still fill the queue. Critical work is exempt.

The queue's limit stays exact: a policy only ever refuses more. On Redis the share
is counted and checked in the admission's own Lua call (``admit_fair.lua``); on
RabbitMQ and SQS it is counted in the meter (`celery_floodgate.tenants`).

Naming the tenant and class, most specific first:

* the message's headers: ``task.apply_async(args, headers={"tenant": "acme",
  "criticality": "sheddable"})``;
* the context: ``with submitting_as("acme", "sheddable"): task.delay(...)``
  (a web app sets it once per request, from the authenticated client);
* else the tenant ``"default"`` and the class ``"default"``.

This module is the policy and its arithmetic, pure: no I/O. ``decide`` is the
rule the Lua script applies, written once more in Python for the meter's path
and for the property-based tests that hold the two to the same answers.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SHEDDABLE, DEFAULT, CRITICAL = "sheddable", "default", "critical"
#: From first shed to last.
CLASSES = (SHEDDABLE, DEFAULT, CRITICAL)
#: The message headers that name a submission's tenant and class.
TENANT_HEADER, CLASS_HEADER = "tenant", "criticality"
#: The tenant of a submission that names none.
DEFAULT_TENANT = "default"
#: Tenant names: printable, no spaces, at most this long (they become Redis keys and labels).
TENANT_MAX_LEN = 64
_TENANT = re.compile(r"^[\x21-\x7e]{1,%d}$" % TENANT_MAX_LEN)

#: Why a submission was refused (`celery_floodgate.QueueFull.reason`).
FULL, CLASS, SHARE = "full", "class", "share"

_tenant: ContextVar[str | None] = ContextVar("floodgate_tenant", default=None)
_class: ContextVar[str | None] = ContextVar("floodgate_criticality", default=None)


def _default_fractions() -> Mapping[str, float]:
    return MappingProxyType({SHEDDABLE: 0.5, DEFAULT: 0.9, CRITICAL: 1.0})


@dataclass(frozen=True)
class Fairness:
    """How a bounded queue is shared (``install(..., fairness=Fairness(...))``).

    :param watermark: the fraction of the limit above which shares apply.
    :param weights: tenant -> weight (> 0); a tenant not named weighs 1.
    :param class_fractions: class -> the fraction of the limit at which it is
        refused; ``critical`` is always 1.0, ``sheddable`` <= ``default`` <= 1.
    """

    watermark: float = 0.5
    weights: Mapping[str, float] = field(default_factory=dict)
    class_fractions: Mapping[str, float] = field(default_factory=_default_fractions)

    def __post_init__(self) -> None:
        if not 0 < self.watermark <= 1:
            raise ValueError(f"fairness watermark must be above 0 and at most 1, "
                             f"not {self.watermark!r}")
        fractions = {**_default_fractions(), **self.class_fractions}
        unknown = set(fractions) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown criticality class {sorted(unknown)[0]!r}; "
                             f"the classes are {', '.join(CLASSES)}")
        if fractions[CRITICAL] != 1.0:
            raise ValueError("critical work is refused only at the full limit: its "
                             "class fraction must be 1.0")
        if not 0 < fractions[SHEDDABLE] <= fractions[DEFAULT] <= 1:
            raise ValueError("class fractions must satisfy 0 < sheddable <= default <= 1, "
                             f"not {fractions}")
        for tenant, weight in self.weights.items():
            check_tenant(tenant)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
                    0 < weight <= 1000):
                raise ValueError(f"weight of tenant {tenant!r} must be a number above 0 "
                                 f"and at most 1000, not {weight!r}")
        object.__setattr__(self, "class_fractions", MappingProxyType(fractions))
        object.__setattr__(self, "weights", MappingProxyType(dict(self.weights)))

    def weight(self, tenant: str) -> float:
        """``tenant``'s weight (1 unless named)."""
        return float(self.weights.get(tenant, 1.0))

    def class_bound(self, bound: int, criticality: str) -> int:
        """The depth at which ``criticality`` is refused."""
        return class_bound(bound, self.class_fractions[criticality])

    def watermark_depth(self, bound: int) -> int:
        """The depth from which shares apply."""
        return max(1, math.ceil(bound * self.watermark))


def class_bound(bound: int, fraction: float) -> int:
    """The depth at which a class with ``fraction`` of the limit is refused (at least 1)."""
    return bound if fraction >= 1 else max(1, min(bound, math.floor(bound * fraction)))


def share(bound: int, weight: float, active_weight: float) -> int:
    """A tenant's share of ``bound``: its weight over the active tenants' (its own
    included), rounded down, at least 1 so that every tenant can make progress."""
    return max(1, math.floor(bound * weight / max(weight, active_weight)))


@dataclass(frozen=True)
class Decision:
    """What admission decided for one submission."""

    admit: bool
    reason: str = ""     # FULL, CLASS or SHARE when refused
    excess: int = 0      # how far over the bound that refused it (>= 1 when refused)
    share: int = 0       # the tenant's share, when shares applied


def decide(policy: Fairness, bound: int, depth: int, criticality: str, tenant_count: int,
           weight: float, active_weight: float) -> Decision:
    """Admit one submission or not (the rule ``admit_fair.lua`` applies).

    :param bound: the queue's length bound now; ``depth``: what it holds.
    :param tenant_count: what the submitting tenant holds of ``depth``.
    :param weight: its weight; ``active_weight``: the weights of the tenants
        holding messages, its own included whether it holds any or not.
    """
    limit = policy.class_bound(bound, criticality)
    if depth >= limit:
        return Decision(False, FULL if limit >= bound else CLASS, depth - limit + 1)
    if criticality == CRITICAL or depth < policy.watermark_depth(bound):
        return Decision(True)
    mine = share(bound, weight, active_weight)
    if tenant_count >= mine:
        return Decision(False, SHARE, tenant_count - mine + 1, mine)
    return Decision(True, share=mine)


# -- naming a submission's tenant and class ------------------------------------------

def check_tenant(tenant: Any) -> str:
    """``tenant`` if it is a valid name; else ValueError with a sentence."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise ValueError(f"tenant must be 1 to {TENANT_MAX_LEN} printable characters "
                         f"without spaces, not {tenant!r}")
    return tenant


def check_class(criticality: Any) -> str:
    """``criticality`` if it is a class; else ValueError with a sentence."""
    if criticality not in CLASSES:
        raise ValueError(f"criticality must be one of {', '.join(CLASSES)}, "
                         f"not {criticality!r}")
    return str(criticality)


@contextmanager
def submitting_as(tenant: str | None = None, criticality: str | None = None) -> Iterator[None]:
    """Submissions made inside name this tenant and class, unless their headers do.

    Context-local (``contextvars``): each thread and each asyncio task has its own.
    ``None`` keeps what an enclosing block set.
    """
    tokens = []
    if tenant is not None:
        tokens.append((_tenant, _tenant.set(check_tenant(tenant))))
    if criticality is not None:
        tokens.append((_class, _class.set(check_class(criticality))))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def identify(headers: dict[str, Any]) -> tuple[str, str]:
    """The (tenant, class) of a message: its headers, else the context, else the
    defaults. Written back into the headers, so the worker and the meter read them."""
    tenant = headers.get(TENANT_HEADER) or _tenant.get() or DEFAULT_TENANT
    criticality = headers.get(CLASS_HEADER) or _class.get() or DEFAULT
    headers[TENANT_HEADER] = check_tenant(tenant)
    headers[CLASS_HEADER] = check_class(criticality)
    return tenant, criticality


def identify_batch(all_headers: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """The (tenant, class) of a batch (`identify` on each message's headers); a batch is
    one tenant's, of one class, else ValueError with a sentence."""
    return one_identity({identify(headers) for headers in all_headers})


def one_identity(who: set[tuple[str, str]]) -> tuple[str, str]:
    """The one (tenant, class) in ``who``; ValueError naming them if there are several."""
    if len(who) != 1:
        raise ValueError("a batch must be one tenant's and of one criticality class; "
                         f"this one names {sorted(who)}")
    ((tenant, criticality),) = who
    return tenant, criticality
