"""The one error type users see: a message that names the file, the record or line, and the problem."""


class GenossmError(Exception):
    """Bad input or a failed precondition. The CLI prints it as one line and exits non-zero."""

    def __init__(self, problem: str, path=None, where=None):
        self.problem, self.path, self.where = problem, path, where
        parts = [str(p) for p in (path, where) if p is not None]
        super().__init__(": ".join(parts + [problem]))
