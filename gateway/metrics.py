"""Prometheus text for /metrics, built from counts read out of the database.

Every number comes from the shared database at scrape time, not from counters
kept in one process, so every gateway instance behind a load balancer returns
the same values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from gateway import fields

PREFIX = "support_gateway"
# The classic text format, which every Prometheus version scrapes.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
OUTBOX_STATES = ("pending", "sent", "failed")
OPTIONAL_HELP = {
    "slack_events": ("kind", "Slack events received, by kind."),
    "digest_runs": ("outcome", "Reminder digest runs, by outcome."),
}


@dataclass(frozen=True)
class DeskCounts:
    """Row counts behind /metrics; OPTIONAL holds tables that exist only with some features."""

    inbound_by_outcome: dict[str, int]
    tickets_by_status: dict[str, int]
    outbox_by_state: dict[str, int]
    optional: dict[str, dict[str, int]] = field(default_factory=dict)


def render_metrics(counts: DeskCounts) -> bytes:
    """Return COUNTS in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DeskCollector(counts))
    return generate_latest(registry)


class _DeskCollector:
    def __init__(self, counts: DeskCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        received = CounterMetricFamily(
            f"{PREFIX}_inbound_messages",
            "Emails received, by what the gateway did with them.",
            labels=["outcome"],
        )
        for outcome, count in sorted(counts.inbound_by_outcome.items()):
            received.add_metric([outcome], count)
        yield received

        tickets = GaugeMetricFamily(
            f"{PREFIX}_tickets", "Tickets, by internal status.", labels=["status"]
        )
        for status in fields.STATUSES:
            tickets.add_metric([status], counts.tickets_by_status.get(status, 0))
        yield tickets

        yield GaugeMetricFamily(
            f"{PREFIX}_outbox_depth",
            "Outbound messages waiting to be delivered.",
            value=counts.outbox_by_state.get("pending", 0),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_outbox_failed",
            "Outbound messages that failed for good after every retry.",
            value=counts.outbox_by_state.get("failed", 0),
        )
        outbox = GaugeMetricFamily(
            f"{PREFIX}_outbox_messages", "Outbound messages, by state.", labels=["state"]
        )
        for state in sorted({*OUTBOX_STATES, *counts.outbox_by_state}):
            outbox.add_metric([state], counts.outbox_by_state.get(state, 0))
        yield outbox

        for name, values in sorted(counts.optional.items()):
            label, help_text = OPTIONAL_HELP.get(name, ("kind", f"{name} rows."))
            family = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=[label])
            for key, count in sorted(values.items()):
                family.add_metric([key], count)
            yield family
