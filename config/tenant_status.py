"""``floodgate status``'s per-tenant figures: who was accepted, refused and is waiting.

Per bounded queue, one row per (tenant, class) with the last minute's accepted and
refused submissions (across every submitting process: celery_floodgate.submits'
per-second tenant buckets) and, on the tenant's first row, the messages it holds
now (``guard.tenant_held``). The screen names the TOP_TENANTS busiest tenants and
sums the rest as "other", so a thousand tenants still fit on one screen.
"""
from __future__ import annotations

from collections import Counter

from rich.table import Table
from rich.text import Text

#: Tenants named per queue on the screen; the rest are one "other" row per class.
TOP_TENANTS = 10
OTHER = "other"


def collect_tenants(guard, queue: str) -> list[dict]:
    """``queue``'s rows (see `tenant_rows`); ``[]`` without fair admission, or when the
    meter's Redis does not answer (the rest of the screen still shows)."""
    from celery_floodgate.submits import recent_tenant_counts

    if guard is None or getattr(guard, "fairness", None) is None:
        return []
    try:
        counts = recent_tenant_counts(guard.meter, queue)
        held = guard.tenant_held(queue)
    except Exception:  # noqa: BLE001 - the meter's Redis down: counts unknown, not an error
        return []
    return tenant_rows([tuple(row) for row in counts], held)


def tenant_rows(counts: list[tuple[str, str, int, int]], held: dict[str, int],
                top_n: int = TOP_TENANTS) -> list[dict]:
    """Merge the last minute's (tenant, class, accepted, refused) with ``held`` per tenant.

    The ``top_n`` tenants by accepted + refused + held are named, heaviest first; the
    others are summed under "other", last. ``held`` sits on each tenant's first row
    (its busiest class) and is 0 on the others, so a column sum is the queue's total.
    A tenant that holds messages but submitted nothing this minute gets a row of class
    "-".
    """
    weight: Counter[str] = Counter()
    for tenant, _, accepted, refused in counts:
        weight[tenant] += accepted + refused
    for tenant, n in held.items():
        weight[tenant] += n
    ranked = sorted((t for t in weight if t != OTHER), key=lambda t: (-weight[t], t))
    named = set(ranked[:top_n])

    def label(tenant: str) -> str:
        return tenant if tenant in named else OTHER

    cells: dict[tuple[str, str], list[int]] = {}
    for tenant, criticality, accepted, refused in counts:
        cell = cells.setdefault((label(tenant), criticality), [0, 0])
        cell[0] += accepted
        cell[1] += refused
    held_of: Counter[str] = Counter()
    for tenant, n in held.items():
        held_of[label(tenant)] += n
    for tenant in held_of.keys() - {t for t, _ in cells}:
        cells[(tenant, "-")] = [0, 0]
    total = Counter({t: weight[t] for t in named})
    total[OTHER] = sum(w for t, w in weight.items() if t not in named)
    order = sorted(cells, key=lambda tc: (tc[0] == OTHER, -total[tc[0]], tc[0],
                                          -sum(cells[tc]), tc[1]))
    rows, shown = [], set()
    for tenant, criticality in order:
        first = tenant not in shown
        shown.add(tenant)
        accepted, refused = cells[(tenant, criticality)]
        rows.append({"tenant": tenant, "criticality": criticality,
                     "accepted_last_minute": accepted, "refused_last_minute": refused,
                     "held": held_of[tenant] if first else 0})
    return rows


def tenant_table(queues: dict) -> Table | None:
    """One table of every queue's tenant rows; None when no queue has any."""
    if not any(q.get("tenants") for q in queues.values()):
        return None
    table = Table(title=f"Tenants (last minute; top {TOP_TENANTS} per queue, then other)",
                  title_justify="left")
    for column in ("queue", "tenant", "class", "accepted/min", "refused/min", "held"):
        table.add_column(column, justify="left" if column in ("queue", "tenant", "class")
                         else "right")
    for name, q in queues.items():
        previous = None
        for i, row in enumerate(q.get("tenants") or ()):
            first = row["tenant"] != previous
            previous = row["tenant"]
            table.add_row(
                name if i == 0 else "",
                row["tenant"] if first else "",
                row["criticality"],
                str(row["accepted_last_minute"]),
                Text(str(row["refused_last_minute"]),
                     style="bold red" if row["refused_last_minute"] else ""),
                str(row["held"]) if first else "",
            )
    return table
