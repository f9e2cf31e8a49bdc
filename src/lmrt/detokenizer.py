"""Streaming text out of a stream of token ids.

Decoding one token at a time is wrong in two ways: a byte-level BPE token can hold part of a multi-byte UTF-8
character (it decodes to U+FFFD until the rest arrives), and SentencePiece-style decoders drop the leading space of
the first token in a string, so a token's text depends on what precedes it. ``IncrementalDetokenizer`` decodes a
short window of recent ids together with the ids already emitted before them (the approach of vLLM and TGI) and emits
the difference, so each step costs O(window), not O(sequence).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

_REPLACEMENT_CHAR = "\ufffd"
# Ids of prompt context decoded in front of the first generated ids, so their leading space decodes as it would
# mid-sentence. A few tokens cover any decoder's look-behind.
_PROMPT_CONTEXT = 5


class IncrementalDetokenizer:
    """Turns generated ids into text deltas; ``step`` and then ``flush`` together yield the whole decoded text.

    ``tokenizer`` needs ``decode(ids, skip_special_tokens=...)``. ``prompt_ids`` (only the last few matter) give
    the first generated token its context; their own text is never emitted.
    """

    def __init__(self, tokenizer, prompt_ids: Sequence[int] | None = None, skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-_PROMPT_CONTEXT:]) if prompt_ids else []
        # ids[prefix_offset:read_offset] decode to text already emitted (kept as context); ids[read_offset:] are
        # pending: generated but not yet emitted, because their text ended in an incomplete character.
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

    def step(self, new_ids: Iterable[int]) -> str:
        """Add generated ids; return the text they complete (possibly empty)."""
        self._ids.extend(new_ids)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        # Hold back while the text ends in U+FFFD: the next token likely completes the character. An equal length
        # means the ids produced no text yet (e.g. skipped special tokens); keeping them pending keeps the context.
        if len(text) <= len(prefix_text) or text.endswith(_REPLACEMENT_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        # Drop ids before the new window; an unbounded list would make every slice above O(sequence).
        del self._ids[: self._prefix_offset]
        self._read_offset -= self._prefix_offset
        self._prefix_offset = 0
        return text[len(prefix_text) :]

    def flush(self) -> str:
        """Return the pending text at the end of the sequence, incomplete characters (as U+FFFD) included."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return text[len(prefix_text) :]


class StopStringMatcher:
    """Finds stop strings in streamed text, across delta boundaries.

    ``feed`` returns the text that is safe to emit now: a suffix that could be the start of a stop string is held
    back until the next delta decides it. When a stop string appears, the text before it is returned, ``stopped``
    becomes True and ``stop_string`` names it; the caller ends the request and drops anything after. At the end of
    a request that did not stop, ``flush`` returns the held-back text.
    """

    def __init__(self, stop_strings: Iterable[str]):
        self.stop_strings: tuple[str, ...] = tuple(dict.fromkeys(s for s in stop_strings if s))
        self.stopped = False
        self.stop_string: str | None = None
        self._held = ""

    def feed(self, delta: str) -> str:
        if self.stopped:
            raise RuntimeError(
                "StopStringMatcher already matched a stop string; stop the request instead of feeding it."
            )
        text = self._held + delta
        # The held text holds no complete stop string, so the earliest match in `text` is the first in the stream.
        hits = [(i, s) for s in self.stop_strings if (i := text.find(s)) >= 0]
        if hits:
            index, self.stop_string = min(hits, key=lambda hit: hit[0])
            self.stopped = True
            self._held = ""
            return text[:index]
        keep = self._partial_match_len(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _partial_match_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
