"""``gramx serve``: a search service and web page over an index (:mod:`gramx.serve`), run by uvicorn."""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from gramx.cli.options import Commands, count
from gramx.errors import GramxError
from gramx.index.reader import EmbeddingIndex
from gramx.model.directory import read_model_config
from gramx.model.model import load_model

__all__ = ["LOCAL_HOSTS", "towers", "check_address", "register"]

#: Addresses only this machine can reach.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def towers(model: str | Path, index: EmbeddingIndex) -> list[str]:
    """The modalities of the model at ``model`` that the server loads: the indexed ones (queries by file) and text."""
    return [m for m in read_model_config(model).modalities if m in index.modalities or m == "text"]


def check_address(host: str, port: int) -> None:
    """Refuse an address this machine cannot listen on (taken, or not its own) before the model loads."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise GramxError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                         hint="choose another --port, or stop what listens there") from None


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve searches of an index with the model that made it, and the page that makes them."""
    import uvicorn

    from gramx.serve.app import create_app

    check_address(args.host, args.port)
    index = EmbeddingIndex.load(args.index)
    model = load_model(args.model, device=args.device or "auto", modalities=towers(args.model, index))
    app = create_app(model, index, max_upload=args.max_upload << 20, media=args.media or ())
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"gramx serve: {len(index)} rows of {args.index} on http://{host}:{args.port}/ (model {args.model}, "
          f"{model.device}); Ctrl-C stops", flush=True)
    if args.host not in LOCAL_HOSTS:
        print(f"gramx: warning: listening on {args.host}, not only this machine: anyone who can reach it can "
              "search the index and fetch its indexed files", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def register(commands: Commands) -> None:
    """Add ``serve``."""
    serve = commands.add("serve", "serve searches of an index over HTTP, with a web page", cmd_serve)
    serve.add_argument("model", metavar="MODEL", help="the model directory that made the index")
    serve.add_argument("--index", required=True, help="folder written by gramx embed")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this "
                       "machine only; 0.0.0.0 opens it to the network)")
    serve.add_argument("--port", type=count(), default=8000, help="port (default 8000)")
    serve.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    serve.add_argument("--media", action="append", metavar="DIR", help="also serve indexed files from DIR "
                       "(repeatable; the folders the index was embedded from are always served)")
    serve.add_argument("--max-upload", type=count(), default=64, metavar="MIB",
                       help="largest upload accepted, in MiB (default 64)")
