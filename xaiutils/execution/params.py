"""What a user passes: ``-p NAME VALUE`` values and YAML files, and the parameters of a notebook checked against
its cell tagged ``parameters`` (names, and types from the literal defaults or the preset) before anything runs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from xaiutils.execution.paths import find_notebook
from xaiutils.foundation.config import preset_names

NOTEBOOK_FORMAT = "py:percent"


def parse_value(text: str, name: str | None = None) -> Any:
    """Parse a ``-p NAME VALUE`` value as YAML (``3`` → int, ``0.5`` → float, ``[1, 2]`` → list, ``null``).
    Raises a one-line ``ValueError`` naming the parameter when ``text`` is not valid YAML."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        label = f"-p {name} " if name else ""
        raise ValueError(f"{label}{text!r} is not a valid YAML value ({problem}); write a number, a list like "
                         f"[1, 2], null, or quote text") from None
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(text.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as text; everyone means the number
    return value


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

def read_notebook(path: Path):
    """Read a py:percent notebook into an nbformat object (``.ipynb`` files are read as they are)."""
    import jupytext

    fmt = "ipynb" if path.suffix == ".ipynb" else NOTEBOOK_FORMAT
    return jupytext.read(path, fmt=fmt)


_NO_LITERAL = object()  # a parameter whose default is an expression, not a literal: its type is not checked


def notebook_parameter_defaults(notebook) -> dict[str, Any]:
    """``{name: default}`` of the cell tagged ``parameters``, in order; a default that is not a literal is
    recorded as an opaque marker. Raises if the notebook has no such cell."""
    import ast

    for cell in notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            tree = ast.parse(cell.source)
            defaults: dict[str, Any] = {}
            for node in tree.body:
                targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
                value = getattr(node, "value", None)
                try:
                    default = ast.literal_eval(value) if value is not None else _NO_LITERAL
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    default = _NO_LITERAL
                for target in targets:
                    if isinstance(target, ast.Name):
                        defaults[target.id] = default
            return defaults
    raise ValueError("notebook has no code cell tagged 'parameters'")


def notebook_parameters(notebook) -> list[str]:
    """Names assigned in the cell tagged ``parameters`` (raises if the notebook has no such cell)."""
    return list(notebook_parameter_defaults(notebook))


def _kind(value: Any) -> str | None:
    """The type class a parameter value is checked against."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Mapping):
        return "mapping"
    return None


_KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "text",
               "list": "a list like [1, 2]", "mapping": "a mapping like {a: 1}"}


def _fits(value: Any, expected: str) -> bool:
    got = _kind(value)
    if expected == "float":
        return got in ("int", "float")
    if expected == "list":
        return got == "list"
    return got == expected


def expected_parameter_types(notebook, preset: str) -> dict[str, tuple[str, Any, str]]:
    """``{name: (kind, example, where)}`` for the parameters whose type is known: from the parameter cell's
    literal default, else (a ``None`` default) from the value of that name in the preset, when every section of
    the preset that has the name agrees on its type."""
    from xaiutils.foundation.config import preset_as_dicts

    expected = {}
    for name, default in notebook_parameter_defaults(notebook).items():
        if default is _NO_LITERAL:
            continue
        if default is not None:
            kind = _kind(default)
            if kind is not None:
                expected[name] = (kind, default, "the notebook's default")
            continue
        sections = preset_as_dicts(preset).values() if preset in preset_names() else ()
        found = [section[name] for section in sections
                 if isinstance(section, Mapping) and name in section]
        kinds = {_kind(value) for value in found}
        if len(kinds) == 1 and None not in kinds:
            expected[name] = (kinds.pop(), found[0], f"the {preset} preset's value")
    return expected


def check_parameter_types(notebook, parameters: Mapping[str, Any], preset: str, label: str = "") -> None:
    """Refuse, before anything runs, a parameter whose type differs from its declared default's (or, for a
    ``None`` default, from the preset's value). ``None`` is always accepted (it means "the preset's value");
    an integer is accepted for a number; list elements are checked when the example's elements share one type."""
    expected = expected_parameter_types(notebook, preset)
    for name, value in parameters.items():
        if value is None or name not in expected:
            continue
        kind, example, where = expected[name]
        ok = _fits(value, kind)
        if ok and kind == "list" and len(example) > 0:
            element_kinds = {_kind(item) for item in example}
            if len(element_kinds) == 1 and None not in element_kinds:
                element = element_kinds.pop()
                ok = all(_fits(item, element) for item in value)
        if not ok:
            shown = json.dumps(list(example) if isinstance(example, tuple) else example, default=str)
            raise ValueError(
                f"parameter {name}{label} must be {_KIND_WORDS[kind]} ({where} is {shown}), got {value!r}; "
                f"pass e.g. -p {name} {shown}"
            )


def prepare_notebook(notebook, preset: str, parameters: Mapping[str, Any] | None, label: str = ""):
    """Find and read ``notebook`` and check ``parameters`` (names and types) against its parameter cell."""
    if preset not in preset_names():
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(preset_names())}")
    path = find_notebook(notebook)
    nb = read_notebook(path)
    valid = notebook_parameters(nb)
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for notebook {path.stem}; "
            f"valid parameters: {', '.join(valid)}"
        )
    for required in ("preset", "out_dir"):
        if required not in valid:
            raise ValueError(f"notebook {path.stem} has no {required!r} parameter; every notebook needs one")
    check_parameter_types(nb, parameters, preset, label=label or f" of notebook {path.stem}")
    return path, nb, parameters
