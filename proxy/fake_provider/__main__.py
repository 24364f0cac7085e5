"""python -m proxy.fake_provider --host 127.0.0.1 --port 8090"""

from __future__ import annotations

import argparse

import uvicorn

from proxy.fake_provider import __doc__ as DOC


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.fake_provider", description=DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    uvicorn.run(
        "proxy.fake_provider.app:app",
        host=args.host,
        port=args.port,
        log_level="warning",
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
    )


if __name__ == "__main__":
    main()
