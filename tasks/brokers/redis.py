"""Redis transport whose push refuses atomically when the queue is at its limit."""
from __future__ import annotations

import hashlib

import redis
from kombu.transport import redis as kombu_redis
from redis.exceptions import NoScriptError

from config.queues import RETRY_AFTER_MAX_S, ticket_key
from config.settings import get_settings
from tasks import guard
from tasks.errors import BrokerUnavailable
from tasks.meter import broker_id

# KEYS: the queue's priority sub-lists, then its ticket key (tasks/guard.py).
# ARGV: bound, index of the target list, message, drain rate (0: unknown), longest
# Retry-After, one turnover of the queue in seconds. A refusal takes its ticket in
# the same call, so it costs one round trip, like an admission.
ADMIT_LUA = """
local lists = #KEYS - 1
local depth = 0
for i = 1, lists do depth = depth + redis.call('LLEN', KEYS[i]) end
local bound = tonumber(ARGV[1])
if depth < bound then
  redis.call('LPUSH', KEYS[tonumber(ARGV[2])], ARGV[3])
  return {1, depth + 1}
end
local rate = tonumber(ARGV[4])
if rate <= 0 then return {0, depth, '-1'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local excess = math.max(1, depth - bound + 1)
local slot = tonumber(redis.call('GET', KEYS[#KEYS]) or '0')
if slot < now + excess / rate then slot = now + excess / rate end
local latest = now + math.min(tonumber(ARGV[5]), math.max(tonumber(ARGV[6]), excess / rate))
if slot > latest then slot = latest end
redis.call('SET', KEYS[#KEYS], tostring(slot + 1 / rate), 'EX', 3600)
return {0, depth, tostring(slot - now)}
"""
ADMIT_SHA = hashlib.sha1(ADMIT_LUA.encode()).hexdigest()


def admit(client, keys: list[str], args: tuple) -> tuple[bool, int, float | None]:
    """Push the message if the queue has room; else (False, depth, seconds to the ticket)."""
    try:
        reply = client.evalsha(ADMIT_SHA, len(keys), *keys, *args)
    except NoScriptError:
        reply = client.eval(ADMIT_LUA, len(keys), *keys, *args)
    wait_s = float(reply[2]) if len(reply) > 2 and float(reply[2]) >= 0 else None
    return bool(reply[0]), int(reply[1]), wait_s


class Channel(kombu_redis.Channel):
    # Batched publishes would bypass the per-message admission below.
    supports_batch_publish = False

    def _put(self, queue, message, **kwargs):
        limit = guard.limit_for(queue)
        if limit is None:  # reply and pidbox queues are not ours to bound
            return super()._put(queue, message, **kwargs)
        guard.check_eta(queue, (message.get("headers") or {}).get("eta"))
        bound = guard.length_bound(limit)
        room = guard.room_in_broker(queue, self._broker_id(), bound)
        lists = list(dict.fromkeys(self._q_for_pri(queue, p) for p in self.priority_steps))
        target = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        rate = guard.cached_drain_rate(queue) or 0
        args = (room, lists.index(target) + 1, kombu_redis.dumps(message), rate,
                RETRY_AFTER_MAX_S, max(1, bound) / rate if rate else 0)
        try:
            ok, depth, wait_s = admit(self._admit_client(), [*lists, ticket_key(queue)], args)
        except redis.TimeoutError as exc:
            raise BrokerUnavailable(queue, f"the broker did not answer in time: {exc}") from None
        if not ok:  # the depth reported counts what workers hold, as the limit does
            raise guard.refuse(queue, depth + bound - room, bound, wait_s=wait_s)
        guard.admitted(queue)

    def _broker_id(self) -> str:
        found = getattr(self, "_fg_broker_id", None)
        if found is None:
            found = self._fg_broker_id = broker_id(self.connection.client)
        return found

    def _admit_client(self) -> redis.Redis:
        """A client whose reads time out, kept apart from the worker's blocking BRPOPs."""
        client = getattr(self, "_fg_admit_client", None)
        if client is None:
            params = {**self._connparams(), "socket_timeout": get_settings().publish_timeout_s}
            client = self._fg_admit_client = redis.Redis(
                connection_pool=redis.ConnectionPool(**params))
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
