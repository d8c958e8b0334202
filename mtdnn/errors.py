"""The errors a user can fix, apart from the bugs they cannot.

Everything a user gets wrong (a spec, a data file, a path, a checkpoint that is not one, a command
line) raises a `UserError`: it names where (`source`: a file, a key, a directory) and lists every
problem found, each with the value and the fix. The CLI prints it and exits with status 2, without
a traceback. Any other exception is a bug in mtdnn (or in a library under it): the CLI keeps its
traceback, asks for a report and exits with status 1.

`UserError` derives from `ValueError` so that callers of the Python API who catch `ValueError`
keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Input the user can fix. `problems` lists every problem found, one line each."""

    def __init__(self, source: str, problems: list[str] | str):
        self.source = str(source)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1 and "\n" not in self.problems[0]:
            text = f"{self.source}: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{self.source}: {len(self.problems)} problem(s):\n{lines}"
        super().__init__(text)


class SpecError(UserError):
    """A spec is wrong: unknown or mistyped keys, bad values, settings that do not combine."""

    def __init__(self, source: str, problems: list[str] | str):
        # Spec errors always list their problems, even a single one: tests and users grep for
        # "N problem(s)" and the "  - key: ..." lines.
        self.source = str(source)
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        ValueError.__init__(self, f"{self.source}: {len(self.problems)} problem(s):\n{lines}")


class DataError(SpecError):
    """The data of a task is wrong: which file, which row, which value, and the fix."""


class CheckpointError(UserError):
    """A directory given as a checkpoint is not one (missing, half written, another tool's), or
    does not hold what was asked of it (a task, a resumable state)."""
