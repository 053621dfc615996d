"""How the parts that turn a service into a launch spec read its keys.

`service_spec.py`, `service_mounts.py` (with the modules for each kind of
mount) and `service_limits.py` all read a service through `ServiceKeys`, so
that each mistake names the key it was found under; it lives on its own
because none of them owns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.spec.errors import StackError


@dataclass(frozen=True)
class ServiceKeys:
    """One service's settings, and errors that point at them (`services.web.user: …`)."""

    name: str
    settings: Mapping[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        value = self.settings.get(key)
        return default if value is None else value

    def error(
        self, key: str | tuple[str | int, ...], message: str, hint: str | None = None
    ) -> StackError:
        where = key if isinstance(key, tuple) else (key,)
        return StackError(message, path=("services", self.name, *where), hint=hint)
