"""constraints (issue 12): a registry of evaluators; unknown constraints refused; budgets; narrowing."""

from __future__ import annotations

from typing import Any

import pytest

from mcpclient_auth.constraints import (
    DEFAULT_REGISTRY,
    CallBudget,
    CallUse,
    ConstraintRegistry,
    check_known,
    evaluate,
    is_narrower,
)
from mcpclient_auth.errors import (
    ConfigurationError,
    ConstraintError,
    ConstraintUnknown,
    ConstraintViolated,
    MandateDenied,
)
from mcpclient_auth.jsonrpc import Call

SALARY = "mcp.get_employee_salary"
ONLY_BOB = {"args": {"employee": {"one_of": ["bob"]}}}


def salary(employee: Any = None) -> Call:
    arguments = {} if employee is None else {"employee": employee}
    return Call("request", "tools/call", 1, "get_employee_salary", {"name": "x", "arguments": arguments})


def test_argument_constraint_allows_only_the_listed_values() -> None:
    evaluate(ONLY_BOB, salary("bob"), SALARY)
    for other in ("carol", "Bob", ["bob"], None):
        with pytest.raises(ConstraintViolated) as info:
            evaluate(ONLY_BOB, salary(other), SALARY)
        assert info.value.code == "constraint_violated"
        assert isinstance(info.value, MandateDenied)  # a denial like any other
    with pytest.raises(ConstraintViolated) as refused:
        evaluate(ONLY_BOB, salary("carol"), SALARY)
    assert "carol" not in str(refused.value)  # argument values may be personal data


def test_eq_compares_strict_json() -> None:
    constraints = {"args": {"limit": {"eq": 1}}}
    call = Call("request", "tools/call", 1, "t", {"name": "t", "arguments": {"limit": True}})
    with pytest.raises(ConstraintViolated):
        evaluate(constraints, call, "mcp.t")
    evaluate(constraints, Call("request", "tools/call", 1, "t", {"arguments": {"limit": 1}}), "mcp.t")


def test_resource_uri_is_the_argument_of_resources_read() -> None:
    constraints = {"args": {"uri": {"eq": "hr://handbook"}}}
    evaluate(
        constraints,
        Call("request", "resources/read", 1, None, {"uri": "hr://handbook"}),
        "mcp.rpc.resources.read",
    )
    with pytest.raises(ConstraintViolated):
        evaluate(constraints, Call("request", "resources/read", 1, None, {"uri": "hr://salaries/carol"}), "x")


def test_an_argument_constraint_on_a_call_without_arguments_is_violated() -> None:
    with pytest.raises(ConstraintViolated):
        evaluate(ONLY_BOB, Call("request", "completion/complete", 1, None, {}), "mcp.rpc.completion.complete")


@pytest.mark.parametrize(
    "constraints",
    [
        {"employee": "bob"},  # the flat shape: a constraint named "employee" nobody understands
        {"employee": "bob", "max_calls": 1},
        {"args": {"employee": {"prefix": "b"}}},  # an unknown operator is an unknown constraint too
        {"time_window": {"from": 9, "to": 17}},
    ],
)
def test_unknown_constraints_are_refused(constraints: dict[str, Any]) -> None:
    with pytest.raises(ConstraintUnknown) as info:
        check_known([{"action": SALARY, "constraints": constraints}])
    assert info.value.code == "constraint_unknown"


@pytest.mark.parametrize(
    "constraints",
    [
        {"max_calls": 0},
        {"max_calls": "1"},
        {"max_calls": True},
        {"args": {}},
        {"args": {"employee": "bob"}},
        {"args": {"employee": {"one_of": []}}},
        {"args": {"employee": {"eq": "a", "one_of": ["b"]}}},
    ],
)
def test_malformed_constraints_are_refused(constraints: dict[str, Any]) -> None:
    with pytest.raises(ConstraintError):
        check_known([{"action": SALARY, "constraints": constraints}])


def test_known_constraints_pass() -> None:
    check_known([{"action": "mcp.a"}, {"action": SALARY, "constraints": {**ONLY_BOB, "max_calls": 2}}])


def test_budget_counts_per_run_and_action_and_refuses_beyond_max_calls() -> None:
    budget = CallBudget()
    constraints = {**ONLY_BOB, "max_calls": 1}
    budget.charge("run-1", SALARY, constraints, salary("bob"), expires=2e9)
    with pytest.raises(ConstraintViolated) as info:
        budget.charge("run-1", SALARY, constraints, salary("bob"), expires=2e9)
    assert info.value.details["max_calls"] == 1
    budget.charge("run-2", SALARY, constraints, salary("bob"), expires=2e9)  # another run: its own budget
    # a call refused by its arguments is not counted
    with pytest.raises(ConstraintViolated):
        budget.charge("run-3", SALARY, constraints, salary("carol"), expires=2e9)
    assert budget.calls("run-3", SALARY) == 0
    budget.charge("run-3", SALARY, constraints, salary("bob"), expires=2e9)


def test_budget_memory_is_bounded_and_fails_closed_when_full_of_live_runs() -> None:
    budget = CallBudget(max_runs=2, skew=0)
    limit = {"max_calls": 5}
    budget.charge("a", SALARY, limit, salary("bob"), expires=100, now=50)
    budget.charge("b", SALARY, limit, salary("bob"), expires=1000, now=50)
    with pytest.raises(ConstraintViolated) as info:
        budget.charge("c", SALARY, limit, salary("bob"), expires=1000, now=60)
    assert info.value.code == "budget_capacity"
    assert budget.calls("a", SALARY) == 1  # a live run's count was not forgotten
    budget.charge("c", SALARY, limit, salary("bob"), expires=1000, now=200)  # "a" expired: room
    assert len(budget) == 2 and budget.calls("a", SALARY) == 0


def test_unconstrained_or_argument_only_calls_are_not_tracked() -> None:
    budget = CallBudget(max_runs=1)
    for run in ("a", "b", "c"):
        budget.charge(run, SALARY, ONLY_BOB, salary("bob"), expires=2e9)
        budget.charge(run, SALARY, None, salary("carol"), expires=2e9)
    assert len(budget) == 0


@pytest.mark.parametrize(
    ("parent", "child", "narrower"),
    [
        (None, None, True),
        (None, {"max_calls": 3}, True),  # adding a constraint narrows
        ({"max_calls": 3}, {"max_calls": 3}, True),
        ({"max_calls": 3}, {"max_calls": 1}, True),
        ({"max_calls": 3}, {"max_calls": 4}, False),
        ({"max_calls": 3}, None, False),  # dropping one widens
        ({"args": {"e": {"one_of": ["a", "b"]}}}, {"args": {"e": {"eq": "a"}}}, True),
        ({"args": {"e": {"eq": "a"}}}, {"args": {"e": {"one_of": ["a", "b"]}}}, False),
        ({"args": {"e": {"eq": "a"}}}, {"args": {"e": {"eq": "a"}, "f": {"eq": 1}}}, True),
        ({"args": {"e": {"eq": "a"}}}, {"args": {"f": {"eq": 1}}}, False),
        (None, {"unknown": 1}, True),  # unusable (check_known), not wider
        ({"unknown": 1}, {"unknown": 1}, True),  # repeated unchanged
        ({"unknown": 1}, {"unknown": 2}, False),
        ({"max_calls": 0}, {"max_calls": 0}, False),  # malformed
        (None, "not an object", False),
    ],
)
def test_is_narrower(parent: Any, child: Any, narrower: bool) -> None:
    assert is_narrower(parent, child) is narrower


def test_the_registry_takes_new_evaluators_once() -> None:
    class BusinessHours:
        name = "hours"
        counts_calls = False

        def validate(self, value: Any, *, action: str) -> None:
            if value != "9-17":
                raise ConstraintError("bad hours")

        def evaluate(self, value: Any, use: CallUse) -> None:
            raise ConstraintViolated("closed", action=use.action)

        def is_narrower(self, parent: Any, child: Any) -> bool:
            return bool(parent == child)

    registry = ConstraintRegistry([BusinessHours()])
    registry.check_known([{"action": "mcp.a", "constraints": {"hours": "9-17"}}])
    with pytest.raises(ConstraintUnknown):  # not in this registry
        registry.check_known([{"action": "mcp.a", "constraints": {"max_calls": 1}}])
    with pytest.raises(ConstraintViolated):
        registry.evaluate({"hours": "9-17"}, salary("bob"), "mcp.a")
    with pytest.raises(ConfigurationError):
        registry.register(BusinessHours())
    assert DEFAULT_REGISTRY.names() == ["args", "max_calls"]
