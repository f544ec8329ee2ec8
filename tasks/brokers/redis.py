"""Redis transport whose push refuses atomically when the queue is at its limit."""
from __future__ import annotations

import hashlib

from kombu.transport import redis as kombu_redis
from redis.exceptions import NoScriptError

from tasks import guard

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
        keys = list(dict.fromkeys(self._q_for_pri(queue, p) for p in self.priority_steps))
        target = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self.conn_or_acquire() as client:
            ok, depth = admit(client, keys, keys.index(target) + 1, bound, kombu_redis.dumps(message))
        if not ok:
            raise guard.refuse(queue, depth, bound)
        guard.admitted(queue)


class Transport(kombu_redis.Transport):
    Channel = Channel
