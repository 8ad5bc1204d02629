"""The one domain error type: every refusal in `shared/` is a `DomainError(code, message, kind)`.

- `code` is a stable machine-readable string (the API returns it as `error.code`; clients and
  tests rely on it, so it never changes once published),
- `message` is for humans: what happened and what to do,
- `kind` says what sort of refusal it is. Nothing in `shared/` knows HTTP: `api/errors.py`
  maps each kind to a status in one place.

Subclasses exist only where callers catch a specific case or need its data (e.g.
`InvalidState.current_state`); each still carries a code and a kind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from enum import StrEnum


class ErrorKind(StrEnum):
    NOT_FOUND = "not_found"  # the thing asked about does not exist
    CONFLICT = "conflict"  # the thing's current state does not allow it (retry may not help)
    INVALID = "invalid"  # the request itself is wrong: fix it before retrying
    FORBIDDEN = "forbidden"  # a rule forbids this caller doing it (e.g. four-eyes)
    UNAVAILABLE = "unavailable"  # a service it needs is down: nothing changed, retry later
    NODE_REFUSED = "node_refused"  # the Bitcoin node refused for a reason of its own


class DomainError(Exception):
    """A refusal with a stable `code`, a human `message` and a `kind`."""

    def __init__(self, code: str, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.kind = kind

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, {self.kind!s})"


class PayoutNotFound(DomainError):
    def __init__(self, payout_id: uuid.UUID) -> None:
        super().__init__("not_found", f"no payout with id {payout_id}", ErrorKind.NOT_FOUND)
        self.payout_id = payout_id


class InvalidState(DomainError):
    """The payout is not in a state the action applies to. Carries the current state when the
    refusal is about one action (`for_action`)."""

    def __init__(
        self,
        message: str,
        *,
        current_state: str | None = None,
        allowed_from: Iterable[str] = (),
        code: str = "invalid_state",
    ) -> None:
        super().__init__(code, message, ErrorKind.CONFLICT)
        self.current_state = current_state
        self.allowed_from = tuple(allowed_from)

    @classmethod
    def for_action(
        cls, action: str, current: str, allowed_from: Iterable[str], detail: str = ""
    ) -> InvalidState:
        allowed = tuple(allowed_from)
        return cls(
            f"cannot {action} a payout in state {current!r}{detail}; {action} is only "
            f"allowed from: {', '.join(allowed)}",
            current_state=current,
            allowed_from=allowed,
        )
