"""Every option of a config model, flattened for people: dotted name, type, default and help text.

``mfpo options`` prints this for :class:`~mfpo.pipeline.config.GenerateConfig` (what ``mfpo generate
--config FILE`` takes). Everything is read from the pydantic model itself (annotations, constraints,
defaults, ``Field(description=...)``), so the listing cannot drift from the code.

A nested config is a section: ``keywords`` is listed with its help, then ``keywords.top_k`` and the
rest of its options. A section that may be ``None`` (``regions.grounding``) is listed with default
``null`` and its options below it, with the defaults they take once the section is given.
"""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["OptionInfo", "list_options", "type_name"]

REQUIRED = "required"
"""The default shown for an option that has none (it must be given)."""


@dataclass(frozen=True)
class OptionInfo:
    """One option: ``name`` (dotted path in the JSON config), ``type``, ``default`` (JSON), ``help``."""

    name: str
    type: str
    default: str
    help: str
    section: bool = False


def list_options(model: type[BaseModel], prefix: str = "") -> list[OptionInfo]:
    """Every option of ``model`` and of its nested configs, depth first, in declaration order."""
    options: list[OptionInfo] = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        options.append(
            OptionInfo(
                name=path,
                type=type_name(field.annotation) + _constraints(field),
                default=_default(field, nested is not None),
                help=" ".join((field.description or "").split()),
                section=nested is not None,
            )
        )
        if nested is not None:
            options.extend(list_options(nested, prefix=f"{path}."))
    return options


def type_name(annotation: Any) -> str:
    """A short, readable name of a type annotation: ``int``, ``float | None``, ``'linear' | 'cosine'``."""
    if annotation is None or annotation is type(None):
        return "None"
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(annotation))
    if origin is not None:
        args = get_args(annotation)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{type_name(args[0])}, ...]"
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else getattr(origin, "__name__", "")
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The config model an option holds (``X`` or ``X | None``), else None."""
    candidates = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def _constraints(field: FieldInfo) -> str:
    """Bounds of a field, e.g. `` (>= 0, <= 9)``, from its annotated-types metadata."""
    symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length", "max_length": "max length"}
    parts = []
    for item in field.metadata:
        for attr, symbol in symbols.items():
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return f" ({', '.join(parts)})" if parts else ""


def _default(field: FieldInfo, section: bool) -> str:
    """The default as JSON (``required`` when there is none; blank for a section: its options have defaults)."""
    if field.is_required():
        return REQUIRED
    value = field.get_default(call_default_factory=True)
    if section and isinstance(value, BaseModel):
        return ""  # its options below carry the defaults
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)
