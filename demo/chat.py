"""What the Gradio chat does, without Gradio: one conversation turn streamed from the engine, the Stop that aborts
it in the engine, and the line of figures under the chat. Built on lmrt's public API only (Pipeline.stream,
generation_config, stats, info)."""

from __future__ import annotations

import time
from typing import Iterator, List, Optional

import lmrt


def text_of(content) -> str:
    """A chat message's content as text: Gradio gives a string or a list of parts ({"type": "text", "text"})."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return "".join(text_of(part) for part in content or [])


class ChatBackend:
    """One engine shared by every browser session; each session keeps its own live stream in `session` (a dict
    held in gr.State), so that its Stop aborts its own request and nobody else's."""

    def __init__(self, pipe: lmrt.Pipeline):
        self.pipe = pipe

    def kv_line(self) -> str:
        s = self.pipe.stats()
        used = s["num_blocks"] - s["num_free_blocks"]
        return f"KV cache {used}/{s['num_blocks']} blocks ({100 * used / max(1, s['num_blocks']):.0f}%)"

    def respond(
        self,
        message: str,
        history: List[dict],
        system: str,
        temperature: float,
        top_p: float,
        max_new_tokens: int,
        session: Optional[dict] = None,
    ) -> Iterator[tuple]:
        """Streams the reply to `message`: yields (history with the growing reply, the figures line)."""
        session = session if session is not None else {}
        messages = [{"role": "system", "content": system}] if system and system.strip() else []
        messages += [{"role": m["role"], "content": text_of(m["content"])} for m in history]
        messages.append({"role": "user", "content": message})
        history = [*history, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        gen = self.pipe.generation_config(
            temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens)
        )
        start = time.perf_counter()
        try:
            stream = self.pipe.stream(messages, gen)
        except lmrt.PromptTooLongError as e:
            history[-1]["content"] = f"(This conversation no longer fits the session: {e}. Press Reset.)"
            yield history, self.kv_line()
            return
        session["stream"] = stream
        first, n, reply = None, 0, ""
        try:
            for r in stream:
                now = time.perf_counter()
                if r.token_ids and first is None:
                    first = now
                n += len(r.token_ids)
                reply += r.text
                history[-1]["content"] = reply
                rate = (n - 1) / (now - first) if first is not None and n > 1 and now > first else 0.0
                ttft = f"{1000 * (first - start):.0f} ms" if first is not None else "—"
                line = (
                    f"{rate:.1f} tokens/s · first token {ttft} · prompt "
                    f"{r.num_prompt_tokens} tokens ({r.num_cached_tokens} from the prefix cache) · {n} generated · "
                    f"{self.kv_line()}"
                )
                yield history, line
        finally:
            stream.close()  # a Stop, a closed tab or an error: the engine aborts the request
            session.pop("stream", None)

    def stop(self, session: Optional[dict]) -> None:
        """Aborts this session's request in the engine (not only in the page)."""
        stream = (session or {}).get("stream")
        if stream is not None:
            stream.close()
