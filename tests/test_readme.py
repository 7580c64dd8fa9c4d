"""The README's commands run as written (issue 34): every `$ ` line of its console blocks, in
order, in one fresh temporary folder that holds only a copy of examples/ and configs/, with the
`dgm` and `python` of this interpreter. Each must exit with status 0, and where the README shows
a command's output, the first word of each shown line must come out in that order (numbers and
timings may differ; "..." stands for lines left out). A block that is not run carries, on the
line before it, a comment `<!-- not run by tests/test_readme.py: REASON -->`; a file a command
reads must therefore be made by an earlier command of the README."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SKIP = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->", re.S)


def console_blocks(text: str) -> list[tuple[list[str], str | None]]:
    """The fenced blocks that hold `$ ` lines, each as its lines and the reason it is not run (or None)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("```"):
            j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
            body = lines[i + 1 : j]
            if any(line.startswith("$ ") for line in body):
                before = "\n".join(lines[max(0, i - 3) : i])
                skip = SKIP.search(before)
                blocks.append((body, skip.group(1) if skip else None))
            i = j + 1
        else:
            i += 1
    return blocks


def commands(body: list[str]) -> list[tuple[str, list[str]]]:
    """(command, its output lines as shown) for each `$ ` line of a block."""
    out: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif out:
            out[-1][1].append(line)
    return out


def first_word(line: str) -> str:
    return line.split()[0] if line.split() else ""


def shown_in_order(shown: list[str], printed: list[str]) -> str | None:
    """None if the first words of the shown lines occur in the printed lines in that order, else the first missing."""
    words = iter(first_word(line) for line in printed)
    for line in shown:
        if not line.strip() or line.strip() == "...":
            continue
        if first_word(line) not in words:  # advances the iterator: an in-order subsequence
            return line
    return None


def test_readme_blocks_are_parsed():
    blocks = console_blocks(README.read_text())
    run = [c for body, skip in blocks if skip is None for c, _ in commands(body)]
    assert "dgm demo" in run and "python examples/quickstart.py" in run
    for _body, skip in blocks:  # a skipped block says why
        assert skip is None or len(skip.strip()) > 10, skip


def test_readme_commands_run_as_written(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    for folder in ("examples", "configs"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("DGMKIT_DATA", None)  # nothing the README runs reads a data file from outside
    src = str(REPO / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    ran = 0
    for body, skip in console_blocks(README.read_text()):
        if skip is not None:
            continue
        for cmd, shown in commands(body):
            proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            printed = (proc.stdout + proc.stderr).splitlines()
            assert proc.returncode == 0, f"`{cmd}` exited with {proc.returncode}:\n" + "\n".join(printed)
            missing = shown_in_order(shown, printed)
            assert missing is None, f"`{cmd}`: the README shows {missing!r}, not printed:\n" + "\n".join(printed)
            ran += 1
    assert ran >= 3


TIMING = re.compile(r"\d+(\.\d+)?\s?(s|min|ms)\b")


def test_readme_outputs_are_the_transcripts():
    """A README block that quotes a command of docs/transcripts/ (made by docs/transcripts.py on one
    machine) shows that transcript's lines, in its order, but for timings and lines left out: a
    number changed by a later transcript is changed in the README too. Every block that is run and
    shows output quotes one."""
    transcripts = [p.read_text().splitlines() for p in sorted((REPO / "docs" / "transcripts").glob("*.txt"))]
    quoted = 0
    for body, skip in console_blocks(README.read_text()):
        first = next(line for line in body if line.startswith("$ "))
        source = next((t for t in transcripts if first in t), None)
        if source is None:
            shown = [line for line in body if line.strip() and not line.startswith("$ ")]
            assert skip is not None or not shown, f"the README shows output of {first!r}, which no transcript holds"
            continue
        lines = iter(TIMING.sub("T", line).rstrip() for line in source[source.index(first) :])
        for line in body:
            if line.strip() and line.strip() != "...":
                assert TIMING.sub("T", line).rstrip() in lines, f"README shows {line!r}, not in the transcript of {first!r}"
        quoted += 1
    assert quoted >= 4


def test_the_bits_back_rates_in_the_compression_page_s_prose_are_its_transcript_s():
    """docs/uses/compression.md quotes the payload of each bits-back run, its ratio to the
    -ELBO and the first file's rate; a regeneration of the transcript moved them while the prose
    kept the old numbers."""
    import re

    docs = REPO / "docs"
    runs = re.findall(
        r"compressed .*?: ([\d.]+) bits/dim \(the model's -ELBO, one draw a datapoint: ([\d.]+) bits/dim; "
        r"payload ([\d.]+)[,)]",
        (docs / "transcripts" / "compress-vae.txt").read_text(),
    )
    assert len(runs) == 3
    prose = " ".join((docs / "uses" / "compression.md").read_text().split())
    for _, elbo, payload in runs:
        ratio = float(payload) / float(elbo)
        assert re.search(rf"{float(payload):.3f} bits/dim,( is)? {ratio:.3f} times", prose), (payload, elbo)
        assert f"({float(elbo):.3f})" in prose or f"({float(elbo):.3f} bits/dim;" in prose, elbo
    assert f"take the whole file to {float(runs[0][0]):.3f}" in prose


def test_the_compression_page_s_header_and_nll_are_its_transcripts_():
    """The prose around the two compression transcripts also quotes the categorical VAE's
    importance-sampled NLL, the header's bytes of its bits-back file (the file less the payload)
    and, roughly, the ARM file's header."""
    import re

    docs = REPO / "docs"
    prose = " ".join((docs / "uses" / "compression.md").read_text().split())
    vae = (docs / "transcripts" / "compress-vae.txt").read_text()
    nll = re.search(r"^bits/dim\s+([\d.]+)$", vae, re.M)
    assert nll is not None
    assert f"importance-sampled NLL is {float(nll.group(1)):.3f})" in prose, nll.group(1)
    pattern = r"compressed (\d+) images \((\d+) pixels\) to (\d+) bytes: [\d.]+ bits/dim \(.*?payload ([\d.]+)[,)]"
    pixels, size, payload = map(float, re.search(pattern, vae).group(2, 3, 4))  # the first bits-back file
    assert f"The header's {round(size - payload * pixels / 8)} bytes take the whole file" in prose
    arm = re.search(pattern, (docs / "transcripts" / "compress.txt").read_text())
    pixels, size, payload = map(float, arm.group(2, 3, 4))
    assert f"The header costs about {round(size - payload * pixels / 8, -2):.0f} bytes" in prose


def test_the_family_table_s_rows_that_name_a_transcript_give_its_nll():
    """docs/families/index.md's table of quick runs says that its rows naming a transcript of
    docs/transcripts/ give that transcript's number: the NLL row of its last `dgm eval`, to the
    row's decimals, with the same k or kind of estimate."""
    import re

    rows = [
        line
        for line in (REPO / "docs" / "families" / "index.md").read_text().splitlines()
        if re.search(r"`docs/transcripts/[\w-]+\.txt`", line)
    ]
    assert len(rows) >= 2
    for row in rows:
        name = re.search(r"`docs/transcripts/([\w-]+\.txt)`", row).group(1)
        value, what = re.search(r"\| ([\d.]+) \(([^)]*)\)[^|]*\|$", row).groups()
        nlls = re.findall(r"^NLL \(([^)]*)\)\s+([\d.]+) \+- ", (REPO / "docs" / "transcripts" / name).read_text(), re.M)
        assert nlls, name
        estimate, nll = nlls[-1]
        decimals = len(value.split(".")[1])
        assert value == f"{float(nll):.{decimals}f}", (name, value, nll)
        assert what == estimate, (name, what, estimate)


def test_the_semi_supervised_page_s_error_rates_are_its_transcript_s_and_recorded_run_s():
    """docs/uses/semi-supervised.md compares the M1+M2 runs of its transcript (test error of the
    means and of the draws, the M1 units kept) with the recorded M2 run shown above them, which
    the M2 page quotes too."""
    import re

    docs = REPO / "docs"
    page = (docs / "uses" / "semi-supervised.md").read_text()
    prose = " ".join(page.split())
    m1m2 = (docs / "transcripts" / "m1m2.txt").read_text()
    means, draws = (float(e) for e in re.findall(r"^accuracy\s+[\d.]+\s+\(([\d.]+)% error", m1m2, re.M))
    m2 = re.search(r"^accuracy\s+([\d.]+)\s+\(([\d.]+)% error", page, re.M)  # the recorded 100-epoch M2 run
    assert m2 is not None
    assert f"({means:.0f}% against {float(m2.group(2)):.0f}% test error with 50 labels" in prose, (means, m2.group(2))
    units = re.search(r"^\[([\d, ]*)\]$", m1m2, re.M).group(1).split(",")
    assert f"all {len(units)} units of this M1 are active, and it does no better here ({draws:.0f}%)" in prose
    nll = re.search(r"^NLL \(k=(\d+)\)\s+([\d.]+) \+- ([\d.]+) nats", page, re.M).groups()
    m2_page = " ".join((docs / "families" / "m2.md").read_text().split())
    assert f"test accuracy {m2.group(1)}, NLL {nll[1]} +- {nll[2]} nats (k = {nll[0]})" in m2_page
