"""The Typer application, the helpers every command shares, and the console entry point."""

from __future__ import annotations

import logging
import sys

import typer

from distillrec.errors import DistillrecError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Multimodal recommenders with knowledge distillation."
)


def _print_version(value: bool) -> None:
    if value:
        from distillrec import __version__

        typer.echo(f"distillrec {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    """Multimodal recommenders with knowledge distillation."""


def setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        logging.basicConfig(
            level=level, format="%(message)s", handlers=[RichHandler(show_path=False)], force=True
        )
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s", force=True)


def parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise DistillrecError(f"--seeds expects comma-separated integers, got {text!r}") from None


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        code = app(standalone_mode=False)
    except DistillrecError as exc:
        sys.stderr.write(f"error: {exc}\n")  # one unwrapped line, whatever the terminal width
        raise SystemExit(2) from None
    except typer.TyperException as exc:  # a bad option or value: one line too, not a framed box
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())
            raise SystemExit(0) from None
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        sys.stderr.write(f"error: {' '.join(exc.format_message().split())}{where}\n")
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except typer.Abort:
        sys.stderr.write("aborted\n")
        raise SystemExit(130) from None
    raise SystemExit(code if isinstance(code, int) else 0)
