"""A sub-command contributed by the example plugin: `prunekit magnitude-demo top 3 -1 2`."""

import typer

app = typer.Typer(help="Example plugin command")


@app.command()
def top(values: list[float], keep: int = 1) -> None:
    """Print the indices of the KEEP largest |values| (scored and selected through prunekit)."""
    import prunekit

    from . import MagnitudeConfig, score

    mask = prunekit.select(score(values, None, MagnitudeConfig()), prunekit.Budget(keep_count=keep)).only
    typer.echo(" ".join(str(i) for i in mask.nonzero().flatten().tolist()))
