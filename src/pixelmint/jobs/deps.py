"""The process's job events and providers, as request dependencies."""

from __future__ import annotations

from typing import Annotated

from pixelmint.jobs.events import JobEvents
from pixelmint.kit.http import from_runtime
from pixelmint.providers.registry import Providers

JobEventsDep = Annotated[JobEvents, from_runtime("events")]
ProvidersDep = Annotated[Providers, from_runtime("providers")]
