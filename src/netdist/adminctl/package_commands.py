"""``netdist-admin upload-package`` and ``packages``: the wheels that hold handlers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from netdist.adminctl import render, view
from netdist.adminctl.command_io import client, emit_json, json_option, out, show
from netdist.adminctl.completion import package_names
from netdist.printable import printable


def _wheel_path(ctx: click.Context, param: click.Parameter, value: Sequence[Path]) -> Sequence[Path]:
    for path in value:
        if path.suffix != ".whl":
            raise click.BadParameter(f"{path} is not a wheel (.whl)", ctx=ctx, param=param)
    return value


_wheel_type = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@click.command("upload-package")
@click.argument("package", type=_wheel_type, callback=lambda c, p, v: _wheel_path(c, p, [v])[0])
@click.argument("dependencies", nargs=-1, type=_wheel_type, callback=_wheel_path)
@click.pass_context
def upload_package(ctx: click.Context, package: Path, dependencies: tuple[Path, ...]) -> None:
    """Upload PACKAGE (a wheel with handlers) and the wheels it DEPENDS on.

    Workers get all of them on sys.path when they run a job of this package.
    A Requires-Dist left out is met by a dependency wheel stored with an earlier
    version when its version satisfies it (carried over); one met by nothing is
    refused. Handler instances of an older version move to the new one; one
    whose new host fails as it comes up is shown with its error.
    """
    reply = client(ctx).upload([package, *dependencies])
    p = reply.package
    console = out()
    verb = "uploaded" if reply.created else "already present:"
    console.print(render.text(f"{verb} {p.name} {p.version}", style="bold"))
    console.print(render.text(f"  handlers: {', '.join(p.handlers) or '-'}"))
    if p.dependencies:
        console.print(render.text(f"  dependencies: {', '.join(d.filename for d in p.dependencies)}"))
    if reply.carried_over:
        kept = ", ".join(d.filename for d in reply.carried_over)
        console.print(render.text(f"  carried over (stored with an earlier version): {kept}"))
    if reply.restarted_handlers:
        console.print(render.text(f"  restarted handlers: {', '.join(reply.restarted_handlers)}"))
    for h in reply.failed_handlers:  # its new host failed as it came up: the upload itself is stored (exit 0)
        line = f"  handler {h.id} ('{h.job_name}') failed on it, state failed: {h.message}"
        console.print(render.text(line, style="red"))


@click.group()
def packages() -> None:
    """Uploaded packages (wheels holding handlers)."""


@packages.command("list")
@click.option(
    "--all",
    "all_versions",
    is_flag=True,
    help="Every stored version, not only the current one.",
)
@json_option
@click.pass_context
def packages_list(ctx: click.Context, all_versions: bool, as_json: bool) -> None:
    """List packages."""
    items = client(ctx).list_packages(all_versions=all_versions)
    if as_json:
        emit_json([view.package_dict(p) for p in items])
    else:
        show(render.packages_table(items))


@packages.command("remove")
@click.argument("name", shell_complete=package_names)
@click.option("--version", default="", help="Remove only this version (default: every version).")
@click.option("--force", is_flag=True, help="Remove it even while handler instances use it.")
@click.pass_context
def packages_remove(ctx: click.Context, name: str, version: str, force: bool) -> None:
    """Remove package NAME (every version unless --version).

    Refused while a handler instance uses it (the refusal names them) unless --force."""
    removed = client(ctx).remove_package(name, version, force=force)
    click.echo(f"removed {removed} version{'s' if removed != 1 else ''} of {printable(name)}")
