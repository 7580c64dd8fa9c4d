"""MkDocs hook: the benchmarks page includes benchmarks/RESULTS.md as it stands, with its links
to docs/ figures made relative to the page and its headings one level down."""

import re
from pathlib import Path

PLACEHOLDER = "<!-- benchmarks/RESULTS.md -->"


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    if PLACEHOLDER not in markdown:
        return markdown
    results = (Path(config["config_file_path"]).parent / "benchmarks" / "RESULTS.md").read_text()
    results = results.replace("](../docs/", "](")
    lines, fenced = [], False
    for line in results.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        lines.append("#" + line if not fenced and re.match(r"#+ ", line) else line)
    return markdown.replace(PLACEHOLDER, "\n".join(lines))
