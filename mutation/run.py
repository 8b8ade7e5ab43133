"""Mutation testing of the core modules with mutmut; prints the surviving mutants per module.

    python mutation/run.py [--modules stats,extract] [--jobs 2]

Each module of ``mutation/modules.toml`` is mutated in a scratch copy of the repository
(``.mutants/<name>/``), so the modules run independently and the working tree is never touched.
mutmut imports the mutated copy (it puts ``mutants/src`` first on ``sys.path``); ``PYTHONPATH``
points at it too, so a server a test starts in a subprocess runs the mutant as well. For each
mutant mutmut runs only the module's tests that reach the mutated function.

A mutant whose tests run past ``TIMEOUT_FACTOR`` times their time on the unmutated code (plus
``TIMEOUT_SLACK`` seconds) is stopped and counted as caught ("timed out"), so a mutant that makes
the tests hang costs minutes, not the rest of the run.

A surviving mutant listed in ``mutation/equivalent.toml`` (with the reason it cannot change
behaviour) is reported apart. The exit status is 1 when any other mutant survives or a module
could not be run, so a release check can rely on it.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES_FILE = ROOT / "mutation" / "modules.toml"
EQUIVALENT_FILE = ROOT / "mutation" / "equivalent.toml"
SCRATCH = ROOT / ".mutants"
RESULT_LINE = re.compile(r"^\s+(?P<name>\S+): (?P<status>.+)$")
# Each mutant's tests get TIMEOUT_FACTOR times what they took on the unmutated code, plus TIMEOUT_SLACK
# seconds, before mutmut stops them (SIGXCPU, wall clock) and reports the mutant as "timeout": caught,
# since a mutant that makes the tests hang would hang a user's job. mutmut's default factor (15) gave a
# mutant of the runner, whose tests take about 20 s, a quarter of an hour. The slack keeps a busy
# machine from passing a slow but correct run off as a timeout; timed-out mutants are listed by name.
TIMEOUT_FACTOR = 4
TIMEOUT_SLACK = 20


@dataclass
class Module:
    name: str
    path: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)  # only these are mutated; empty: the whole module


@dataclass
class Outcome:
    module: Module
    statuses: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    failure: str | None = None


def load_modules() -> list[Module]:
    table = tomllib.loads(MODULES_FILE.read_text())
    return [
        Module(name, entry["path"], list(entry["tests"]), list(entry.get("functions", [])))
        for name, entry in table.items()
    ]


def load_equivalent() -> dict[str, str]:
    """Mutant name -> why it is equivalent (it cannot change what a user sees)."""
    if not EQUIVALENT_FILE.exists():
        return {}
    table = tomllib.loads(EQUIVALENT_FILE.read_text())
    return {name: str(reason) for name, reason in table.get("equivalent", {}).items()}


def select(modules: list[Module], wanted: str) -> list[Module]:
    if not wanted.strip():
        return modules
    names = [w.strip() for w in wanted.split(",") if w.strip()]
    known = {m.name: m for m in modules}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


def mutmut_config(module: Module) -> str:
    """The ``[tool.mutmut]`` section of the scratch copy's pyproject.toml, for one module."""
    tests = ", ".join(json.dumps(t) for t in module.tests)
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["{module.path}"]\n'
        f"pytest_add_cli_args_test_selection = [{tests}]\n"
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
        "use_git_change_detection = false\n"
        f"timeout_multiplier = {TIMEOUT_FACTOR}\n"
        f"timeout_constant = {TIMEOUT_SLACK}\n"
    )


def fence_other_functions(path: Path, keep: list[str]) -> None:
    """Wrap every function not in ``keep`` (nor holding one that is) in mutmut's no-mutate pragmas.

    Done on the scratch copy only; a ``pass`` after each closing pragma keeps it inside the block.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]

    def holds_kept(node: ast.AST) -> bool:
        return any(
            isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name in keep for n in ast.walk(node)
        )

    fenced = [n for n in functions if not holds_kept(n)]
    outermost = [
        n for n in fenced if not any(o is not n and o in fenced and n in ast.walk(o) for o in fenced)
    ]
    for node in sorted(outermost, key=lambda n: n.lineno, reverse=True):
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        indent = " " * node.col_offset
        lines[node.end_lineno : node.end_lineno] = [f"{indent}# pragma: no mutate end", f"{indent}pass"]
        lines[first:first] = [f"{indent}# pragma: no mutate start"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def prepare(module: Module) -> None:
    """A fresh scratch copy of the repository's sources and tests with mutmut set up for ``module``."""
    work = SCRATCH / module.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("src", "tests"):
        shutil.copytree(ROOT / folder, work / folder, ignore=ignore)
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + mutmut_config(module))
    if module.functions:
        fence_other_functions(work / module.path, module.functions)
    shared = (ROOT / ".." / "shared").resolve()
    if shared.is_dir():  # the tests find benchmark data as ../shared from the copied repository root
        (work / "shared").symlink_to(shared)


def run_module(module: Module, jobs: int, *, report_only: bool = False) -> Outcome:
    """Mutate ``module`` in a fresh scratch copy (or, with ``report_only``, read the last run's results)."""
    outcome = Outcome(module)
    if not (ROOT / module.path).is_file():
        outcome.failure = f"{module.path} does not exist; update mutation/modules.toml"
        return outcome
    work = SCRATCH / module.name
    mutated_src = work / "mutants" / "src"
    env = {**os.environ, "PYTHONPATH": str(mutated_src)}
    if report_only:
        if not mutated_src.is_dir():
            outcome.failure = "no earlier run to report; run without --report-only"
            return outcome
    else:
        prepare(module)
        # Made now: a PYTHONPATH entry missing at start-up is cached as "nothing here" for good.
        mutated_src.mkdir(parents=True)
        started = time.monotonic()
        log = work / "mutmut.log"
        with log.open("w") as out:
            ran = subprocess.run(
                [sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)],
                cwd=work,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        outcome.seconds = time.monotonic() - started
        if ran.returncode != 0:
            outcome.failure = f"mutmut exited with {ran.returncode}; see {log.relative_to(ROOT)}"
            return outcome
    listed = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    for line in listed.stdout.splitlines():
        match = RESULT_LINE.match(line)
        if match:
            outcome.statuses[match["name"]] = match["status"]
    return outcome


def function_sources(path: Path) -> dict[str, str]:
    """Every function of a mutated file by name (mutmut writes each mutant as its own function)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()  # once: ast.get_source_segment splits the whole file on every call
    return {
        node.name: "\n".join(lines[node.lineno - 1 : node.end_lineno])
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def diff_of(sources: dict[str, str], mutant: str) -> str:
    """The lines a mutant changed, as ``-``/``+`` lines."""
    name = mutant.rsplit(".", 1)[-1]
    original = sources.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "").splitlines()[1:]
    changed = sources.get(name, "").splitlines()[1:]  # without the def line, which names the mutant
    lines = difflib.unified_diff(original, changed, lineterm="", n=0)
    return "\n".join(line for line in lines if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def report(outcome: Outcome, equivalent: dict[str, str]) -> bool:
    """Print one module's figures and survivors; True when nothing but listed equivalents survived."""
    module = outcome.module
    if outcome.failure:
        print(f"\n== {module.name} ({module.path}): NOT RUN: {outcome.failure}")
        return False
    counts = Counter(outcome.statuses.values())
    survived = sorted(n for n, s in outcome.statuses.items() if s == "survived")
    real = [n for n in survived if n not in equivalent]
    known = [n for n in survived if n in equivalent]
    # A mutant that made its tests run past mutmut's time limit was caught (the tests would hang).
    timed_out = sorted(n for n, s in outcome.statuses.items() if s == "timeout")
    unreached = sorted(n for n, s in outcome.statuses.items() if s in ("no tests", "suspicious"))
    print(
        f"\n== {module.name} ({module.path}): {len(outcome.statuses)} mutants, {counts['killed']} killed, "
        f"{len(timed_out)} timed out, {len(real)} survived, {len(known)} equivalent, "
        f"{len(unreached)} not reached by a test ({outcome.seconds:.0f} s)"
    )
    mutated = SCRATCH / module.name / "mutants" / module.path
    sources = function_sources(mutated) if real and mutated.is_file() else {}
    for name in real:
        print(f"  SURVIVED {name}")
        for line in diff_of(sources, name).splitlines():
            print(f"      {line}")
    for name in known:
        print(f"  equivalent {name}: {equivalent[name]}")
    for name in timed_out:
        print(f"  timed out (caught) {name}")
    for name in unreached:
        print(f"  {outcome.statuses[name].upper()} {name}")
    killed_but_listed = [n for n, s in outcome.statuses.items() if n in equivalent and s != "survived"]
    for name in killed_but_listed:
        print(f"  note: {name} is listed as equivalent but was {outcome.statuses[name]}; remove it")
    return not real and not unreached


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--modules", default="", help="comma-separated names from mutation/modules.toml")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument(
        "--report-only", action="store_true", help="print the last run's results without running again"
    )
    args = parser.parse_args()
    modules = select(load_modules(), args.modules)
    equivalent = load_equivalent()
    started = time.monotonic()
    clean = True
    for module in modules:
        print(f"mutating {module.name} ({module.path}) ...", flush=True)
        clean = report(run_module(module, args.jobs, report_only=args.report_only), equivalent) and clean
        sys.stdout.flush()
    verdict = "clean" if clean else "NOT clean"
    print(f"\n{len(modules)} module(s) in {time.monotonic() - started:.0f} s: {verdict}")
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
