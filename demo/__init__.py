"""The Gradio chat demo (`lmrt gradio`): chat.py holds what it does, app.py the page."""
