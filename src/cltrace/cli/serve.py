"""``cltrace serve``: open a graph, a folder of graphs or a PIE run in the local viewer."""

from __future__ import annotations

import typer

from cltrace.cli._apps import app


@app.command("serve")
def serve(
    path: str = typer.Argument(
        ..., help="A graph JSON file, a folder of graphs, or a PIE run directory."
    ),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (default: this machine only)."
    ),
) -> None:
    """Serve the offline graph viewer for PATH until Ctrl-C (nothing is fetched from the web)."""
    from cltrace.report.serve import make_server, served_url

    server = make_server(path, host=host, port=port)
    served = server.RequestHandlerClass.served  # type: ignore[attr-defined]
    n = len(served.graphs())
    what = {"graph": "graph", "folder": f"folder ({n} graphs)", "pie": f"PIE run ({n} graphs)"}
    typer.echo(f"serving {what[served.kind]} {path} at {served_url(server)}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped.")
    finally:
        server.server_close()
