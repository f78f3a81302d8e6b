"""`nimbus datastore ...`: a workspace's datastores (their access keys go to its secret store, never back) and
their files."""
from __future__ import annotations

from pathlib import Path

import click

from nimbus.cli.common import connect, output_option, workspace_option
from nimbus.cli.output import emit
from nimbus.cli.secret_input import read_secret
from nimbus.datastore import Datastore
from nimbus.progress import wanted

COLUMNS = [("NAME", "name"), ("TYPE", "type"), ("DEFAULT", "is_default"), ("CREDENTIAL", "credential"),
           ("SETTINGS", "settings")]
FIELDS = ["name", "type", "is_default", "description", "settings", "credential", "credential_secrets", "created",
          "created_by", "updated"]


@click.group()
def datastore() -> None:
    """Datastores: where a workspace's data lives (its own blob store, S3 or S3-compatible buckets, local
    folders of the platform's machine)."""


def secret_key_options(command):
    for option in reversed([
        click.option("--access-key-id", metavar="ID", help="An access key pair's id; its secret is read from "
                     "--secret-access-key-file, else standard input (a prompt on a terminal)."),
        click.option("--secret-access-key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                     help="A file holding the secret access key (a final line end is dropped)."),
    ]):
        command = option(command)
    return command


def _keys(access_key_id: str | None, secret_file: Path | None) -> tuple[str | None, str | None]:
    if access_key_id is None:
        if secret_file is not None:
            raise click.UsageError("--secret-access-key-file goes with --access-key-id")
        return None, None
    return access_key_id, read_secret("the secret access key", secret_file, None, "--secret-access-key-file", "")


@datastore.command("register-s3")
@click.argument("name")
@click.option("--bucket", required=True, help="The bucket's name.")
@click.option("--prefix", help="A folder in the bucket: the datastore's root.")
@click.option("--region", help="The bucket's region (default: the platform's).")
@click.option("--endpoint-url", help="An S3-compatible store's URL (MinIO, Ceph, another cloud's S3 API).")
@secret_key_options
@click.option("--description", default="")
@click.option("--overwrite", is_flag=True, help="Replace a datastore of that name.")
@workspace_option
@output_option
def register_s3(name: str, bucket: str, prefix: str | None, region: str | None, endpoint_url: str | None,
                access_key_id: str | None, secret_access_key_file: Path | None, description: str, overwrite: bool,
                workspace_name: str | None, output: str) -> None:
    """Register datastore NAME on an S3 bucket. Without --access-key-id the platform's (or the job's) AWS role
    reaches it. The connection is checked first; a refusal names the store's error code and saves nothing."""
    key_id, secret = _keys(access_key_id, secret_access_key_file)
    registered = Datastore.register_s3(connect(workspace_name), name, bucket, prefix=prefix, region=region,
                                       endpoint_url=endpoint_url, access_key_id=key_id, secret_access_key=secret,
                                       description=description, overwrite=overwrite)
    emit(output, registered.details, keys=FIELDS)


@datastore.command("register-local")
@click.argument("name")
@click.argument("path")
@click.option("--description", default="")
@click.option("--overwrite", is_flag=True, help="Replace a datastore of that name.")
@workspace_option
@output_option
def register_local(name: str, path: str, description: str, overwrite: bool, workspace_name: str | None,
                   output: str) -> None:
    """Register datastore NAME on folder PATH of the platform's machine (platform admins only, under a root the
    platform's NIMBUS_DATASTORE_ROOTS lists)."""
    registered = Datastore.register_local(connect(workspace_name), name, path, description=description,
                                          overwrite=overwrite)
    emit(output, registered.details, keys=FIELDS)


@datastore.command("list")
@workspace_option
@output_option
def list_datastores(workspace_name: str | None, output: str) -> None:
    """Every datastore, `workspaceblobstore` first."""
    emit(output, [d.details for d in Datastore.list(connect(workspace_name))], COLUMNS)


@datastore.command("show")
@click.argument("name")
@workspace_option
@output_option
def show(name: str, workspace_name: str | None, output: str) -> None:
    """A datastore's settings and which kind of credential it has (never the credential)."""
    emit(output, Datastore.get(connect(workspace_name), name).details, keys=FIELDS)


@datastore.command("update-credentials")
@click.argument("name")
@secret_key_options
@workspace_option
@output_option
def update_credentials(name: str, access_key_id: str | None, secret_access_key_file: Path | None,
                       workspace_name: str | None, output: str) -> None:
    """New access keys for s3 datastore NAME (checked first); without --access-key-id, the AWS role."""
    key_id, secret = _keys(access_key_id, secret_access_key_file)
    updated = Datastore(connect(workspace_name), name).update_credentials(key_id, secret)
    emit(output, updated.details, keys=FIELDS)


@datastore.command("set-default")
@click.argument("name")
@workspace_option
@output_option
def set_default(name: str, workspace_name: str | None, output: str) -> None:
    """Make NAME the workspace's default datastore."""
    emit(output, connect(workspace_name).set_default_datastore(name).details, keys=FIELDS)


@datastore.command("delete")
@click.argument("name")
@workspace_option
@output_option
def delete(name: str, workspace_name: str | None, output: str) -> None:
    """Forget datastore NAME and its keys; the data stays where it is."""
    Datastore(connect(workspace_name), name).unregister()
    emit(output, {"name": name, "deleted": True})


@datastore.command("upload")
@click.argument("name")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--target-path", default="", help="The folder on the datastore (default: its root).")
@click.option("--overwrite", is_flag=True, help="Replace files the datastore holds (otherwise they are skipped).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@workspace_option
@output_option
def upload(name: str, source: Path, target_path: str, overwrite: bool, progress: bool | None,
           workspace_name: str | None, output: str) -> None:
    """Upload SOURCE (a folder, keeping relative paths, or one file) to datastore NAME."""
    store = Datastore(connect(workspace_name), name)
    if source.is_dir():
        sent = store.upload(source, target_path, overwrite=overwrite, show_progress=wanted(progress))
    else:
        sent = store.upload_files([source], target_path=target_path, overwrite=overwrite,
                                  show_progress=wanted(progress))
    emit(output, sent if output == "json" else f"{len(sent)} file(s) uploaded to {name}")


@datastore.command("download")
@click.argument("name")
@click.option("--prefix", default="", help="Only files whose path starts so.")
@click.option("-d", "--output-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to write the files.")
@click.option("--overwrite", is_flag=True, help="Replace local files (otherwise they are kept).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@workspace_option
@output_option
def download(name: str, prefix: str, output_dir: Path, overwrite: bool, progress: bool | None,
             workspace_name: str | None, output: str) -> None:
    """Download datastore NAME's files (under --prefix), keeping their paths."""
    count = Datastore(connect(workspace_name), name).download(output_dir, prefix, overwrite=overwrite,
                                                              show_progress=wanted(progress))
    emit(output, {"files": count, "output_dir": str(output_dir)} if output == "json"
         else f"{count} file(s) written under {output_dir}")


@datastore.command("ls")
@click.argument("name")
@click.option("--prefix", default="", help="Only files whose path starts so.")
@workspace_option
@output_option
def list_files(name: str, prefix: str, workspace_name: str | None, output: str) -> None:
    """The files of datastore NAME."""
    emit(output, Datastore(connect(workspace_name), name).list_files(prefix),
         [("PATH", "path"), ("SIZE", "size"), ("MODIFIED", "modified")])
