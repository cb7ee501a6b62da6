"""The fixture corpus: configs in the styles seen in the wild, each with its exact findings.

tests/fixtures/lint_corpus/<style>/expected.txt names the files linted together (one
launch) and every finding as `FILE:LINE:COL: severity[code] key`. A finding missing
from the list is a false alarm; a listed one not found is a missed problem.
"""

from pathlib import Path

import pytest
from click.testing import CliRunner

from kohyagen.cli import main
from kohyagen.config.lint import lint_files

CORPUS = Path(__file__).parent / "fixtures" / "lint_corpus"
STYLES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.txt").is_file())


def _expected(style: str) -> tuple[list[str], list[str]]:
    lines = (CORPUS / style / "expected.txt").read_text().splitlines()
    files = lines[0].removeprefix("# files:").split()
    return files, [line for line in lines[1:] if line.strip()]


def test_corpus_covers_the_styles_of_the_issue():
    assert set(STYLES) >= {"gui_export", "notebook_pair", "lora_scripts", "llm_sdxl",
                           "illustrious", "noobai_vpred", "dataset_2023"}  # fmt: skip


@pytest.mark.parametrize("style", STYLES)
def test_corpus_findings_are_exact(style):
    folder = CORPUS / style
    files, expected = _expected(style)
    findings = lint_files(files, cwd=folder)
    got = [
        f"{Path(f.file).relative_to(folder)}:{f.line}:{f.column}: {f.severity.value}[{f.code}] "
        f"{f.key}"
        for f in sorted(findings, key=lambda f: (f.file, f.line or 0, f.column or 0, f.code))
    ]
    assert got == expected


@pytest.mark.parametrize("style", STYLES)
def test_corpus_text_output_is_one_line_per_finding(style, monkeypatch):
    folder = CORPUS / style
    files, expected = _expected(style)
    monkeypatch.chdir(folder)
    result = CliRunner().invoke(main, ["lint", *files])
    lines = result.output.splitlines()
    errors = sum("error[" in line for line in expected)
    assert result.exit_code == (1 if errors else 0)
    # every expected finding is one whole line: place, severity, code, key, message, fix
    for want in expected:
        place, _, rest = want.partition(": ")
        hits = [ln for ln in lines if ln.startswith(place + ": " + rest + ":")]
        assert len(hits) >= 1, (want, result.output)
        assert all("(fix: " in hit for hit in hits)
    assert lines[-2].startswith(f"{errors} error(s)")
    assert lines[-1].startswith("checked against")
