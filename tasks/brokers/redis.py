"""Redis transport whose push refuses atomically when the queue is at its limit."""
from __future__ import annotations

import hashlib

import redis
from kombu.transport import redis as kombu_redis
from redis.exceptions import NoScriptError

from config.settings import get_settings
from tasks import guard
from tasks.errors import BrokerUnavailable
from tasks.meter import broker_id

# KEYS: the queue's priority sub-lists. ARGV: bound, index of the target list, message.
ADMIT_LUA = """
local depth = 0
for i = 1, #KEYS do depth = depth + redis.call('LLEN', KEYS[i]) end
if depth >= tonumber(ARGV[1]) then return {0, depth} end
redis.call('LPUSH', KEYS[tonumber(ARGV[2])], ARGV[3])
return {1, depth + 1}
"""
ADMIT_SHA = hashlib.sha1(ADMIT_LUA.encode()).hexdigest()


def admit(client, keys: list[str], target: int, bound: int, payload: str) -> tuple[bool, int]:
    args = (len(keys), *keys, bound, target, payload)
    try:
        ok, depth = client.evalsha(ADMIT_SHA, *args)
    except NoScriptError:
        ok, depth = client.eval(ADMIT_LUA, *args)
    return bool(ok), int(depth)


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
        keys = list(dict.fromkeys(self._q_for_pri(queue, p) for p in self.priority_steps))
        target = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        try:
            ok, depth = admit(self._admit_client(), keys, keys.index(target) + 1, room,
                              kombu_redis.dumps(message))
        except redis.TimeoutError as exc:
            raise BrokerUnavailable(queue, f"the broker did not answer in time: {exc}") from None
        if not ok:  # the depth reported counts what workers hold, as the limit does
            raise guard.refuse(queue, depth + bound - room, bound)
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
