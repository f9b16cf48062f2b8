"""`diffill`, the console script: the language server's commands, and the engine's.

    diffill serve [--tcp HOST:PORT]    the language server (also `python -m lsp_server`)
    diffill serve --http HOST:PORT     the HTTP infill server (http_server/)
    diffill bench --lsp [...]          keystroke-to-suggestion latency through the server
    diffill fill|bench|eval|corpus|train ...   the engine's commands (infill_engine.cli)

It lives on the server's side because the server sits above the engine: the engine's CLI
knows nothing of LSP, and this one adds the server's commands on top of it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from infill_engine import cli as engine_cli

SERVER_COMMANDS_HELP = """\
  serve                         the language server (LSP over stdio, or --tcp HOST:PORT)
  serve --http HOST:PORT        the HTTP infill server for a team (pip install 'diffill[serve]')
  bench --lsp                   keystroke-to-suggestion latency through the language server
  bench --http                  HTTP server throughput and latency, batching on vs off
"""


def parse_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:2087), got {value!r}")
    return host or "127.0.0.1", int(port)


def build_serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffill serve", description="diffill language server")
    parser.add_argument("--tcp", type=parse_address, metavar="HOST:PORT",
                        help="listen on TCP instead of talking over stdin/stdout: one session per client")
    parser.add_argument("--max-clients", type=int, default=4, metavar="N",
                        help="with --tcp: serve at most N clients at once; more are refused with a message")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="server log level (the log goes to stderr or --log-file, never stdout)")
    parser.add_argument("--log-file", help="write the server log to this file")
    return parser


def serve(argv: list[str] | None = None) -> int:
    args = build_serve_parser().parse_args(argv)
    target = {"filename": args.log_file} if args.log_file else {"stream": sys.stderr}
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", **target)
    # pygls logs every message body at INFO; that is noise (and large) unless debugging.
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLogger().level))
    if args.tcp:
        from .tcp import serve_tcp

        serve_tcp(*args.tcp, max_clients=max(1, args.max_clients))
    # The protocol owns the real stdout; a stray print() (from a library, say) goes to
    # stderr instead of corrupting the message stream.
    from .server import server

    protocol_out = sys.stdout.buffer
    sys.stdout = sys.stderr
    server.start_io(sys.stdin.buffer, protocol_out)  # ends the process itself: 0 after shutdown, else 1
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "serve" and any(a == "--http" or a.startswith("--http=") for a in rest):
        from http_server.cli import serve as serve_http  # fastapi/uvicorn: only for --http

        return serve_http(rest)
    if command == "serve":
        return serve(rest)
    if command == "bench" and "--http" in rest:
        from http_server.bench import main as http_bench

        rest.remove("--http")
        return http_bench(rest)
    if command == "bench" and "--lsp" in rest:
        from .latency_bench import main as latency_main

        rest.remove("--lsp")
        return latency_main(rest)
    return engine_cli.main(argv, more_commands=SERVER_COMMANDS_HELP)


if __name__ == "__main__":
    raise SystemExit(main())
