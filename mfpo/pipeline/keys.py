"""Object keys of an item's outputs, derived from its content and the options."""

from __future__ import annotations

from dataclasses import dataclass

from mfpo.ids import digest, options_key


@dataclass(frozen=True)
class OutputKeys:
    """Where one item's outputs live in the store (relative keys)."""

    stem: str
    image_ext: str

    @property
    def image(self) -> str:
        return f"images/{self.stem}{self.image_ext}"

    @property
    def rejected_image(self) -> str:
        return f"rejected/{self.stem}.png"

    @property
    def mask(self) -> str:
        return f"masks/{self.stem}.png"

    def negative_image(self, kind: str) -> str:
        """A constructor's rejected image: MFPO's at :attr:`rejected_image`, the others' in ``rejected-{kind}/``."""
        return self.rejected_image if kind == "mfpo" else f"rejected-{kind}/{self.stem}.png"

    def negative_mask(self, kind: str) -> str:
        """A constructor's mask: MFPO's at :attr:`mask`, the others' in ``masks-{kind}/``."""
        return self.mask if kind == "mfpo" else f"masks-{kind}/{self.stem}.png"

    @property
    def record(self) -> str:
        """Written last: its presence means the item is complete."""
        return f"records/{self.stem}.json"


def output_stem(item_id: str, content: str, options: dict) -> str:
    """``{item_id}-{12 hex}``: the hex hashes the item's content digest and the options."""
    return f"{item_id}-{options_key({'content': content, 'options': options})}"


def content_digest(image_bytes: bytes, question: str, chosen: str, rejected: str, annotations: str) -> str:
    """Digest of everything of an item that its outputs depend on."""
    return digest(image_bytes, question, chosen, rejected, annotations, length=32)
