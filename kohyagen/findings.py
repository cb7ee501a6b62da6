"""Findings: one problem found in a dataset or a config, with where and how to fix it.

Shared by dataset checks and config lint so that every reporting command prints
and serialises problems the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum


# a str enum: findings serialise to JSON as plain strings
class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str  # stable identifier, e.g. "unknown-key", "truncated-image"
    message: str
    file: str | None = None
    key: str | None = None  # config key or caption tag, where relevant
    fix: str | None = None
    line: int | None = None  # 1-based line of the key in the file, where known
    column: int | None = None  # 1-based column of the key on that line

    def to_dict(self) -> dict:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data


def count_errors(findings: list[Finding]) -> int:
    return sum(1 for f in findings if f.severity is Severity.ERROR)


def sort_findings(findings: list[Finding]) -> list[Finding]:
    # errors first, then by place: the same input always prints the same table
    return sorted(findings, key=lambda f: (f.severity.rank, f.file or "", f.key or "", f.code))


def sort_by_place(findings: list[Finding]) -> list[Finding]:
    """Grouped by file, then in file order (line, column), errors first on one line."""
    return sorted(
        findings,
        key=lambda f: (f.file or "", f.line or 0, f.column or 0, f.severity.rank, f.key or ""),
    )
