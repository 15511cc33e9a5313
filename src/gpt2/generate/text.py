"""Token ids -> text: the one stop-string assembler (used by every decode, see :mod:`gpt2.generate.decode`)."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from gpt2.tokenizer import Tokenizer


class TextAssembler:
    """Turns one sample's token ids into text pieces.

    Token bytes go through an incremental UTF-8 decoder, so a character split across tokens (emoji,
    CJK) is emitted only once complete and a piece never contains a half character. Text that could
    be the start of a stop string is held back until it is clear; at a stop string the text ends just
    before it. ``done`` is set at a stop token (``stop_ids``, default ``<|endoftext|>``) or a stop string.
    """

    def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (), stop_ids: Sequence[int] | None = None):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.stop_ids = (tokenizer.eot_id,) if stop_ids is None else tuple(stop_ids)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # decoded, not yet emitted (a possible stop-string prefix)
        self.done = False

    def feed_bytes(self, data: bytes) -> str:
        """Add raw bytes; return the text that can be emitted now."""
        if self.done:
            return ""
        self.pending += self.decoder.decode(data)
        return self._release(final=False)

    def feed(self, token_id: int) -> str:
        """Add one token id; return the text that can be emitted now."""
        if token_id in self.stop_ids:
            return self.finish()
        return self.feed_bytes(self.tokenizer.decode_bytes([token_id]))

    def finish(self) -> str:
        """End of the sample: flush held-back text (an incomplete trailing character becomes U+FFFD)."""
        if self.done:
            return ""
        self.pending += self.decoder.decode(b"", final=True)
        text = self._release(final=True)
        self.done = True
        return text

    def _release(self, final: bool) -> str:
        text = self.pending
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.pending, self.done = "", True
            return text[:cut]
        # hold back the longest end of the text that may begin a stop string
        ends = (k for s in self.stop for k in range(1, min(len(s), len(text) + 1)) if text.endswith(s[:k]))
        hold = 0 if final else max(ends, default=0)
        self.pending = text[len(text) - hold :]
        return text[: len(text) - hold]
