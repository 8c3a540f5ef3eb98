"""What a handler raises when its attempt fails."""

from __future__ import annotations


class TaskError(Exception):
    """A failed attempt: a stable ``error_type`` (what a task's ``retry_on`` /
    ``stop_on`` lists match, exactly), a message, and whether a later attempt
    may succeed. It becomes the ``task.failed`` event's data
    ``{error_type, message, retryable}``."""

    def __init__(self, error_type: str, message: str = "", retryable: bool = True) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.retryable = retryable


class RetryableError(TaskError):
    """An error a later attempt may not hit (a timeout, a 503, a lost
    connection): the task's retry policy decides whether it is retried."""

    def __init__(self, error_type: str, message: str = "") -> None:
        super().__init__(error_type, message, retryable=True)


class TerminalError(TaskError):
    """An error every attempt would hit (bad input, a 404): never retried."""

    def __init__(self, error_type: str, message: str = "") -> None:
        super().__init__(error_type, message, retryable=False)
