"""dag: the run frontier (DAG rule) and the offline check_dag."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpclient_auth.dag import MAX_PREDS, Frontier, check_dag


def test_first_tool_call_and_session_calls_point_at_the_mandate() -> None:
    f = Frontier("m")
    assert f.begin() == ["m"]
    assert f.session_pred() == ["m"]
    assert f.current() == []


def test_sequential_calls_form_a_chain() -> None:
    f = Frontier("m")
    preds = []
    for jti in ("a", "b", "c"):
        pred = f.begin()
        preds.append(pred)
        f.complete(jti, pred)
    assert preds == [["m"], ["a"], ["b"]]
    assert f.current() == ["c"]


def test_parallel_calls_share_a_parent_and_the_next_call_fans_in() -> None:
    f = Frontier("m")
    f.complete("a", f.begin())
    p1, p2, p3 = f.begin(), f.begin(), f.begin()
    assert p1 == p2 == p3 == ["a"]
    f.complete("x", p1)
    f.complete("y", p2)
    f.complete("z", p3)
    assert sorted(f.begin()) == ["x", "y", "z"]


def test_in_flight_calls_are_never_predecessors() -> None:
    f = Frontier("m")
    slow = f.begin()  # never completes before the next call begins
    fast = f.begin()
    f.complete("fast", fast)
    assert f.begin() == ["fast"]
    f.complete("slow", slow)  # slow does not descend from fast: both are in the frontier
    assert sorted(f.current()) == ["fast", "slow"]


def test_failed_calls_do_not_join() -> None:
    f = Frontier("m")
    f.begin()  # began, then failed: complete() is never called
    assert f.begin() == ["m"]


def test_pred_is_capped_oldest_first_and_nothing_is_lost() -> None:
    f = Frontier("m", max_preds=3)
    pred = f.begin()
    for i in range(5):
        f.complete(f"n{i}", pred)
    first = f.begin()
    assert first == ["n0", "n1", "n2"]
    f.complete("j", first)
    assert f.current() == ["n3", "n4", "j"]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        Frontier("")
    with pytest.raises(ValueError):
        Frontier("m", max_preds=MAX_PREDS + 1)


def test_frontier_is_thread_safe() -> None:
    f = Frontier("m")
    counter = itertools.count()

    def worker() -> None:
        for _ in range(200):
            n = next(counter)
            f.complete(f"t{n}", f.begin())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert 1 <= len(f.current()) <= 4


def test_check_dag_accepts_a_valid_dag() -> None:
    assert check_dag({"a": ["m"], "b": ["m"], "c": ["a", "b"]}, known_roots={"m"}) == []


def test_check_dag_reports_problems() -> None:
    problems = check_dag(
        {
            "a": ["m", "m"],
            "b": ["ghost"],
            "c": ["c"],
            "d": ["e"],
            "e": ["d"],
            "f": [f"x{i}" for i in range(101)],
        },
        known_roots={"m"},
    )
    kinds = {(jti, msg.split(" ")[0]) for jti, msg in problems}
    assert ("a", "duplicate") in kinds
    assert ("b", "unknown") in kinds
    assert ("c", "lists") in kinds
    assert ("d", "cycle") in kinds and ("e", "cycle") in kinds
    assert ("f", "101") in kinds


def test_check_dag_handles_long_chains_without_recursion() -> None:
    n = 50_000
    nodes = {f"n{i}": [f"n{i - 1}" if i else "m"] for i in range(n)}
    assert check_dag(nodes, known_roots={"m"}) == []
    nodes["n0"] = [f"n{n - 1}"]
    assert len([p for p in check_dag(nodes, known_roots={"m"}) if "cycle" in p[1]]) == n


def _reaches(nodes: dict[str, list[str]], start: str, goal: str) -> bool:
    seen, todo = set(), list(nodes.get(start, []))
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node in seen or node not in nodes:
            continue
        seen.add(node)
        todo.extend(nodes[node])
    return False


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from("abcdefg"), st.lists(st.sampled_from("abcdefgm"), max_size=3, unique=True), max_size=7
    )
)
def test_check_dag_cycles_match_a_brute_force_reference(nodes: dict[str, list[str]]) -> None:
    reported = {jti for jti, msg in check_dag(nodes, known_roots={"m"}) if msg.startswith("cycle")}
    expected = {
        jti for jti in nodes if any(p != jti and p in nodes and _reaches(nodes, p, jti) for p in nodes[jti])
    }
    assert reported == expected
