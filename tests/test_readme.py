"""The README's two fresh-machine commands and CI stay in step."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash") + 1
    return lines[start : lines.index("```", start)]


def test_readme_starts_with_the_two_fresh_machine_commands():
    install_and_demo, install_and_test = readme_commands()
    assert install_and_demo.endswith("hpsearch demo")
    assert "pytest" in install_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


@pytest.mark.slow
def test_readme_first_python_examples_run():
    """The first example uses the class; the second, run_search, the same search."""
    import re


    from hpsearch import GridSearchCV

    text = (ROOT / "README.md").read_text()
    first, second = re.findall(r"```python\n(.*?)```", text, re.S)[:2]
    namespace: dict = {}
    exec(compile(first.replace("workers=4", "workers=2"), "README.md", "exec"), namespace)
    search = namespace["search"]
    assert isinstance(search, GridSearchCV)
    assert search.best_params_ == {"C": 1, "gamma": 0.001}
    assert search.best_score_ == pytest.approx(0.9722, abs=1e-4)
    exec(compile(second.replace("workers=4", "workers=2"), "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.best_params_ == search.best_params_ and result.best_score_ == search.best_score_
