"""The Gradio chat page: streaming replies from one shared engine, multi-turn history (later turns reuse the prefix
cache: the figures line shows how many prompt tokens it served), Stop (aborts the request in the engine), Reset,
sliders for temperature, top-p and max new tokens, a system prompt box, and a line of figures under the chat
(tokens/s, time to first token, KV cache use). Every event runs without a concurrency limit, so several tabs chat
at once and the engine batches them.

    lmrt gradio [MODEL] [--port 7860] [engine flags]      # or: python -m demo.app [MODEL]
"""

from __future__ import annotations

import gradio as gr

import lmrt
from demo.chat import ChatBackend


def build_demo(pipe: lmrt.Pipeline) -> gr.Blocks:
    backend = ChatBackend(pipe)
    d = pipe.generation_defaults
    most = max(1, min(pipe.session_len - 1, 4096))
    with gr.Blocks(title="lmrt chat") as demo:
        gr.Markdown(f"### lmrt chat · `{pipe.info()['model']}`")
        session = gr.State(dict)  # this tab's live request (ChatBackend.respond / stop)
        chatbot = gr.Chatbot(height=480, label="chat")
        figures = gr.Markdown(backend.kv_line())
        with gr.Row():
            box = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=8)
            send = gr.Button("Send", variant="primary", scale=1)
            stop = gr.Button("Stop", scale=1)
            reset = gr.Button("Reset", scale=1)
        with gr.Accordion("Settings", open=False):
            system = gr.Textbox(label="system prompt", lines=2)
            temperature = gr.Slider(0.0, 2.0, value=d.temperature, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1.0, value=d.top_p, step=0.05, label="top-p")
            max_new = gr.Slider(1, most, value=min(d.max_new_tokens, most), step=1, label="max new tokens")

        inputs = [box, chatbot, system, temperature, top_p, max_new, session]
        runs = [
            trigger(backend.respond, inputs, [chatbot, figures], concurrency_limit=None)
            for trigger in (box.submit, send.click)
        ]
        for run in runs:
            run.then(lambda: "", None, box, queue=False)
        stop.click(backend.stop, [session], None, cancels=runs, queue=False)

        def clear(state):
            backend.stop(state)
            return [], backend.kv_line()

        reset.click(clear, [session], [chatbot, figures], cancels=runs, queue=False)
    demo.queue(default_concurrency_limit=None)
    return demo


def main(argv=None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="The lmrt Gradio chat.")
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7860)
    args = ap.parse_args(argv)
    with lmrt.pipeline(args.model) as pipe:
        build_demo(pipe).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
