"""errors: the hierarchy drawn in the module docstring is the hierarchy in the code (httpx's
``_exceptions.py`` tree), and every error class is exported once with a stable code."""

from __future__ import annotations

import re

from mcpclient_auth import errors

ROOT = errors.McpClientAuthError
CLASSES = {
    name: value for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, ROOT)
}
_LINE = re.compile(r"^(?P<indent> *)[*+-] (?P<name>\w+)(?: \(also (?P<also>[\w, ]+)\))?$")


def _tree() -> list[tuple[int, str, list[str]]]:
    assert errors.__doc__ is not None
    rows = []
    for line in errors.__doc__.splitlines():
        match = _LINE.match(line)
        if match:
            also = match["also"].split(", ") if match["also"] else []
            rows.append((len(match["indent"]), match["name"], also))
    return rows


def test_every_error_class_is_in_the_docstring_tree_once() -> None:
    names = [name for _, name, _ in _tree()]
    assert len(names) == len(set(names))
    assert set(names) == set(CLASSES)


def test_the_tree_shows_each_classs_bases() -> None:
    parents: list[tuple[int, str]] = []
    for indent, name, also in _tree():
        while parents and parents[-1][0] >= indent:
            parents.pop()
        cls = CLASSES[name]
        bases = [base.__name__ for base in cls.__bases__]
        if cls is ROOT:
            assert not parents
        else:
            assert parents, f"{name} is drawn as a root"
            assert bases[0] == parents[-1][1], f"{name} is drawn under {parents[-1][1]}, not {bases[0]}"
            assert bases[1:] == also, f"{name}: also {bases[1:]}"
        parents.append((indent, name))


def test_every_error_class_is_exported_with_its_own_code_attribute() -> None:
    assert set(errors.__all__) == set(CLASSES)
    for cls in CLASSES.values():
        assert isinstance(cls.code, str) and re.fullmatch(r"[a-z][a-z0-9_]*", cls.code), cls
