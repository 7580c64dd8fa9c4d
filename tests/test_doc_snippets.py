"""The Python written out in the docs runs as printed: every fenced ``python`` block of README.md
and docs/ that is not an included example file (those run in tests/test_examples.py); the
dgmkit names that the prose mentions exist, and the calls it writes out fit their signatures.

A block runs in a fresh folder with only the substitutions listed here (each must still match
the text, so a changed block is seen), and what it computes is checked. A block that is not run
carries, on a line before it, ``<!-- not run by tests/test_doc_snippets.py: REASON -->``."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"<!-- not run by tests/test_doc_snippets\.py: (.+?) -->", re.S)
INCLUDE = re.compile(r'^--8<-- "[^"]+"$')


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """(line, code, reason it is not run or None) of each fenced python block that is not only an include."""
    lines, out, i = page.read_text(encoding="utf-8").splitlines(), [], 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == "```")
            body = lines[i + 1 : j]
            if not all(INCLUDE.match(line.strip()) or not line.strip() for line in body):
                skip = SKIP.search("\n".join(lines[max(0, i - 3) : i]))
                out.append((i + 1, "\n".join(body) + "\n", skip.group(1) if skip else None))
            i = j + 1
        else:
            i += 1
    return out


PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BLOCKS = {f"{p.relative_to(REPO)}:{line}": (code, skip) for p in PAGES for line, code, skip in python_blocks(p)}


def _block(page: str) -> str:
    (code,) = [code for key, (code, _) in BLOCKS.items() if key.startswith(page + ":")]
    return code


def _substituted(code: str, subs: dict[str, str]) -> str:
    for old, new in subs.items():
        assert code.count(old) == 1, f"the block no longer holds {old!r} once: update this test with it"
        code = code.replace(old, new)
    return code


def _run(code: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> str:
    script = cwd / "snippet.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_every_python_block_is_run_here_or_says_why_not():
    tested = {"README.md", "docs/uses/semi-supervised.md", "docs/uses/ood.md", "docs/families/hvae.md"}
    assert BLOCKS, "no python block found: the parser is broken"
    for key, (code, skip) in BLOCKS.items():
        compile(code, key, "exec")  # every block is Python, run or not
        page = key.rsplit(":", 1)[0]
        assert page in tested or (skip is not None and len(skip.strip()) > 10), f"{key}: not run and no reason given"


def test_the_readme_block_is_the_quickstart_example():
    example = (REPO / "examples" / "quickstart.py").read_text(encoding="utf-8")
    body = example.split('"""', 2)[2].lstrip("\n")  # the example less its docstring
    assert _block("README.md") == body  # the example runs in tests/test_examples.py


def test_the_semi_supervised_block_trains_m2_and_predicts(tmp_path):
    code = _substituted(_block("docs/uses/semi-supervised.md"), {"epochs=100": "epochs=3"})
    code += "assert 0.0 <= float(accuracy) <= 1.0\nprint(f'accuracy {float(accuracy):.4f}')\n"
    out = _run(code, tmp_path)
    assert float(out.split()[-1]) > 0.1 + 0.05  # above chance (10 classes) after 3 epochs with 50 labels


def test_the_hvae_block_builds_the_model_from_parts_and_prints_what_it_says(tmp_path):
    out = _run(_block("docs/families/hvae.md"), tmp_path)
    assert out.strip() == "(5,) 12"


@pytest.mark.slow
def test_the_ood_block_scores_fashion_against_mnist(tmp_path, data_dir):
    data = data_dir
    if not (data / "mnist").is_dir():
        pytest.skip(f"MNIST not found in {data}")
    env = dict(os.environ, DGMKIT_DATA=str(data))
    base = [sys.executable, "-m", "dgmkit.cli.main", "train", "--dataset", "fashion-mnist", "--model", "arm", "--arm",
            "pixelcnn", "--likelihood", "logistic", "--channels", "4", "--arm-layers", "2", "--epochs", "1",
            "--batch-size", "256", "--time-budget", "5", "--quiet"]  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    for extra in ([], ["--mutation-rate", "0.2"]):
        out = "runs/fashion" + ("-background" if extra else "")
        proc = subprocess.run([*base, *extra, "--out", out], cwd=tmp_path, env=env, capture_output=True, text=True)
        if proc.returncode != 0 and "fashion-mnist" in proc.stderr and "not found" in proc.stderr:
            pytest.skip("Fashion-MNIST not installed")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    out = _run(_block("docs/uses/ood.md"), tmp_path, env)
    scores = eval(out.strip().splitlines()[-1], {})  # the printed {name: AUROC}
    assert set(scores) == {"nll", "likelihood_ratio", "complexity"}
    assert all(0.0 <= v <= 1.0 for v in scores.values()), scores


_MISSING = object()


def _resolve(name: str) -> object:
    """The object a dotted dgmkit name means: the longest prefix that imports, then attributes (or _MISSING)."""
    import importlib

    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
            break
        except ImportError:
            continue
    for attr in parts[i:]:
        obj = getattr(obj, attr, _MISSING)
    return obj


def test_every_dgmkit_name_the_docs_mention_exists():
    named = {m.group(0) for p in PAGES for m in re.finditer(r"\bdgmkit(?:\.[A-Za-z_]\w*)+", p.read_text(encoding="utf-8"))}
    assert len(named) > 20, "the docs name dgmkit's parts: the pattern is broken"
    missing = [name for name in sorted(named) if _resolve(name) is _MISSING]
    assert not missing, f"the docs name parts that do not exist: {missing}"


def _public_names() -> dict[str, object]:
    """Each name in some dgmkit module's __all__ that means one object everywhere it is exported."""
    import importlib
    import pkgutil

    import dgmkit

    found: dict[str, list] = {}
    for info in pkgutil.walk_packages(dgmkit.__path__, "dgmkit."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", []):
            found.setdefault(name, []).append(getattr(module, name))
    return {name: objs[0] for name, objs in found.items() if all(o is objs[0] for o in objs)}


def test_the_calls_written_in_the_docs_prose_fit_the_signatures():
    """`dgmkit.reconstruct(run, 16, split="test", seed=0)` in a sentence: a keyword renamed or an
    argument dropped since shows here. ``...`` in a call stands for arguments left out."""
    import ast
    import inspect

    public, checked, wrong = _public_names(), 0, []
    for page in PAGES:
        prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for span in {m.group(1) for m in re.finditer(r"`([^`\n]*\([^`\n]*)`", prose)}:
            try:
                tree = ast.parse(span)
            except SyntaxError:
                continue  # a shell line or a formula, not Python
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                name = ast.unparse(call.func)
                if name.startswith("dgmkit."):
                    obj = _resolve(name)  # one that does not exist fails the test above
                elif name in public and callable(public[name]):
                    obj = public[name]
                else:
                    continue
                starred = any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords)
                if not callable(obj) or starred:
                    continue
                elided = any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in call.args)
                bind = inspect.signature(obj).bind_partial if elided else inspect.signature(obj).bind
                try:
                    bind(*call.args, **{k.arg: k.value for k in call.keywords if k.arg})
                    checked += 1
                except TypeError as e:
                    wrong.append(f"{page.relative_to(REPO)}: `{span}`: {e}")
    assert checked >= 10, f"only {checked} calls checked: the parser is broken"
    assert not wrong, "\n".join(wrong)


OTHER_TOOLS_FLAGS = {  # flags the docs give to other programs: torchrun, pip, venv, mkdocs, pytest, tensorboard, tar
    "--nnodes", "--nproc-per-node", "--node-rank", "--rdzv-backend", "--rdzv-endpoint", "--standalone",
    "--system-site-packages", "--strict", "--run-slow", "--logdir", "--exclude",
    "--latent",  # dgm 0.1's, named where its run records are read (families/dvae.py)
    "--epoch", "--lables", "--verbos",  # the misspelt flags that docs/cli.md and cli/main.py show refused
}  # fmt: skip


def test_every_flag_the_docs_and_configs_name_exists():
    """A `--flag` in README.md, docs/, a config's comment or dgmkit's own text (help, errors,
    hints) is one of dgm's (any command), of a benchmark script's, or of another program's listed
    above: a renamed flag shows here."""
    import argparse

    from dgmkit.cli.main import build_parser

    known = set(OTHER_TOOLS_FLAGS)

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            known.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)

    walk(build_parser())
    for script in (REPO / "benchmarks").glob("*.py"):
        known.update(re.findall(r'add_argument\(\s*"(--[a-z0-9-]+)"', script.read_text(encoding="utf-8")))
    assert {"--epochs", "--iw-samples", "--nproc", "--models"} <= known, "the flags were not collected"
    unknown = sorted(
        f"{page.relative_to(REPO)}: {m.group(0)}"
        for page in [*PAGES, *sorted((REPO / "configs").rglob("*.toml")), *sorted((REPO / "src").rglob("*.py"))]
        for m in re.finditer(r"(?<![\w-])--[a-z][a-z0-9-]*", page.read_text(encoding="utf-8"))
        if m.group(0) not in known
    )
    assert not unknown, "flags that nothing takes:\n" + "\n".join(unknown)


NOT_A_VALUE = {  # "--flag word" where the word is prose or another program's, not a value given to dgm
    ("--device", "says"), ("--split", "of"), ("--baselines", "score"), ("--model", "cls.name"),
    ("--model", "iwae"),  # the IWAE authors' own script's flag, cited in configs/iwae-2layer-k50.toml
}  # fmt: skip


def test_every_named_value_of_a_choice_flag_is_one_it_takes():
    """`--flow maf`, `--objective rws`: where the docs, the transcripts, the configs, the examples,
    the benchmarks or dgmkit's own messages give a flag of named choices a value, it is one of its
    choices (for some family: `--objective` takes other names for each)."""
    import argparse

    from dgmkit.cli.main import build_parser
    from dgmkit.families.registry import FAMILIES

    choices: dict[str, set[str]] = {}

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
                continue
            names = set(map(str, action.choices or ()))
            if not names and isinstance(action.metavar, str) and action.metavar.startswith("{"):
                names = set(action.metavar[1:-1].split(","))  # a setting's choices, checked by the config
            for option in action.option_strings if names else ():
                choices.setdefault(option, set()).update(names)

    walk(build_parser())
    for family in FAMILIES:
        walk(build_parser(["train", "--model", family]))
    assert {"maf", "glow"} <= choices.get("--flow", set()) and "rws" in choices.get("--objective", set())
    files = [*PAGES, *(REPO / "docs" / "transcripts").glob("*.txt")]
    files += [p for folder in ("configs", "examples", "benchmarks", "src") for p in sorted((REPO / folder).rglob("*.*"))]
    wrong, checked = [], 0
    for path in (p for p in files if p.suffix in {".md", ".txt", ".toml", ".py"}):
        for m in re.finditer(r"(?<![\w-])(--[a-z][a-z0-9-]*)[ =]([a-z0-9_][\w.-]*)", path.read_text(encoding="utf-8")):
            flag, value = m.groups()
            if flag in choices and (flag, value) not in NOT_A_VALUE:
                checked += 1
                if value not in choices[flag]:
                    wrong.append(f"{path.relative_to(REPO)}: {flag} {value}")
    assert checked > 100, f"only {checked} values checked: the pattern is broken"
    assert not wrong, "values that the flag does not take:\n" + "\n".join(wrong)
