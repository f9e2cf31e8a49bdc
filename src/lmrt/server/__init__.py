"""The OpenAI-compatible server (`lmrt serve`): `pip install 'lmrt[serve]'`."""

from lmrt.server.app import create_app

__all__ = ["create_app"]
