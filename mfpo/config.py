"""Typed configuration base shared by every component.

Every component config is a frozen pydantic model whose fields carry help text
(``Field(description=...)``). Unknown option names raise an error that lists the
valid ones, like TRL's ``DPOConfig``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class UnknownOptionError(TypeError):
    """Raised when a config receives option names it does not define.

    A ``TypeError`` (like an unexpected keyword argument), so pydantic lets it through
    unwrapped, also from nested configs.
    """


class ComponentConfig(BaseModel):
    """Base of all component configs: frozen, strict about option names."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            valid = set(cls.model_fields)
            unknown = sorted(str(k) for k in data if k not in valid)
            if unknown:
                raise UnknownOptionError(
                    f"unknown option(s) for {cls.__name__}: {', '.join(unknown)}; "
                    f"valid options: {', '.join(sorted(valid))}"
                )
        return data

    @classmethod
    def help(cls) -> dict[str, str]:
        """Map each option name to its help text."""
        return {name: (f.description or "") for name, f in cls.model_fields.items()}
