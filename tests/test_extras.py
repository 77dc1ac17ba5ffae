"""Every extra installs into a `pip check`-clean environment, or the README says exactly why not.

Nothing is installed or downloaded here. What is checked is `pip check`'s rule (every installed
distribution's requirements are installed, in a version that satisfies them), applied to the
closure of each extra of pyproject.toml as the packages installed in this environment declare it
(importlib.metadata), plus the packages the README installs with ``--no-deps``. The problems found
must be exactly the lines the README lists (none for every extra itself). An extra whose own
packages are not all installed here cannot be followed and is reported as skipped.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
from packaging.requirements import Requirement  # noqa: E402 - after the skip above
from packaging.utils import canonicalize_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
EXTRAS = PROJECT["optional-dependencies"]


def readme_pip_check_lines() -> set[str]:
    """The lines of the README's fenced block under its ``pip-check`` marker."""
    match = re.search(r"<!-- pip-check:[^>]*-->\s*```text\n(.*?)```", README, re.S)
    assert match, "README lost its pip-check block"
    return {line.strip() for line in match.group(1).splitlines() if line.strip()}


def no_deps_packages() -> list[str]:
    """What the README installs with ``pip install --no-deps`` (its eval line)."""
    match = re.search(r"pip install --no-deps ([a-z0-9_ .-]+?)`", README)
    assert match, "README lost its --no-deps install line"
    return match.group(1).split()


def pip_check_problems(roots: list[str]) -> tuple[set[str], list[str]]:
    """`pip check`'s complaints about the requirement closure of ``roots`` (requirement strings),
    as ``"NAME requires REQ, which is not installed."`` or ``"NAME has requirement REQ, but you
    have NAME2 VERSION."``; and the roots that are not installed here (not followed)."""
    problems: set[str] = set()
    absent: list[str] = []
    seen: set[str] = set()
    todo = [(Requirement(r), None) for r in roots]
    while todo:
        req, parent = todo.pop()
        try:
            dist = distribution(req.name)
        except PackageNotFoundError:
            if parent is None:
                absent.append(req.name)
            else:
                problems.add(f"{parent} requires {req.name}, which is not installed.")
            continue
        if parent is not None and not req.specifier.contains(dist.version, prereleases=True):
            problems.add(f"{parent} has requirement {req}, but you have {req.name} {dist.version}.")
        key = canonicalize_name(dist.metadata["Name"])
        wanted = {(key, e) for e in ("", *req.extras)}
        if wanted <= seen:
            continue
        seen |= wanted
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)
            ):
                todo.append((sub, key))
    return problems, absent


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_every_extra_is_pip_check_clean(extra):
    problems, absent = pip_check_problems([*PROJECT["dependencies"], *EXTRAS[extra]])
    if absent:
        pytest.skip(f"the {extra} extra is not installed here: {', '.join(sorted(absent))}")
    assert problems == set(), f"the {extra} extra: {sorted(problems)}"


def test_the_readme_names_every_pip_check_line_of_the_no_deps_packages():
    """The eval extra plus the README's --no-deps pair (DistillMOS): exactly the listed lines."""
    extra = [*PROJECT["dependencies"], *EXTRAS["eval"], *no_deps_packages()]
    problems, absent = pip_check_problems(extra)
    if absent:
        pytest.skip(f"not installed here: {', '.join(sorted(absent))}")
    assert no_deps_packages() == ["distillmos", "xls-r-sqa"]
    assert problems == readme_pip_check_lines()
