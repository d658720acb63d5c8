"""Server-side hooks: the application's own code, called at fixed points, with a time budget.

An application passes a :class:`Hooks` to ``create_app(settings, hooks=...)`` (or names one with
``--hooks package.module:hooks``). Every hook is optional and async::

    authenticate(handshake) -> Principal         replaces the token file and JWT
    authorize(principal, doc) -> "read" | "write"  replaces the documents/role of the principal
    load(doc) -> initial state | None             a new document's initial state
    validate(ctx, batch, state_after)              before the commit; raise to reject the batch
    on_commit(doc, version, patches, principal)    after the durable commit; cannot reject
    on_connect(ctx), on_disconnect(ctx)            a WebSocket connection comes and goes

``ctx`` is a :class:`HookContext`: the principal, the document id and the connection id.

Failures fail closed. A hook that raises a :class:`~server.errors.ServerError` (``Forbidden``,
``InvalidInput``...) gives that code to the client. Any other exception, or a hook over its time
budget, is counted in ``hook_errors_total{hook}``, logged, and refuses what it guarded:
``authenticate``/``authorize`` with ``unauthorized``, ``load``/``validate``/``on_connect`` with
``unavailable`` (a rejected batch leaves the document unchanged). ``on_commit`` and
``on_disconnect`` cannot refuse anything: their failures are only counted and logged.

:class:`HookRunner` is what the rest of the server calls; the hub knows it only through the
small interface it declares (``server.hub.SessionHooks``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .access import Handshake, Principal, Role
from .document import Applied
from .errors import Forbidden, ServerError, StoreUnavailable, Unauthorized
from .messages import MessageId

log = logging.getLogger("server.hooks")


@dataclass(frozen=True, slots=True)
class HookContext:
    """Who does what where: the principal, the document, and the WebSocket connection's id
    (None for an HTTP request)."""

    principal: Principal
    doc: str
    connection: str | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch as the document applied it, given to ``validate``.

    ``ops`` are its RFC 6902 operations as applied, ``immer`` the same as Immer patches,
    ``version`` the version it becomes if accepted. ``before`` maps the JSON Pointer of every
    path the batch wrote (as applied: rebased and compacted) to the value there before the
    batch; a pointer where nothing was (a new member, an inserted element) is absent. Values are
    the document's own, detached from it: read them, do not keep them."""

    id: MessageId | None
    version: int
    ops: list[dict[str, Any]]
    immer: list[dict[str, Any]]
    before: Mapping[str, Any]


Authenticate = Callable[[Handshake], Awaitable[Principal]]
Authorize = Callable[[Principal, str], Awaitable["Role | str | None"]]
Load = Callable[[str], Awaitable[Any]]
Validate = Callable[[HookContext, Batch, Any], Awaitable[None]]
OnCommit = Callable[[str, int, list[dict[str, Any]], "Principal | None"], Awaitable[None]]
OnConnection = Callable[[HookContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Hooks:
    """The application's hooks and their budgets (seconds).

    ``validate`` runs in the document's writer loop: every batch of the document waits for it,
    so keep it fast (``validate_timeout``, default 0.5 s); ``state_after`` is the live document,
    to read, never to modify or keep. ``on_commit`` calls run in order, one at a time per
    document, on a queue of at most ``commit_queue`` calls; when it is full the newest calls are
    merged: one call then covers several consecutive versions (``version`` the newest,
    ``patches`` all their operations in order, ``principal`` None if they came from different
    principals). Every version is seen exactly once, in order, by the process that committed it.
    """

    authenticate: Authenticate | None = None
    authorize: Authorize | None = None
    load: Load | None = None
    validate: Validate | None = None
    on_commit: OnCommit | None = None
    on_connect: OnConnection | None = None
    on_disconnect: OnConnection | None = None
    timeout: float = 5.0  # authenticate, authorize, load, on_connect, on_disconnect
    validate_timeout: float = 0.5
    commit_timeout: float = 10.0
    commit_queue: int = 256


@dataclass(slots=True)
class _Commit:
    version: int
    patches: list[str]  # RFC 6902 arrays, one per version
    principal: Principal | None


@dataclass(slots=True)
class _CommitQueue:
    calls: deque[_Commit] = field(default_factory=deque)
    worker: asyncio.Task[None] | None = None


class HookRunner:
    """Calls the hooks with their budgets, turns failures into the documented codes, counts
    them, and runs the ``on_commit`` queues."""

    def __init__(self, hooks: Hooks | None = None) -> None:
        self.hooks = hooks or Hooks()
        self.queues: dict[str, _CommitQueue] = {}
        self._count: Callable[[str], None] = lambda hook: None

    def count_errors_with(self, count: Callable[[str], None]) -> None:
        self._count = count

    @property
    def authenticates(self) -> bool:
        return self.hooks.authenticate is not None

    @property
    def authorizes(self) -> bool:
        return self.hooks.authorize is not None

    @property
    def sees_batches(self) -> bool:
        """Whether sessions need this runner at all (``validate`` or ``on_commit``)."""
        return self.hooks.validate is not None or self.hooks.on_commit is not None

    async def _call(self, name: str, hook: Callable[..., Awaitable[Any]], args: tuple[Any, ...],
                    timeout: float, failure: type[ServerError], *,
                    may_refuse: bool = True) -> Any:
        try:
            return await asyncio.wait_for(hook(*args), timeout)
        except ServerError as exc:
            if not may_refuse:  # a hook that cannot refuse anything: an error like any other
                self._count(name)
                log.warning("hook %s raised %s: %s", name, exc.code.value, exc.message)
            raise
        except TimeoutError:
            self._count(name)
            log.warning("hook %s took longer than %.3f s", name, timeout)
            raise failure(f"the {name} hook did not answer in time") from None
        except Exception as exc:  # the application's code: whatever it raises fails closed
            self._count(name)
            log.exception("hook %s failed", name)
            raise failure(f"the {name} hook failed") from exc

    # -- authentication ------------------------------------------------------------------------

    async def authenticate(self, handshake: Handshake) -> Principal:
        assert self.hooks.authenticate is not None
        principal = await self._call("authenticate", self.hooks.authenticate, (handshake,),
                                     self.hooks.timeout, Unauthorized)
        if not isinstance(principal, Principal):
            self._count("authenticate")
            raise Unauthorized("the authenticate hook returned no principal")
        return principal

    async def authorize(self, principal: Principal, doc: str) -> Role:
        assert self.hooks.authorize is not None
        role = await self._call("authorize", self.hooks.authorize, (principal, doc),
                                self.hooks.timeout, Unauthorized)
        if role is None:
            raise Forbidden(f"no access to document {doc!r}")
        if role not in (Role.READ.value, Role.WRITE.value):
            self._count("authorize")
            raise Unauthorized("the authorize hook returned no role")
        return Role(role)

    async def connect(self, ctx: HookContext) -> None:
        if self.hooks.on_connect is not None:
            await self._call("on_connect", self.hooks.on_connect, (ctx,), self.hooks.timeout,
                             StoreUnavailable)

    async def disconnect(self, ctx: HookContext) -> None:
        if self.hooks.on_disconnect is not None:
            with contextlib.suppress(ServerError):  # counted and logged by _call
                await self._call("on_disconnect", self.hooks.on_disconnect, (ctx,),
                                 self.hooks.timeout, StoreUnavailable, may_refuse=False)

    # -- sessions (server.hub.SessionHooks) ----------------------------------------------------

    async def load(self, doc: str) -> Any:
        if self.hooks.load is None:
            return None
        state = await self._call("load", self.hooks.load, (doc,), self.hooks.timeout,
                                 StoreUnavailable)
        try:
            orjson.dumps(state)
        except TypeError as exc:
            self._count("load")
            raise StoreUnavailable("the load hook returned a value that is not JSON") from exc
        return state

    async def validate(self, doc: str, context: Any, request_id: MessageId | None,
                       applied: Applied, version: int, state: Any) -> None:
        if self.hooks.validate is None:
            return
        ctx = context if isinstance(context, HookContext) else HookContext(
            Principal("server"), doc)
        batch = Batch(request_id, version, applied.json_patch, applied.immer, applied.previous())
        await self._call("validate", self.hooks.validate, (ctx, batch, state),
                         self.hooks.validate_timeout, StoreUnavailable)

    def committed(self, doc: str, version: int, json_patch: str, context: Any) -> None:
        """Queue the ``on_commit`` call of a durable version (never blocks)."""
        if self.hooks.on_commit is None:
            return
        principal = context.principal if isinstance(context, HookContext) else None
        queue = self.queues.get(doc)
        if queue is None:
            queue = self.queues[doc] = _CommitQueue()
        if len(queue.calls) >= max(1, self.hooks.commit_queue):
            last = queue.calls[-1]  # piling up: the newest queued call covers this one too
            last.version = version
            last.patches.append(json_patch)
            if last.principal != principal:
                last.principal = None
        else:
            queue.calls.append(_Commit(version, [json_patch], principal))
        if queue.worker is None:
            queue.worker = asyncio.create_task(self._drain(doc, queue), name=f"on_commit:{doc}")

    async def _drain(self, doc: str, queue: _CommitQueue) -> None:
        on_commit = self.hooks.on_commit
        assert on_commit is not None
        try:
            while queue.calls:
                call = queue.calls.popleft()
                patches = orjson.loads("[" + ",".join(p[1:-1] for p in call.patches
                                                      if p != "[]") + "]")
                with contextlib.suppress(ServerError):  # counted and logged by _call
                    await self._call("on_commit",
                                     on_commit, (doc, call.version, patches, call.principal),
                                     self.hooks.commit_timeout, StoreUnavailable,
                                     may_refuse=False)
        finally:
            queue.worker = None
            if not queue.calls and self.queues.get(doc) is queue:
                del self.queues[doc]

    async def close(self, timeout: float = 10.0) -> None:
        """Let the queued ``on_commit`` calls finish (bounded), then stop."""
        workers = [q.worker for q in self.queues.values() if q.worker is not None]
        if workers:
            _, late = await asyncio.wait(workers, timeout=timeout)
            for task in late:
                task.cancel()
            for task in late:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
