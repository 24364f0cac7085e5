"""ASGI entry point of the proxy: `gunicorn proxy.asgi:app -k uvicorn_worker.UvicornWorker`."""

from proxy.app import create_app

app = create_app()
