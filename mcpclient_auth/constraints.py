"""Capability constraints: enforced by a registry of evaluators, or the mandate is refused (pure: no I/O).

A mandate capability may narrow what it grants with ``constraints``. Each member of that object is
one constraint, named by its key and understood by one registered :class:`ConstraintEvaluator`:

    {"action": "mcp.get_employee_salary",
     "constraints": {"args": {"employee": {"one_of": ["bob"]}},   # argument values allowed
                     "max_calls": 1}}                             # calls of this action per run

- ``args`` — per argument name, exactly one condition: ``{"eq": <JSON value>}`` or
  ``{"one_of": [<JSON value>, ...]}``. The arguments are ``params.arguments`` of ``tools/call`` and
  ``prompts/get``, and ``{"uri": params.uri}`` of ``resources/read`` / ``resources/subscribe``.
  Values compare as canonical JSON (``1`` is not ``true``, ``"Bob"`` is not ``"bob"``); a missing
  argument violates the constraint (the tool's default might be exactly what is not allowed); an
  action whose calls carry no arguments can never satisfy an ``args`` constraint.
- ``max_calls`` — a positive integer: how many calls of this action one run (one mandate ``jti``)
  may make. Every call the run authorises counts: a 401/403 resend is a new call, and a call refused
  after authorisation (say, for want of a user token) is not refunded.

Like a JOSE ``crit`` header, a constraint (or a condition operator) that no evaluator understands
makes the whole mandate unusable: :func:`check_known` raises
:class:`~mcpclient_auth.errors.ConstraintUnknown`, which ``AgentRun`` raises at creation and the
server middleware answers with 403. A violated constraint is a
:class:`~mcpclient_auth.errors.ConstraintViolated` denial. The flat shape
``{"employee": "bob"}`` is deliberately *not* read as an argument constraint: a constraint name and an
argument name must never be confused, so it is an unknown constraint and refused.

    check_known(mandate.cap)                                  # at run creation / on the server
    budget = CallBudget()
    budget.charge(run_id, "mcp.get_employee_salary", mandate.constraints(action), call, expires=exp)
    is_narrower(parent_constraints, child_constraints)        # delegation: equal or narrower

Add an evaluator with ``DEFAULT_REGISTRY.register(MyEvaluator())`` (or build a
:class:`ConstraintRegistry` and pass it where one is accepted).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ConfigurationError, ConstraintError, ConstraintUnknown, ConstraintViolated
from .jsonrpc import Call
from .policy import call_arguments

__all__ = [
    "DEFAULT_REGISTRY",
    "ArgumentConstraint",
    "BudgetedMandate",
    "CallBudget",
    "CallUse",
    "ConstraintEvaluator",
    "ConstraintRegistry",
    "MaxCalls",
    "check_known",
    "evaluate",
    "is_narrower",
]


@dataclass(frozen=True, slots=True)
class CallUse:
    """What an evaluator judges: the action, the call's arguments (``None``: the call has none a
    constraint could look at) and how many calls of the action the run already made."""

    action: str
    arguments: Mapping[str, Any] | None
    calls_made: int


@runtime_checkable
class ConstraintEvaluator(Protocol):
    """One kind of constraint, named by the key it is written under in ``constraints``."""

    #: The member name in a capability's ``constraints`` object.
    name: str
    #: Whether the evaluator needs ``CallUse.calls_made`` (the run's calls of the action are counted).
    counts_calls: bool

    def validate(self, value: Any, *, action: str) -> None:
        """Raise :class:`ConstraintError` (or :class:`ConstraintUnknown`) for a value it cannot use."""
        ...

    def evaluate(self, value: Any, use: CallUse) -> None:
        """Raise :class:`ConstraintViolated` when the call breaks the constraint."""
        ...

    def is_narrower(self, parent: Any, child: Any) -> bool:
        """Whether ``child`` allows at most what ``parent`` allows (both already validated)."""
        ...


def _canonical(value: Any) -> str:
    # Strict JSON equality: True != 1, 1 != 1.0, key order irrelevant.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_OPERATORS = ("eq", "one_of")


class ArgumentConstraint:
    """``{"args": {"<argument>": {"eq": v} | {"one_of": [v, ...]}}}`` (see the module docstring)."""

    name = "args"
    counts_calls = False

    def validate(self, value: Any, *, action: str) -> None:
        if not isinstance(value, Mapping) or not value:
            raise ConstraintError(
                f"capability {action!r}: 'args' must be a non-empty object of argument conditions",
                action=action,
            )
        for argument, condition in value.items():
            if not isinstance(condition, Mapping) or len(condition) != 1:
                raise ConstraintError(
                    f"capability {action!r}: the condition on argument {argument!r} must be one of "
                    '{"eq": value} or {"one_of": [values]}',
                    action=action,
                )
            ((operator, operand),) = condition.items()
            if operator not in _OPERATORS:
                raise ConstraintUnknown(
                    f"capability {action!r}: argument condition {operator!r} is not understood "
                    f"(known: {', '.join(_OPERATORS)}); the mandate cannot be used",
                    action=action,
                    constraint=f"args.{operator}",
                )
            if operator == "one_of" and (not isinstance(operand, list) or not operand):
                raise ConstraintError(
                    f"capability {action!r}: 'one_of' for argument {argument!r} must be a non-empty list",
                    action=action,
                )

    @staticmethod
    def _allowed(condition: Mapping[str, Any]) -> set[str]:
        ((operator, operand),) = condition.items()
        values = [operand] if operator == "eq" else list(operand)
        return {_canonical(v) for v in values}

    def evaluate(self, value: Any, use: CallUse) -> None:
        if use.arguments is None:
            raise ConstraintViolated(
                f"{use.action!r} is granted only with argument constraints, and this call has no arguments "
                "they could be checked against",
                action=use.action,
            )
        for argument, condition in value.items():
            if argument not in use.arguments:
                raise ConstraintViolated(
                    f"argument {argument!r} is constrained by the mandate and missing from the call",
                    action=use.action,
                    argument=argument,
                )
            if _canonical(use.arguments[argument]) not in self._allowed(condition):
                # The value itself stays out of the message: arguments may be personal data.
                raise ConstraintViolated(
                    f"argument {argument!r} has a value the mandate does not allow for {use.action!r}",
                    action=use.action,
                    argument=argument,
                )

    def is_narrower(self, parent: Any, child: Any) -> bool:
        for argument, condition in parent.items():
            if argument not in child or not self._allowed(child[argument]) <= self._allowed(condition):
                return False
        return True  # the child may constrain more arguments


class MaxCalls:
    """``{"max_calls": n}``: at most ``n`` (≥ 1) calls of the action per run."""

    name = "max_calls"
    counts_calls = True

    def validate(self, value: Any, *, action: str) -> None:
        if type(value) is not int or value < 1:
            raise ConstraintError(
                f"capability {action!r}: 'max_calls' must be a positive integer", action=action
            )

    def evaluate(self, value: Any, use: CallUse) -> None:
        if use.calls_made >= value:
            raise ConstraintViolated(
                f"the run used its budget of {value} call(s) of {use.action!r} (max_calls)",
                action=use.action,
                max_calls=value,
            )

    def is_narrower(self, parent: Any, child: Any) -> bool:
        return bool(child <= parent)


class ConstraintRegistry:
    """Evaluators by constraint name (like a JOSE algorithm registry: what is not registered is refused)."""

    def __init__(self, evaluators: Iterable[ConstraintEvaluator] = ()) -> None:
        self._evaluators: dict[str, ConstraintEvaluator] = {}
        self._lock = threading.Lock()
        for evaluator in evaluators:
            self.register(evaluator)

    def __repr__(self) -> str:
        return f"ConstraintRegistry({sorted(self._evaluators)!r})"

    def register(self, evaluator: ConstraintEvaluator) -> None:
        """Add an evaluator; a name can be registered once (replacing one would loosen old mandates)."""
        name = getattr(evaluator, "name", None)
        if not isinstance(name, str) or not name:
            raise ConfigurationError("a constraint evaluator needs a non-empty string 'name'")
        with self._lock:
            if name in self._evaluators:
                raise ConfigurationError(f"a constraint evaluator for {name!r} is already registered")
            self._evaluators[name] = evaluator

    def names(self) -> list[str]:
        return sorted(self._evaluators)

    def get(self, name: str) -> ConstraintEvaluator | None:
        return self._evaluators.get(name)

    def _evaluator(self, name: str, action: str) -> ConstraintEvaluator:
        evaluator = self._evaluators.get(name)
        if evaluator is None:
            raise ConstraintUnknown(
                f"capability {action!r} carries constraint {name[:64]!r}, which no registered evaluator "
                f"understands (known: {', '.join(self.names())}); the mandate cannot be used",
                action=action,
                constraint=name[:64],
            )
        return evaluator

    def check_known(self, cap_entries: Iterable[Mapping[str, Any]]) -> None:
        """Raise :class:`ConstraintUnknown` / :class:`ConstraintError` unless every constraint of every
        capability is understood and well-formed."""
        for entry in cap_entries:
            action = str(entry.get("action"))
            constraints = entry.get("constraints")
            if constraints is None:
                continue
            if not isinstance(constraints, Mapping):
                raise ConstraintError(f"capability {action!r}: constraints must be an object", action=action)
            for name, value in constraints.items():
                self._evaluator(name, action).validate(value, action=action)

    def counts_calls(self, constraints: Mapping[str, Any] | None) -> bool:
        """Whether any constraint needs the run's call count (so a budget must track the action)."""
        if not constraints:
            return False
        return any(getattr(self._evaluators.get(name), "counts_calls", False) for name in constraints)

    def evaluate(
        self, constraints: Mapping[str, Any] | None, call: Call, action: str, *, calls_made: int = 0
    ) -> None:
        """Raise :class:`ConstraintViolated` when ``call`` breaks any of ``constraints``."""
        if not constraints:
            return
        use = CallUse(action, call_arguments(call), calls_made)
        for name, value in constraints.items():
            evaluator = self._evaluator(name, action)
            evaluator.validate(value, action=action)
            evaluator.evaluate(value, use)

    def is_narrower(self, parent: Mapping[str, Any] | None, child: Mapping[str, Any] | None) -> bool:
        """Whether ``child`` constraints allow at most what ``parent`` constraints allow.

        Every parent constraint must be present in the child: narrower-or-equal by its evaluator, or —
        one no evaluator understands — repeated unchanged. The child may add constraints (an unknown
        one makes it unusable, never wider: :meth:`check_known` refuses it where it is used). A
        malformed known constraint on either side: ``False``.
        """
        sides: list[Any] = [parent or {}, child or {}]
        if not all(isinstance(side, Mapping) for side in sides):
            return False  # constraints come from decoded JSON: anything is possible
        parent, child = sides
        try:
            for side in sides:
                for name, value in side.items():
                    evaluator = self._evaluators.get(name)
                    if evaluator is not None:
                        evaluator.validate(value, action="delegation")
        except ConstraintError:
            return False
        for name, value in parent.items():
            if name not in child:
                return False
            evaluator = self._evaluators.get(name)
            if evaluator is None:
                if _canonical(child[name]) != _canonical(value):
                    return False
            elif not evaluator.is_narrower(value, child[name]):
                return False
        return True


#: The registry used wherever none is passed: ``args`` and ``max_calls``.
DEFAULT_REGISTRY = ConstraintRegistry([ArgumentConstraint(), MaxCalls()])


def check_known(cap_entries: Iterable[Mapping[str, Any]], registry: ConstraintRegistry | None = None) -> None:
    """:meth:`ConstraintRegistry.check_known` of ``registry`` (default :data:`DEFAULT_REGISTRY`)."""
    (registry or DEFAULT_REGISTRY).check_known(cap_entries)


def evaluate(
    constraints: Mapping[str, Any] | None,
    call: Call,
    action: str,
    *,
    calls_made: int = 0,
    registry: ConstraintRegistry | None = None,
) -> None:
    """:meth:`ConstraintRegistry.evaluate` of ``registry`` (default :data:`DEFAULT_REGISTRY`)."""
    (registry or DEFAULT_REGISTRY).evaluate(constraints, call, action, calls_made=calls_made)


def is_narrower(
    parent: Mapping[str, Any] | None,
    child: Mapping[str, Any] | None,
    registry: ConstraintRegistry | None = None,
) -> bool:
    """:meth:`ConstraintRegistry.is_narrower` of ``registry`` (default :data:`DEFAULT_REGISTRY`)."""
    return (registry or DEFAULT_REGISTRY).is_narrower(parent, child)


class BudgetedMandate(Protocol):
    """What :class:`CallBudget` reads of a mandate (an :class:`~mcpclient_auth.act.Mandate`)."""

    @property
    def jti(self) -> str: ...

    @property
    def exp(self) -> int: ...

    def constraints(self, action: str) -> dict[str, Any] | None: ...


class CallBudget:
    """Calls made per (mandate, action), for ``max_calls``; evaluation and counting are one atomic step.

        budget = CallBudget(max_runs=100_000)
        budget.charge_chain(mandate.chain, action, call)      # root first, the acting mandate last
        budget.charge(mandate.jti, action, mandate.constraints(action), call, expires=mandate.exp)

    A ``max_calls`` bounds the calls made *under* a mandate, its delegations included: otherwise an
    agent re-delegates its budgeted mandate to itself and every sub-mandate (a fresh ``jti``) brings
    a fresh budget. :meth:`charge_chain` therefore charges every link of the chain whose capability
    counts calls of the action — all or nothing, under one lock.

    Only actions with a counting constraint are tracked. Memory is bounded by ``max_runs`` slots (one
    per mandate with a budget): mandates that expired (beyond ``skew``) are forgotten first — their
    calls are refused anyway; when every slot holds a live mandate, a *new* one with a budget is
    refused (``budget_capacity``) rather than forgetting a live count, which would hand it a fresh
    budget (fail closed). One chain root (a user's mandate) holds at most ``max_runs_per_root`` slots,
    so one agent's delegations cannot fill the table and lock every other user out.

    The counts live in this object: one process, reset when it restarts. Several server workers each
    keep their own, so a mandate could make up to ``max_calls`` calls *per worker* (and again after a
    restart); share a store between workers for a strict bound (a follow-up, like the replay cache's
    shared store).
    """

    def __init__(
        self,
        *,
        max_runs: int = 100_000,
        max_runs_per_root: int | None = None,
        skew: float = 60,
        registry: ConstraintRegistry | None = None,
    ) -> None:
        if max_runs < 1:
            raise ConfigurationError("max_runs must be at least 1")
        per_root = max(min(max_runs, 64), max_runs // 100) if max_runs_per_root is None else max_runs_per_root
        if per_root < 1:
            raise ConfigurationError("max_runs_per_root must be at least 1")
        self.max_runs = max_runs
        self.max_runs_per_root = per_root
        self.skew = skew
        self.registry = registry or DEFAULT_REGISTRY
        # run -> (expires, calls by action, chain root)
        self._runs: OrderedDict[str, tuple[float, dict[str, int], str]] = OrderedDict()
        self._per_root: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._runs)

    def calls(self, run: str, action: str) -> int:
        """Calls of ``action`` charged to ``run`` (a mandate ``jti``) so far."""
        with self._lock:
            entry = self._runs.get(run)
            return entry[1].get(action, 0) if entry is not None else 0

    def check(self, run: str, action: str, constraints: Mapping[str, Any] | None, call: Call) -> None:
        """Evaluate ``constraints`` against the calls counted so far, counting nothing (a pre-check;
        :meth:`charge` decides)."""
        if not constraints:
            return
        self.registry.evaluate(constraints, call, action, calls_made=self.calls(run, action))

    def check_chain(self, chain: Sequence[BudgetedMandate], action: str, call: Call) -> None:
        """:meth:`check` for every link of ``chain`` (root first), counting nothing."""
        for link in chain:
            self.check(link.jti, action, link.constraints(action), call)

    def charge(
        self,
        run: str,
        action: str,
        constraints: Mapping[str, Any] | None,
        call: Call,
        *,
        expires: float,
        now: float | None = None,
    ) -> None:
        """Evaluate ``constraints`` for ``call`` and, when they count calls, count this one.

        Raises :class:`ConstraintViolated` (nothing counted) when the call breaks a constraint.
        """
        self._charge_links([(run, constraints, expires)], action, call, root=run, now=now)

    def charge_chain(
        self, chain: Sequence[BudgetedMandate], action: str, call: Call, *, now: float | None = None
    ) -> None:
        """Charge ``call`` to every link of ``chain`` (root first, the acting mandate last) whose
        constraints for ``action`` count calls; evaluated and counted all or nothing."""
        if not chain:
            raise ConfigurationError("charge_chain needs at least one mandate")
        links = [(link.jti, link.constraints(action), float(link.exp)) for link in chain]
        self._charge_links(links, action, call, root=chain[0].jti, now=now)

    def _charge_links(
        self,
        links: Sequence[tuple[str, Mapping[str, Any] | None, float]],
        action: str,
        call: Call,
        *,
        root: str,
        now: float | None,
    ) -> None:
        counted = [link for link in links if self.registry.counts_calls(link[1])]
        for _, constraints, _ in links:
            if not self.registry.counts_calls(constraints):
                self.registry.evaluate(constraints, call, action)
        if not counted:
            return
        now = time.time() if now is None else now
        with self._lock:
            # Evaluate every budget first, then count: a refusal by any link counts nothing anywhere.
            for run, constraints, _ in counted:
                entry = self._runs.get(run)
                made = entry[1].get(action, 0) if entry is not None else 0
                self.registry.evaluate(constraints, call, action, calls_made=made)
            new = [(run, expires) for run, _, expires in counted if run not in self._runs]
            if new:
                self._make_room(now, root, len(new))
            for run, expires in new:
                self._runs[run] = (expires, {}, root)
                self._per_root[root] = self._per_root.get(root, 0) + 1
            for run, _, _ in counted:
                counts = self._runs[run][1]
                counts[action] = counts.get(action, 0) + 1

    def _make_room(self, now: float, root: str, needed: int) -> None:
        def full() -> bool:
            return (
                len(self._runs) + needed > self.max_runs
                or self._per_root.get(root, 0) + needed > self.max_runs_per_root
            )

        if not full():
            return
        expired = [run for run, (expires, _, _) in self._runs.items() if expires + self.skew < now]
        for run in expired:
            _, _, owner = self._runs.pop(run)
            self._per_root[owner] -= 1
            if not self._per_root[owner]:
                del self._per_root[owner]
        if full():
            raise ConstraintViolated(
                "too many live mandates with call budgets to track another one; refused rather than "
                "forgetting a live mandate's count",
                code="budget_capacity",
            )
