"""A job's live state in Redis: id claims, the chunk registry, counters, completion, leases. O(1) per call.

The object store is the system of record; this is *derived* state, kept because asking the store
(LISTs of a job's objects) in every request and every completed chunk does not scale. Every
update is one atomic Lua script, so concurrent gateways and workers never race, and every update
is idempotent, so a redelivered task never counts twice:

=================  ======================================================================
key (``P`` =       value
``mfpo:{prefix}
job:{tenant}:
{job}:``)
=================  ======================================================================
``P meta``         hash: ``v`` (present = state is whole), ``closing``, ``closed``,
                   ``submitted``/``started``/``done``/``failed`` item counters, ``chunk_seq``,
                   ``finalize`` ('' | claimed | done) and its heartbeat ``finalize_ts``
``P ids``          hash: item id -> ``c|{chunk}|{stem}`` (in a stored chunk) or
                   ``p|{lease}|{chunk}|{stem}`` (claimed by a submission still writing it)
``P leases``       zset: submission lease -> expiry (renewed while the submission runs)
``P chunks``       hash: chunk -> ``{stage}|{status}|{time}|{size}[|{done}|{failed}]``, status one of
                   queued, running (time = heartbeat), undispatched, done
``P finished``     set of finished chunks (completion counted once); ``P started`` likewise
``P rate``         zset: ``{chunk}:{items}`` -> finish time (recent completion rate for the ETA)
``P exec``         hash: ``{stage}`` -> items the stage ran on; ``{stage}:skipped`` -> items it skipped
``P attempts``     hash: ``{chunk}:{stage}`` -> starts (a stage whose process keeps dying is given up)
``P order``        zset of chunk keys, all score 0: lexicographic = submission order (paged listings)
=================  ======================================================================

When ``meta`` is missing (Redis restarted empty, FLUSHALL) every call raises :class:`StateLost`,
and :func:`mfpo.jobs.recovery.rebuild_state` rebuilds the whole state from the store.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

ClaimStatus = Literal["new", "same", "dup", "busy", "check"]

_PARSE = """
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^|]*)|?') do table.insert(out, part) end
  return out
end
"""

_FINALIZE_CHECK = """
local function finalize_check(meta, now)
  local m = redis.call('HMGET', meta, 'closed', 'submitted', 'done', 'failed', 'finalize', 'cancelled')
  if m[1] == '1' and m[6] ~= '1' and tonumber(m[3] or 0) + tonumber(m[4] or 0) >= tonumber(m[2] or 0)
     and (m[5] == false or m[5] == '') then
    redis.call('HSET', meta, 'finalize', 'claimed', 'finalize_ts', now)
    return 1
  end
  return 0
end
"""

# KEYS: meta ids leases; ARGV: lease now chunk id1 stem1 id2 stem2 ...
_CLAIM = _PARSE + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return {'lost'} end
local lease, now, chunk = ARGV[1], tonumber(ARGV[2]), ARGV[3]
-- a submission that was in flight when close came (its lease is still live) finishes; close waits for it
if redis.call('HGET', KEYS[1], 'closing') == '1' then
  local own = redis.call('ZSCORE', KEYS[3], lease)
  if not own or tonumber(own) <= now then return {'closed'} end
end
local out = {}
for i = 4, #ARGV, 2 do
  local id, stem = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HGET', KEYS[2], id)
  if not cur then
    redis.call('HSET', KEYS[2], id, 'p|' .. lease .. '|' .. chunk .. '|' .. stem)
    table.insert(out, 'new')
  else
    local p = split(cur)
    if p[1] == 'c' then
      if p[3] == stem then table.insert(out, 'same|' .. p[2]) else table.insert(out, 'dup|' .. p[2]) end
    elseif p[2] == lease then
      table.insert(out, 'dup|' .. p[3])
    else
      local expiry = redis.call('ZSCORE', KEYS[3], p[2])
      if expiry and tonumber(expiry) > now then
        table.insert(out, 'busy|' .. p[3])
      else
        table.insert(out, 'check|' .. p[3] .. '|' .. p[4] .. '|' .. cur)
      end
    end
  end
end
return out
"""

# KEYS: ids; ARGV: id expected new
_TAKEOVER = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# KEYS: ids; ARGV: lease chunk id1 id2 ...
_RELEASE = _PARSE + """
local n = 0
for i = 3, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur then
    local p = split(cur)
    if p[1] == 'p' and p[2] == ARGV[1] and p[3] == ARGV[2] then
      redis.call('HDEL', KEYS[1], ARGV[i]); n = n + 1
    end
  end
end
return n
"""

# KEYS: meta ids chunks order; ARGV: chunk size now status id1 stem1 ...
_REGISTER = """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], 'c|' .. ARGV[1] .. '|' .. ARGV[i + 1])
end
if redis.call('HSETNX', KEYS[3], ARGV[1], 'keywords|' .. ARGV[4] .. '|' .. ARGV[3] .. '|' .. ARGV[2]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'submitted', tonumber(ARGV[2]))
  redis.call('ZADD', KEYS[4], 0, ARGV[1])
  return 1
end
return 0
"""

# KEYS: meta chunks started exec; ARGV: chunk stage now first_stage
_START = _PARSE + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'cancelled') == '1' then return -3 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return -2 end
local p = split(cur)
if p[2] == 'done' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|running|' .. ARGV[3] .. '|' .. p[4])
if ARGV[2] == ARGV[4] and redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'started', tonumber(p[4]))
end
return tonumber(p[4])
"""

# KEYS: chunks; ARGV: chunk stage now
_HEARTBEAT = _PARSE + """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local p = split(cur)
if p[1] == ARGV[2] and p[2] == 'running' then
  redis.call('HSET', KEYS[1], ARGV[1], p[1] .. '|running|' .. ARGV[3] .. '|' .. p[4])
  return 1
end
return 0
"""

# KEYS: meta chunks; ARGV: chunk stage status now expect ('' or the status the chunk must be in, at stage)
_SET_STAGE = _PARSE + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return -2 end
local p = split(cur)
if p[2] == 'done' then return 0 end
if ARGV[5] ~= '' and (p[2] ~= ARGV[5] or p[1] ~= ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. ARGV[4] .. '|' .. p[4])
return 1
"""

# KEYS: meta chunks finished rate; ARGV: chunk done failed now
_COMPLETE = _PARSE + _FINALIZE_CHECK + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
local size = 0
if cur then size = tonumber(split(cur)[4]) end
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'done', tonumber(ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 'failed', tonumber(ARGV[3]))
  redis.call('HSET', KEYS[2], ARGV[1], 'perturb|done|' .. ARGV[4] .. '|' .. size .. '|' .. ARGV[2] .. '|' .. ARGV[3])
  redis.call('ZADD', KEYS[4], tonumber(ARGV[4]), ARGV[1] .. ':' .. (tonumber(ARGV[2]) + tonumber(ARGV[3])))
end
return finalize_check(KEYS[1], ARGV[4])
"""

# KEYS: meta chunks finished; ARGV: chunk now  (a finished chunk whose outcome the store lost)
_REOPEN = _PARSE + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return 0 end
local p = split(cur)
if redis.call('SREM', KEYS[3], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'done', 0 - tonumber(p[5] or 0))
  redis.call('HINCRBY', KEYS[1], 'failed', 0 - tonumber(p[6] or 0))
end
redis.call('HSET', KEYS[2], ARGV[1], 'keywords|undispatched|' .. ARGV[2] .. '|' .. p[4])
redis.call('HSET', KEYS[1], 'finalize', '')
return 1
"""

# KEYS: meta leases; ARGV: lease expiry
_OPEN_LEASE = """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'closing') == '1' then return -2 end
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
return 1
"""

# KEYS: meta leases; ARGV: now
_BEGIN_CLOSE = """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
redis.call('HSET', KEYS[1], 'closing', '1')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return redis.call('ZCARD', KEYS[2])
"""

# KEYS: meta; ARGV: now
_MARK_CLOSED = _FINALIZE_CHECK + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
redis.call('HSET', KEYS[1], 'closing', '1', 'closed', '1')
return finalize_check(KEYS[1], ARGV[1])
"""

# KEYS: meta; ARGV: now overdue  -> 1 when the caller should (re)run finalize
_FINALIZE_DUE = _FINALIZE_CHECK + """
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then return -1 end
local f = redis.call('HMGET', KEYS[1], 'finalize', 'finalize_ts')
if f[1] == 'claimed' then
  if tonumber(ARGV[1]) - tonumber(f[2] or 0) > tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'finalize_ts', ARGV[1])
    return 1
  end
  return 0
end
return finalize_check(KEYS[1], ARGV[1])
"""


class StateLost(RuntimeError):
    """The job's state is not in Redis (restarted empty, flushed): it must be rebuilt from the store."""


class JobClosing(RuntimeError):
    """The job was closed (or is closing): it accepts no more items."""


@dataclass(frozen=True)
class Claim:
    """The answer to claiming one item id for a submission."""

    status: ClaimStatus
    chunk: str = ""
    stem: str = ""
    current: str = ""  # the claim's stored value ('check': for the takeover)


@dataclass(frozen=True)
class ChunkState:
    """A chunk's place in the graph: the stage it is at, its status, when (heartbeat), its size."""

    chunk: str
    stage: str
    status: str
    at: float
    size: int
    done: int = 0
    failed: int = 0


@dataclass
class JobCounts:
    """Item counters of a job (from ``meta``)."""

    submitted: int = 0
    started: int = 0
    done: int = 0
    failed: int = 0
    closing: bool = False
    closed: bool = False
    cancelled: bool = False
    finalize: str = ""
    stages: dict[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def running(self) -> int:
        return max(0, self.started - self.finished)

    @property
    def queued(self) -> int:
        return max(0, self.submitted - max(self.started, self.finished))


def _int(value: Any) -> int:
    return int(value) if value not in (None, b"", "") else 0


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


class JobState:
    """The Redis state of one job (``client``: a ``redis.Redis``; ``namespace``: the deployment's queue prefix)."""

    def __init__(self, client: Any, namespace: str, tenant: str, job_id: str) -> None:
        self.redis = client
        self.prefix = f"mfpo:{namespace}job:{tenant}:{job_id}:"
        self.tenant, self.job_id = tenant, job_id

    def key(self, name: str) -> str:
        return self.prefix + name

    def _script(self, source: str) -> Any:
        cache = self.redis.__dict__.setdefault("_mfpo_scripts", {})
        if source not in cache:
            cache[source] = self.redis.register_script(source)
        return cache[source]

    def _call(self, source: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self._script(source)(keys=[self.key(k) for k in keys], args=list(args))

    # -- life cycle ------------------------------------------------------------------------------

    def init(self) -> None:
        """Create the state of a new job (idempotent)."""
        self.redis.hsetnx(self.key("meta"), "v", "1")

    def exists(self) -> bool:
        return bool(self.redis.hexists(self.key("meta"), "v"))

    def counts(self) -> JobCounts:
        """The counters in one round trip; raises :class:`StateLost`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(self.key("meta"))
        pipe.hgetall(self.key("exec"))
        meta, executed = pipe.execute()
        meta = {_str(k): _str(v) for k, v in meta.items()}
        if "v" not in meta:
            raise StateLost(f"job {self.job_id}: state lost")
        return JobCounts(
            submitted=_int(meta.get("submitted")), started=_int(meta.get("started")), done=_int(meta.get("done")),
            failed=_int(meta.get("failed")), closing=meta.get("closing") == "1", closed=meta.get("closed") == "1",
            cancelled=meta.get("cancelled") == "1",
            finalize=meta.get("finalize", ""), stages={_str(k): _int(v) for k, v in executed.items()},
        )

    def recent_rate(self, window_s: float, now: float | None = None) -> float | None:
        """Items finished per second over the last ``window_s`` (None when too few chunks finished in it)."""
        now = time.time() if now is None else now
        entries = self.redis.zrangebyscore(self.key("rate"), now - window_s, "+inf", withscores=True)
        if not entries:
            return None
        sizes = [int(_str(m).rsplit(":", 1)[1]) for m, _ in entries]  # in completion order
        if len(entries) == 1:  # one completion: as if spread over the whole window (a cautious rate)
            return sizes[0] / window_s
        # the items finished after the first completion, over the time since it (a stall lowers the rate)
        return sum(sizes[1:]) / max(now - entries[0][1], 1e-3)

    # -- submissions -----------------------------------------------------------------------------

    def open_lease(self, ttl_s: float) -> str:
        """A submission's lease (renew with :meth:`renew_lease`); raises :class:`JobClosing`/:class:`StateLost`."""
        lease = uuid.uuid4().hex[:16]
        result = self._call(_OPEN_LEASE, ["meta", "leases"], [lease, time.time() + ttl_s])
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        if result == -2:
            raise JobClosing(f"job {self.job_id} is closed")
        return lease

    def renew_lease(self, lease: str, ttl_s: float) -> None:
        self.redis.zadd(self.key("leases"), {lease: time.time() + ttl_s}, xx=True)

    def close_lease(self, lease: str) -> None:
        self.redis.zrem(self.key("leases"), lease)

    def next_chunk(self) -> int:
        """A new chunk number (submission order across every gateway)."""
        return int(self.redis.hincrby(self.key("meta"), "chunk_seq", 1)) - 1

    def claim(self, lease: str, chunk: str, items: Sequence[tuple[str, str]]) -> list[Claim]:
        """Claim ``(item id, stem)`` pairs for ``chunk``; one :class:`Claim` per pair, in order."""
        args: list[Any] = [lease, time.time(), chunk]
        for item_id, stem in items:
            args += [item_id, stem]
        result = [_str(r) for r in self._call(_CLAIM, ["meta", "ids", "leases"], args)]
        if result == ["lost"]:
            raise StateLost(f"job {self.job_id}: state lost")
        if result == ["closed"]:
            raise JobClosing(f"job {self.job_id} is closed")
        claims = []
        for r in result:
            parts = r.split("|", 3)
            status = parts[0]
            if status == "check":
                claims.append(Claim("check", parts[1], parts[2], parts[3]))
            else:
                claims.append(Claim(status, parts[1] if len(parts) > 1 else ""))  # type: ignore[arg-type]
        return claims

    def take_over(self, item_id: str, current: str, lease: str, chunk: str, stem: str) -> bool:
        """Replace an abandoned claim (value ``current``) by this submission's; False if it changed meanwhile."""
        new = f"p|{lease}|{chunk}|{stem}"
        return bool(self._call(_TAKEOVER, ["ids"], [item_id, current, new]))

    def release(self, lease: str, chunk: str, item_ids: Iterable[str]) -> None:
        """Drop this submission's pending claims of ``chunk`` (items it did not store)."""
        ids = list(item_ids)
        if ids:
            self._call(_RELEASE, ["ids"], [lease, chunk, *ids])

    def register_chunk(self, chunk: str, items: Sequence[tuple[str, str]], status: str = "queued") -> bool:
        """Record a stored chunk: its items' claims become final, ``submitted`` grows (once). True if new."""
        args: list[Any] = [chunk, len(items), time.time(), status]
        for item_id, stem in items:
            args += [item_id, stem]
        result = self._call(_REGISTER, ["meta", "ids", "chunks", "order"], args)
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return bool(result)

    def chunks_after(self, after: str | None, count: int) -> list[str]:
        """Up to ``count`` chunk keys after ``after`` in submission order (O(log n + count))."""
        start = f"({after}" if after else "-"
        return [_str(c) for c in self.redis.zrangebylex(self.key("order"), start, "+", start=0, num=count)]

    def cancel(self) -> None:
        """Stop the job: stages not started yet do nothing, finalize never runs."""
        if not self.exists():
            raise StateLost(f"job {self.job_id}: state lost")
        self.redis.hset(self.key("meta"), mapping={"closing": "1", "cancelled": "1"})

    def item_chunk(self, item_id: str) -> str | None:
        """The chunk holding a stored item (None: unknown id or still being submitted)."""
        value = self.redis.hget(self.key("ids"), item_id)
        if value is None:
            if not self.exists():
                raise StateLost(f"job {self.job_id}: state lost")
            return None
        parts = _str(value).split("|")
        return parts[1] if parts[0] == "c" else None

    # -- stages ----------------------------------------------------------------------------------

    def chunk_state(self, chunk: str) -> ChunkState | None:
        value = self.redis.hget(self.key("chunks"), chunk)
        return None if value is None else _chunk_state(chunk, _str(value))

    def chunk_states(self) -> list[ChunkState]:
        """Every chunk's state (reconcile only: O(chunks), never per item or per request)."""
        return [_chunk_state(_str(k), _str(v)) for k, v in self.redis.hgetall(self.key("chunks")).items()]

    def start(self, chunk: str, stage: str, first_stage: str) -> int:
        """A worker starts ``stage`` on ``chunk``: status running, heartbeat now. Returns the chunk size
        (0: the chunk is already finished; -2: unknown chunk; -3: the job was cancelled)."""
        result = int(self._call(_START, ["meta", "chunks", "started"], [chunk, stage, time.time(), first_stage]))
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return result

    def heartbeat(self, chunk: str, stage: str) -> None:
        self._call(_HEARTBEAT, ["chunks"], [chunk, stage, time.time()])

    def set_stage(self, chunk: str, stage: str, status: str, expect: str = "") -> bool:
        """Move ``chunk`` to ``stage`` with ``status`` (queued / undispatched) unless it is finished, and, with
        ``expect``, only if it is at ``stage`` in that status (so a worker's "running" is never overwritten)."""
        result = int(self._call(_SET_STAGE, ["meta", "chunks"], [chunk, stage, status, time.time(), expect]))
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return result == 1

    def attempt(self, chunk: str, stage: str) -> int:
        """Count a start of ``stage`` on ``chunk``; returns how many starts there have been (1 = the first)."""
        return int(self.redis.hincrby(self.key("attempts"), f"{chunk}:{stage}", 1))

    def uncount_attempt(self, chunk: str, stage: str) -> None:
        """Take back a start that ended in an exception (a transient store or Redis error, retried): the
        count is of starts whose process died, so an outage never uses up a chunk's attempts. Best effort:
        with Redis away the start stays counted."""
        with contextlib.suppress(redis.RedisError):
            self.redis.hincrby(self.key("attempts"), f"{chunk}:{stage}", -1)

    def count_execution(self, stage: str, items: int, executed: bool) -> None:
        self.redis.hincrby(self.key("exec"), stage if executed else f"{stage}:skipped", items)

    def complete(self, chunk: str, done: int, failed: int) -> bool:
        """The chunk's outcomes are stored: count them (once). True when this completion finished the job
        and this caller must run finalize (claimed exactly once)."""
        result = int(self._call(_COMPLETE, ["meta", "chunks", "finished", "rate"], [chunk, done, failed, time.time()]))
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return result == 1

    def reopen(self, chunk: str) -> None:
        """A finished chunk whose outcomes the store lost: uncount it and queue it from the start."""
        self._call(_REOPEN, ["meta", "chunks", "finished"], [chunk, time.time()])

    # -- close and finalize ----------------------------------------------------------------------

    def begin_close(self) -> int:
        """Refuse new submissions; returns how many are still in flight (unexpired leases)."""
        result = int(self._call(_BEGIN_CLOSE, ["meta", "leases"], [time.time()]))
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return result

    def in_flight(self) -> int:
        return int(self.redis.zcount(self.key("leases"), time.time(), "+inf"))

    def mark_closed(self) -> bool:
        """The job is closed (its record says so). True when the caller must run finalize (exactly once)."""
        result = int(self._call(_MARK_CLOSED, ["meta"], [time.time()]))
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return result == 1

    def finalize_heartbeat(self) -> None:
        self.redis.hset(self.key("meta"), "finalize_ts", time.time())

    def finalize_done(self) -> None:
        self.redis.hset(self.key("meta"), mapping={"finalize": "done", "finalize_ts": time.time()})

    def finalize_due(self, overdue_s: float) -> bool:
        """True when finalize must be (re)dispatched: the job just completed unnoticed, or the finalize that
        claimed it stopped sending heartbeats (its worker died)."""
        result = int(self._call(_FINALIZE_DUE, ["meta"], [time.time(), overdue_s]))
        if result == -1:
            raise StateLost(f"job {self.job_id}: state lost")
        return result == 1

    def drop(self) -> None:
        """Delete the job's state (the job was deleted)."""
        self.redis.delete(*(self.key(k) for k in ("meta", "ids", "leases", "chunks", "finished", "started", "rate",
                                                   "exec", "attempts", "order", "rebuild", "rebuild-asked")))

    # -- rebuild ---------------------------------------------------------------------------------

    def ask_rebuild_once(self, ttl_s: float = 30.0) -> bool:
        """True for the first caller in ``ttl_s`` (so a lost state triggers one rebuild task, not one per request)."""
        return bool(self.redis.set(self.key("rebuild-asked"), "1", nx=True, ex=max(1, int(ttl_s))))

    def lock_rebuild(self, ttl_s: float) -> bool:
        return bool(self.redis.set(self.key("rebuild"), "1", nx=True, ex=max(1, int(ttl_s))))

    def unlock_rebuild(self) -> None:
        self.redis.delete(self.key("rebuild"))

    def install(self, snapshot: StateSnapshot) -> bool:
        """Write a rebuilt state in one transaction, only if no state exists (False: someone else's is there)."""
        import redis

        meta_key = self.key("meta")
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(meta_key)
                if pipe.hexists(meta_key, "v"):
                    pipe.unwatch()
                    return False
                pipe.multi()
                for name in ("ids", "chunks", "finished", "started", "rate", "leases", "order"):
                    pipe.delete(self.key(name))
                pipe.hset(meta_key, mapping=snapshot.meta())
                for start in range(0, len(snapshot.ids), 10_000):
                    pipe.hset(self.key("ids"), mapping=dict(snapshot.ids[start:start + 10_000]))
                if snapshot.chunks:
                    pipe.hset(self.key("chunks"), mapping={c.chunk: _chunk_value(c) for c in snapshot.chunks})
                    pipe.zadd(self.key("order"), dict.fromkeys((c.chunk for c in snapshot.chunks), 0))
                finished = [c.chunk for c in snapshot.chunks if c.status == "done"]
                if finished:
                    pipe.sadd(self.key("finished"), *finished)
                    pipe.sadd(self.key("started"), *finished)
                pipe.execute()
                return True
            except redis.WatchError:
                return False


@dataclass
class StateSnapshot:
    """A job's state as rebuilt from the store (see :func:`mfpo.jobs.recovery.rebuild_state`)."""

    chunks: list[ChunkState]
    ids: list[tuple[str, str]]  # (item id, claim value)
    closed: bool
    finalized: bool
    chunk_seq: int
    cancelled: bool = False

    def meta(self) -> dict[str, Any]:
        done = sum(c.done for c in self.chunks if c.status == "done")
        failed = sum(c.failed for c in self.chunks if c.status == "done")
        submitted = sum(c.size for c in self.chunks)
        return {
            "v": "1", "submitted": submitted, "started": done + failed, "done": done, "failed": failed,
            "closing": "1" if self.closed else "0", "closed": "1" if self.closed else "0",
            "finalize": "done" if self.finalized else "", "finalize_ts": 0, "chunk_seq": self.chunk_seq,
            "cancelled": "1" if self.cancelled else "0",
        }


def _chunk_value(c: ChunkState) -> str:
    base = f"{c.stage}|{c.status}|{c.at}|{c.size}"
    return f"{base}|{c.done}|{c.failed}" if c.status == "done" else base


def _chunk_state(chunk: str, value: str) -> ChunkState:
    parts = value.split("|")
    done = int(parts[4]) if len(parts) > 4 and parts[4] else 0
    failed = int(parts[5]) if len(parts) > 5 and parts[5] else 0
    return ChunkState(chunk, parts[0], parts[1], float(parts[2] or 0), int(parts[3] or 0), done, failed)
