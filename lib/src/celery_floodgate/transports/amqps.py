"""amqps://: the guarded RabbitMQ transport over TLS.

kombu serves amqps:// with ``pyamqp.SSLTransport``, which turns TLS on when the
app gave no ``broker_use_ssl``; the guarded transport must do the same, or an
amqps:// URL would connect in clear text to the TLS port.
"""
from __future__ import annotations

from typing import Any

from celery_floodgate.transports import amqp


class Transport(amqp.Transport):
    """As `.amqp.Transport`, with TLS on (kombu's ``pyamqp.SSLTransport``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.client.ssl:  # broker_use_ssl's dict, or nothing: TLS with defaults
            self.client.ssl = True
