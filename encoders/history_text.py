"""User history as text for the `text` user tower, built from cached item token ids.

Rule (the `text` user tower): the user's most recent items first, each item's text joined with the tokenizer's
separator token, truncated to a token budget, optionally behind a short prompt prefix. Items are
tokenized once (`ItemTokens`) and histories are assembled from those ids, so a training step never
re-tokenizes the catalog; the result equals tokenizing the joined text, up to truncation inside an
item (an item cut by the budget keeps its first tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from encoders.text_encoder import TextEncoder


@dataclass
class ItemTokens:
    """Token ids of every item's text without special tokens, plus the tokenizer's specials."""

    ids: list[list[int]]
    cls_id: int
    sep_id: int

    @classmethod
    def build(cls, encoder: TextEncoder, texts: Sequence[str], max_tokens: int) -> ItemTokens:
        """Tokenize each item text once, truncated to `max_tokens` content tokens."""
        with_specials = encoder.token_ids(list(texts), max_length=max_tokens + 2)
        tokenizer = encoder.tokenizer
        return cls([row[1:-1] for row in with_specials], int(tokenizer.cls_token_id), int(tokenizer.sep_token_id))

    def item(self, index: int) -> list[int]:
        """`[CLS] item [SEP]`: the item tower's input."""
        return [self.cls_id, *self.ids[index], self.sep_id]

    def history(self, indices_oldest_first: Sequence[int], budget: int, prefix: Sequence[int] = ()) -> list[int]:
        """`[CLS] prefix newest [SEP] older [SEP] …` cut at `budget` tokens (specials included)."""
        out = [self.cls_id, *prefix]
        room = budget - 1  # keep space for the final [SEP]
        for index in reversed(indices_oldest_first):
            if len(out) >= room:
                break
            piece = self.ids[index]
            if len(out) > 1 + len(prefix):
                out.append(self.sep_id)
            out.extend(piece[: max(0, room - len(out))])
        out = out[:room]
        out.append(self.sep_id)
        return out


def prefix_ids(encoder: TextEncoder, prompt: str | None) -> list[int]:
    """Token ids of an optional prompt such as "User history:" (no special tokens)."""
    if not prompt:
        return []
    return encoder.token_ids([prompt])[0][1:-1]
