"""Celery's canvas: ``Signature`` (``task.s()``, ``task.si()``), ``chain``, ``group`` and
``chord``, with Celery's names and semantics.

A workflow is worked out whole when it is sent (workflow.Plan): the jobs that can start
now are written with the rows describing the workflow in one statement; every job that
must wait travels as a document inside the job it follows, and the database enqueues it
in the transaction that records that job's end (sql/migrations/0007_workflows.sql),
sent by ``apply_async`` (producer.py) or ``aapply_async`` (aio.py), in one trace span.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, Union

from . import aio, producer, tracing
from .current import default_app
from .groupresult import GroupResult
from .ids import new_job_id
from .result import AsyncResult
from .workflow import Compiled, Plan, Result, as_list, check_defaults, root, single

if TYPE_CHECKING:
    from .app import PgQueue

Canvas = Union["Signature", "chain", "group", "chord"]
Args: TypeAlias = Sequence[Any] | None
Kwargs: TypeAlias = Mapping[str, Any] | None


class _Workflow:
    """What signatures, chains, groups and chords share: sending, ``delay`` and ``|``."""

    app: PgQueue | None = None
    kind = "signature"

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """Send the workflow: every row it needs now, in one statement (on ``connection=``
        if given: all of it exists only if that transaction commits). ``args`` go first in
        the arguments of the jobs that start now (unless immutable); ``link`` and
        ``link_error`` attach to it as Celery does; other options apply to every step that
        does not set its own (``countdown`` and ``eta`` to the jobs that start now only)."""
        connection = options.pop("connection", None)
        with tracing.publish(self.kind) as span:
            app, params, result = self._planned(args, kwargs, options, span)
            producer.send_workflow(app, params, connection)
        return result

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Any:
        """``apply_async`` for asyncio code, with the same arguments and result; on
        ``connection=`` (a psycopg AsyncConnection or AsyncCursor, a SQLAlchemy AsyncSession
        or AsyncConnection), or inside ``async with app.atransaction(conn):``, all of it
        exists only if that transaction commits."""
        connection = options.pop("connection", None)
        with tracing.publish(self.kind) as span:
            app, params, result = self._planned(args, kwargs, options, span)
            await aio.send_workflow(app, params, connection)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """``apply_async(args, kwargs)``."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        """``await aapply_async(args, kwargs)``."""
        return await self.aapply_async(args, kwargs)

    def _planned(
        self, args: Args, kwargs: Kwargs, options: dict[str, Any], span: tracing.Publish | None
    ) -> tuple[PgQueue, dict[str, str], Result]:
        """The workflow sent with these arguments and options, worked out whole: its app,
        the parameters of the one statement that writes it (traced by ``span``), its result."""
        app = self._app()
        link = as_list(options.pop("link", None))
        link_error = as_list(options.pop("link_error", None))
        check_defaults(self.kind, options)
        target = self._partial(tuple(args or ()), dict(kwargs or {}))
        for callback in link:
            target.link(callback)
        for errback in link_error:
            target.link_error(errback)
        plan = Plan(app, defaults=options, trace=span.carrier if span else None)
        compiled = target._compile(plan, [], None, True)
        plan.jobs.extend(compiled.entries)
        return app, plan.params(), compiled.result

    def __or__(self, other: Canvas) -> Canvas:
        if not isinstance(other, _Workflow):
            return NotImplemented
        return chain(self, other)

    def _app(self) -> PgQueue:
        return self.app if self.app is not None else default_app()

    # Each kind's own (and link, link_error) ------------------------------------------

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raise NotImplementedError

    def _compile(
        self, plan: Plan, follow: list[dict[str, Any]], chord_id: str | None, starts_now: bool
    ) -> Compiled:
        raise NotImplementedError


class Signature(_Workflow):
    """A task name with arguments and options, not yet sent (Celery's ``task.s(...)``).

    ``immutable`` (``task.si(...)``): the signature takes no result from what it follows.
    """

    def __init__(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        app: PgQueue | None = None,
        immutable: bool = False,
    ) -> None:
        self.task = task
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.options = dict(options or {})
        self.app = app
        self.immutable = bool(self.options.pop("immutable", immutable))

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(parts)}){'!' if self.immutable else ''}"

    def set(self, **options: Any) -> Signature:
        """Add options (``queue``, ``countdown``, ``link``, ``immutable``...); returns self."""
        if "immutable" in options:
            self.immutable = bool(options.pop("immutable"))
        self.options.update(options)
        return self

    def clone(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Signature:
        """A copy; ``args`` go first and ``kwargs`` are merged in, unless immutable."""
        new_args, new_kwargs = self._merge(tuple(args or ()), dict(kwargs or {}))
        own = {k: as_list(v) if k in ("link", "link_error") else v for k, v in self.options.items()}
        return Signature(
            self.task,
            new_args,
            new_kwargs,
            {**own, **options},
            app=self.app,
            immutable=self.immutable,
        )

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` when this task succeeds, with its result first in the
        arguments (unless ``callback`` is immutable); returns ``callback``."""
        self.options["link"] = [*as_list(self.options.get("link")), callback]
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when this task fails or is revoked, with the task's id as its one
        argument (unless ``errback`` is immutable); returns ``errback``."""
        self.options["link_error"] = [*as_list(self.options.get("link_error")), errback]
        return errback

    def apply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Send the task; ``args`` go first and ``kwargs`` are merged in (unless
        immutable). Takes every option of ``send_task``, and ``link``/``link_error``."""
        call, connection = self._call(args, kwargs, options)
        if {"link", "link_error"} & call.options.keys():  # they travel in the job's options
            return single(_Workflow.apply_async(call, connection=connection))
        return self._app().send_task(
            call.task, call.args, call.kwargs, connection=connection, **call.options
        )

    async def aapply_async(
        self,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> AsyncResult:
        """``apply_async`` for asyncio code (see ``app.asend_task``)."""
        call, connection = self._call(args, kwargs, options)
        if {"link", "link_error"} & call.options.keys():
            return single(await _Workflow.aapply_async(call, connection=connection))
        return await self._app().asend_task(
            call.task, call.args, call.kwargs, connection=connection, **call.options
        )

    def _call(
        self, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, options: dict[str, Any]
    ) -> tuple[Signature, Any]:
        """This call as a signature of its own (arguments merged, options added, empty
        links left out), and its ``connection=``."""
        call = self.clone(args, kwargs, **options)
        connection = call.options.pop("connection", None)
        for key in ("link", "link_error"):
            if not as_list(call.options.get(key)):
                call.options.pop(key, None)
        return call, connection

    def _merge(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self.immutable:
            return self.args, dict(self.kwargs)
        return args + self.args, {**self.kwargs, **kwargs}

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Signature:
        return self.clone(args, kwargs)

    def _compile(
        self, plan: Plan, follow: list[dict[str, Any]], chord_id: str | None, starts_now: bool
    ) -> Compiled:
        options = dict(self.options)
        links = _targets(plan, options.pop("link", None))
        errbacks = _targets(plan, options.pop("link_error", None))
        sequence = plan.sequence(follow)
        doc = plan.document(
            self.task,
            self.args,
            self.kwargs,
            options,
            immutable=self.immutable,
            starts_now=starts_now,
            link=links if sequence else follow + links,
            link_error=errbacks,
            chain=sequence,
            chord=chord_id,
        )
        result = AsyncResult(doc["id"], app=plan.app, task_name=self.task)
        return Compiled([doc], result, [(doc["id"], self.task)])


class chain(_Workflow):
    """Tasks run one after the other, each given the previous one's result first in its
    arguments (unless immutable): ``chain(a.s(1), b.s(), c.s())`` or ``a.s(1) | b.s()``.

    ``apply_async()`` returns the last step's AsyncResult; ``.parent`` leads back to the
    first. A group followed by a step becomes a chord, as in Celery.
    """

    kind = "chain"

    def __init__(self, *tasks: Any, app: PgQueue | None = None) -> None:
        steps: list[Canvas] = []
        for task in _canvases("chain", tasks):
            steps.extend(task.tasks if isinstance(task, chain) else [task])
        if not steps:
            raise ValueError("chain() needs at least one signature")
        self.tasks: list[Canvas] = steps
        self.app = app or next((t.app for t in steps if t.app is not None), None)

    def __repr__(self) -> str:
        return " | ".join(repr(t) for t in self.tasks)

    def clone(self) -> chain:
        return chain(*[t.clone() for t in self.tasks], app=self.app)

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` after the last step (as Celery's chain.link)."""
        return self.tasks[-1].link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when any step fails (attached to every step, as in Celery)."""
        for task in self.tasks:
            task.link_error(errback)
        return errback

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> chain:
        first, *rest = self.tasks
        return chain(first._partial(args, kwargs), *[t.clone() for t in rest], app=self.app)

    def _steps(self) -> list[Canvas]:
        steps: list[Canvas] = []
        for task in self.tasks:
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1], task, app=self.app)
            else:
                steps.append(task)
        return steps

    def _compile(
        self, plan: Plan, follow: list[dict[str, Any]], chord_id: str | None, starts_now: bool
    ) -> Compiled:
        steps = self._steps()
        chain_id = new_job_id()
        outer, plan.parent = plan.parent, chain_id
        compiled: list[Compiled] = []
        for i in reversed(range(len(steps))):
            last = i == len(steps) - 1
            part = steps[i]._compile(
                plan, follow, chord_id if last else None, starts_now and i == 0
            )
            follow = part.entries
            compiled.insert(0, part)
        plan.parent = outer
        for before, after in itertools.pairwise(compiled):
            root(after.result).parent = before.result
        plan.workflow("chain", [end for part in compiled for end in part.ends], id=chain_id)
        return Compiled(compiled[0].entries, compiled[-1].result, compiled[-1].ends)


class group(_Workflow):
    """Tasks run side by side: ``group(add.s(i, i) for i in range(10))``. ``apply_async()``
    returns a GroupResult; ``group | callback`` is a chord."""

    kind = "group"

    def __init__(self, *tasks: Any, app: PgQueue | None = None) -> None:
        self.tasks: list[Canvas] = _canvases("group", tasks)
        self.app = app or next((t.app for t in self.tasks if t.app is not None), None)

    def __repr__(self) -> str:
        return f"group([{', '.join(repr(t) for t in self.tasks)}])"

    def __or__(self, other: Canvas) -> Canvas:
        if isinstance(other, Signature | chain):
            return chord(self, other, app=self.app)
        return super().__or__(other)

    def clone(self) -> group:
        return group([t.clone() for t in self.tasks], app=self.app)

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` after each member (as Celery's group.link)."""
        for task in self.tasks:
            task.link(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` for each member that fails."""
        for task in self.tasks:
            task.link_error(errback)
        return errback

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> group:
        return group([t._partial(args, kwargs) for t in self.tasks], app=self.app)

    def _compile(
        self, plan: Plan, follow: list[dict[str, Any]], chord_id: str | None, starts_now: bool
    ) -> Compiled:
        if follow or chord_id is not None:
            raise NotImplementedError(
                "a group can be sent alone, be a chain's step (a chord, when a step "
                "follows it) or a chord's header; not a chord's body, nor a member of "
                "another group"
            )
        group_id = new_job_id()
        outer, plan.parent = plan.parent, group_id
        parts = [_member(t, "group")._compile(plan, [], None, starts_now) for t in self.tasks]
        plan.parent = outer
        ends = [end for part in parts for end in part.ends]
        plan.workflow("group", ends, id=group_id)
        results = [single(part.result) for part in parts]
        return Compiled(
            [d for part in parts for d in part.entries],
            GroupResult(group_id, results, app=plan.app),
            ends,
        )


class chord(_Workflow):
    """A group whose results, in the group's order, go to a callback once every member
    has succeeded: ``chord(header, callback)`` or ``group(...) | callback``. The callback
    runs exactly once; a member that fails (or is revoked, or expires) fails the chord: the
    callback ends FAILURE with ``ChordError`` naming it, without running, and its
    ``link_error`` runs. ``apply_async()`` returns the callback's AsyncResult, whose
    ``.parent`` is the header's GroupResult."""

    kind = "chord"

    def __init__(
        self, header: Any, body: Canvas | None = None, *, app: PgQueue | None = None
    ) -> None:
        self.header = header if isinstance(header, group) else group(header, app=app)
        if body is not None:
            _check_canvas("chord", body)
        self.body = body
        self.app = app or self.header.app or (body.app if body is not None else None)

    def __repr__(self) -> str:
        return f"chord({self.header!r}, {self.body!r})"

    def __call__(self, body: Canvas | None = None, **options: Any) -> Any:
        """``chord(header)(callback)``: send the chord with this callback."""
        target = chord(self.header, body if body is not None else self.body, app=self.app)
        return target.apply_async(**options)

    def clone(self) -> chord:
        return chord(self.header.clone(), self.body.clone() if self.body else None, app=self.app)

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` after the chord's callback."""
        return self._body().link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when the chord fails (it is the callback's link_error)."""
        return self._body().link_error(errback)

    def _body(self) -> Canvas:
        if self.body is None:
            raise TypeError("chord() has no callback: chord(header, callback)")
        return self.body

    def _partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> chord:
        return chord(self.header._partial(args, kwargs), self._body().clone(), app=self.app)

    def _compile(
        self, plan: Plan, follow: list[dict[str, Any]], chord_id: str | None, starts_now: bool
    ) -> Compiled:
        if chord_id is not None:
            raise NotImplementedError("a chord cannot be a member of another chord or group")
        chord_id = new_job_id()
        outer, plan.parent = plan.parent, chord_id
        body = self._body()._compile(plan, follow, None, False)
        if len(body.entries) != 1:
            raise NotImplementedError(
                "a chord's callback must be a task signature or a chain starting with one"
            )
        (callback,) = body.entries
        parts = [
            _member(t, "chord header")._compile(plan, [], chord_id, starts_now)
            for t in self.header.tasks
        ]
        plan.parent = outer
        ends = [end for part in parts for end in part.ends]
        plan.workflow("chord", ends, id=chord_id)
        header = GroupResult(chord_id, [single(p.result) for p in parts], app=plan.app)
        root(body.result).parent = header
        if not parts:
            # Nothing to wait for: the callback starts now, with no results (as in Celery).
            if not callback.get("immutable"):
                callback["args"] = [[], *callback["args"]]
            return Compiled([callback], body.result, body.ends)
        plan.chord(chord_id, len(parts), callback)
        return Compiled([d for p in parts for d in p.entries], body.result, body.ends)


def _targets(plan: Plan, value: Any) -> list[dict[str, Any]]:
    """The documents of link or link_error targets (task signatures or chains of them),
    which take none of the workflow's defaults: they are calls of their own."""
    docs = []
    for target in as_list(value):
        if not isinstance(target, Signature | chain):
            raise NotImplementedError(
                f"link and link_error take task signatures or chains of them, got {target!r}"
            )
        with plan.detached():
            docs.extend(target._compile(plan, [], None, False).entries)
    return docs


def _canvases(where: str, tasks: tuple[Any, ...]) -> list[Canvas]:
    """A chain's or group's tasks, given one by one or as one iterable, checked."""
    if len(tasks) == 1 and not isinstance(tasks[0], _Workflow):
        tasks = tuple(tasks[0])
    for task in tasks:
        _check_canvas(where, task)
    return list(tasks)


def _check_canvas(where: str, task: object) -> None:
    if not isinstance(task, _Workflow):
        raise TypeError(
            f"{where}() takes signatures (task.s(...)), chains, groups and chords; got "
            f"{type(task).__name__} {task!r}"
        )


def _member(task: Canvas, where: str) -> Signature | chain:
    if not isinstance(task, Signature | chain) or (
        isinstance(task, chain) and any(isinstance(t, group | chord) for t in task.tasks)
    ):
        raise NotImplementedError(
            f"a {where}'s members must be task signatures or chains of task signatures; "
            f"got {task!r}"
        )
    return task
