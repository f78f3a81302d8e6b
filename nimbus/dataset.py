"""Datasets: versioned references to data on datastores, with the names Azure ML v1 gives them.

    from nimbus import Dataset, Workspace

    ws = Workspace()
    blob = ws.get_default_datastore()
    images = Dataset.File.from_files(path=[(blob, "images/**/*.png")])
    images = images.register(ws, "pets", create_new_version=True)     # the same data answers its version
    iris = Dataset.Tabular.from_delimited_files([(blob, "iris/iris.csv")]).register(ws, "iris")
    iris = Dataset.get_by_name(ws, "iris", version="latest")
    iris.to_pandas_dataframe(); iris.take(5); train, test = iris.random_split(0.8, seed=1)
    images.download("./pets")                          # a second call fetches 0 bytes: copies from the cache
    images.verify()                                                    # has the data changed underneath?

The data stays on its datastore: registering lists it (the fingerprint comes from the listing) and, for
tabular data, the service reads it once to keep its schema, row count, first rows and column profile.
Downloads go through a local cache keyed by the version's fingerprint (NIMBUS_CACHE_DIR, default
~/.cache/nimbus), so an unchanged version is fetched once per machine.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimbus.client import api_path
from nimbus.exceptions import InvalidError
from nimbus.progress import ProgressBar, wanted
from nimbus.transfers import inside, parallel

if TYPE_CHECKING:
    import pandas

    from nimbus.workspace import Workspace

BATCH = 500  # the service signs at most this many files per request
INPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
INPUTS_ENV = "NIMBUS_INPUT_DATASETS"  # set by the runner (nimbus/runtime/run_datasets.py)
OUTPUTS_ENV = "NIMBUS_OUTPUT_DATASETS"


def cache_root(environ=os.environ) -> Path:
    return Path(environ.get("NIMBUS_CACHE_DIR") or Path.home() / ".cache" / "nimbus")


class _Dataset:
    """A definition (type, paths, format, options), registered or not; a registered one has a name and a
    version, and its details come from the service."""

    kind = ""

    def __init__(self, paths: list[dict], fmt: str | None = None, options: dict | None = None, *,
                 workspace: "Workspace | None" = None, details: dict | None = None, transforms: tuple = ()):
        self._paths, self._format, self._options = paths, fmt, dict(options or {})
        self.workspace, self._details, self._transforms = workspace, details, transforms

    # --- registering ----------------------------------------------------------------------------
    def register(self, workspace: "Workspace", name: str, description: str = "", tags: dict | None = None,
                 create_new_version: bool = False) -> "_Dataset":
        """A new version of `name`, or the version this definition over unchanged data already is.
        Without create_new_version, a name taken by another definition (or other data) is a ConflictError."""
        if self._transforms:
            raise InvalidError("a dataset made by take or random_split is not registered: register the one it "
                               "came from")
        body = {"name": name, "type": self.kind, "paths": self._paths, "description": description,
                "tags": dict(tags or {}), "create_new_version": create_new_version, "options": self._options}
        if self._format is not None:
            body["format"] = self._format
        details = workspace.client.post(api_path("workspaces", workspace.name, "datasets"), body)
        return _of(workspace, details)

    # --- a registered version -------------------------------------------------------------------
    @property
    def details(self) -> dict:
        if self._details is None:
            raise InvalidError("this dataset is not registered: register it first")
        return self._details

    @property
    def name(self) -> str | None:
        return self._details["name"] if self._details else None

    @property
    def version(self) -> int | None:
        return self._details["version"] if self._details else None

    @property
    def id(self) -> str | None:
        return f"{self.name}:{self.version}" if self._details else None

    @property
    def fingerprint(self) -> str:
        return self.details["fingerprint"]

    @property
    def tags(self) -> dict:
        return dict(self.details["tags"])

    @property
    def description(self) -> str:
        return self.details["description"]

    def verify(self) -> dict:
        """Lists the data again: `matches` says whether it is still what this version registered; `changed`,
        `added` and `removed` say what moved."""
        return self.workspace.client.get(self._path("verification"))

    def runs(self) -> list[dict]:
        """The runs that read this version ({run_id, input, at}), in the order they were submitted."""
        return self.workspace.client.get(self._path("runs"))["runs"]

    def unregister(self) -> None:
        """Unregisters this version; the data stays where it is."""
        self.workspace.client.request("DELETE", self._path())

    def as_named_input(self, name: str) -> "DatasetConsumptionConfig":
        """This version as an input of a submitted run, under `name`: put it in a ScriptRunConfig's
        arguments (it becomes the files' local folder there) or inputs, then read
        Run.get_context().input_datasets[name] in the script."""
        return DatasetConsumptionConfig(name, self)

    def as_download(self) -> "DatasetConsumptionConfig":
        """As an input named after the dataset, downloaded."""
        return self.as_named_input(self.name or "input").as_download()

    def as_mount(self) -> "DatasetConsumptionConfig":
        return self.as_named_input(self.name or "input").as_mount()

    def files(self) -> list[dict]:
        """The version's files as registered: [{datastore, path, size}]."""
        return list(self.workspace.client.paged(self._path("files"), "files", {"max_results": 1000}))

    # --- the data on this machine ---------------------------------------------------------------
    def is_cached(self) -> bool:
        """Whether this machine's cache holds every file of the version (a download then fetches nothing)."""
        folder = cache_root() / "datasets" / self.fingerprint
        return folder.is_dir() and all(_cached(folder, f) for f in self.files())

    def _fetch(self, show_progress: bool | None = None) -> tuple[Path, list[dict]]:
        """The version's files in the local cache (fetching only what it lacks): (its folder, the files)."""
        files = self.files()
        folder = cache_root() / "datasets" / self.fingerprint
        missing = [f for f in files if not _cached(folder, f)]
        client = self.workspace.client
        with ProgressBar(sum(f["size"] for f in missing), self.id or "", enabled=wanted(show_progress)) as bar:
            for start in range(0, len(missing), BATCH):
                batch = [{"datastore": f["datastore"], "path": f["path"]} for f in missing[start:start + BATCH]]
                links = client.post(self._path("downloads"), {"files": batch}, retry=True)["downloads"]
                parallel(lambda link: client.download(link["url"], _in_cache(folder, link), bar.update), links)
        return folder, files

    def download(self, target_path: str | os.PathLike | None = None, overwrite: bool = False,
                 show_progress: bool | None = None) -> list[str]:
        """The files under `target_path` (default: a new folder in the current one named after the
        dataset), at their paths on their datastore (under the datastore's name when the dataset reads
        several). Fetched once per machine; a local file that exists is kept unless `overwrite`."""
        folder, files = self._fetch(show_progress)
        target = Path(target_path) if target_path is not None else Path(f"{self.name}-{self.version}")
        several = len({f["datastore"] for f in files}) > 1
        written = []
        for file in files:
            destination = inside(target, f"{file['datastore']}/{file['path']}" if several else file["path"])
            if overwrite or not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                _place(_in_cache(folder, file), destination)
            written.append(str(destination))
        return written

    def to_path(self) -> list[str]:
        """The files' paths, as download writes them."""
        files = self.files()
        several = len({f["datastore"] for f in files}) > 1
        return [f"{f['datastore']}/{f['path']}" if several else f["path"] for f in files]

    def _path(self, *more: str) -> str:
        details = self.details
        return api_path("workspaces", self.workspace.name, "datasets", details["name"], "versions",
                        str(details["version"]), *more)

    def __repr__(self) -> str:
        if self._details:
            return f"{type(self).__name__}(name={self.name!r}, version={self.version})"
        return f"{type(self).__name__}(paths={self._paths!r})"


class FileDataset(_Dataset):
    """Files on datastores: download them, or read their paths."""

    kind = "file"


class TabularDataset(_Dataset):
    kind = "tabular"

    @property
    def schema(self) -> list[dict]:
        return list(self.details.get("schema") or [])

    @property
    def row_count(self) -> int:
        return self.details["row_count"]

    def get_profile(self) -> list[dict]:
        """One entry per column: type, missing, distinct, and min, max, mean where they apply."""
        return list(self.details.get("profile") or [])

    def preview(self) -> dict:
        return dict(self.details.get("preview") or {})

    def take(self, count: int) -> "TabularDataset":
        """The first `count` rows, as a dataset of its own (applied when the data is read)."""
        return self._derived(("take", _row_count(count)))

    def skip(self, count: int) -> "TabularDataset":
        """Every row after the first `count`."""
        return self._derived(("skip", _row_count(count)))

    def random_split(self, percentage: float, seed: int | None = None) -> tuple["TabularDataset", "TabularDataset"]:
        """Two datasets: about `percentage` of the rows, and the rest; the same seed splits the same way."""
        if not 0 < percentage < 1:
            raise InvalidError("percentage must be between 0 and 1")
        seed = seed if seed is not None else random.randrange(2**31)
        return self._derived(("split", percentage, seed, True)), self._derived(("split", percentage, seed, False))

    def to_pandas_dataframe(self, show_progress: bool | None = None) -> "pandas.DataFrame":
        """The rows, read with pyarrow from the locally cached files, as a pandas DataFrame."""
        table = self._to_arrow(show_progress)
        return table.to_pandas()

    def _to_arrow(self, show_progress: bool | None = None):
        from nimbus import tabular_reader  # here: pyarrow and pandas load only for tabular data

        folder, files = self._fetch(show_progress)
        details = self.details
        table = tabular_reader.read([_in_cache(folder, f) for f in files], details["format"], details["options"])
        for transform in self._transforms:
            table = tabular_reader.transform(table, transform)
        return table

    def _derived(self, transform: tuple) -> "TabularDataset":
        return TabularDataset(self._paths, self._format, self._options, workspace=self.workspace,
                              details=self._details, transforms=(*self._transforms, transform))


def _row_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidError("count must be a whole number from 0")
    return count


class DatasetConsumptionConfig:
    """A registered dataset version as a run's named input, and how the run gets it: `download` (its
    files in a folder before the script starts), `mount` (the same where no FUSE mount is made, said in
    the run's log), or `direct` (the dataset itself: a TabularDataset to read)."""

    MODES = ("direct", "download", "mount")

    def __init__(self, name: str, dataset: "_Dataset", mode: str = "direct"):
        if not isinstance(name, str) or not INPUT_NAME.fullmatch(name):
            raise InvalidError(f"input name {name!r} must be 1-64 letters, digits and '_', not starting with a digit")
        if dataset._details is None:
            raise InvalidError("a run's input is a registered dataset: register it first")
        if mode not in self.MODES:
            raise InvalidError(f"mode must be one of {', '.join(self.MODES)}")
        self.name, self.dataset, self.mode = name, dataset, mode

    def as_download(self) -> "DatasetConsumptionConfig":
        return DatasetConsumptionConfig(self.name, self.dataset, "download")

    def as_mount(self) -> "DatasetConsumptionConfig":
        return DatasetConsumptionConfig(self.name, self.dataset, "mount")

    @property
    def placeholder(self) -> str:
        """What stands for the input in a run's arguments until the runner puts the local path there."""
        return input_placeholder(self.name)

    def to_wire(self) -> dict:
        return {"name": self.name, "dataset": self.dataset.name, "version": self.dataset.version, "mode": self.mode}

    def __repr__(self) -> str:
        return f"DatasetConsumptionConfig(name={self.name!r}, dataset={self.dataset.id!r}, mode={self.mode!r})"


class OutputFileDatasetConfig:
    """A folder a run's script writes that is uploaded to a datastore when the script succeeds and, with
    register_on_complete, registered as a new version of a file dataset. `destination` is (datastore, path);
    `{run-id}` in the path becomes the run's id (the default path is `outputs/{run-id}/<name>`)."""

    def __init__(self, name: str, destination: "tuple[Any, str] | None" = None):
        if not isinstance(name, str) or not INPUT_NAME.fullmatch(name):
            raise InvalidError(f"output name {name!r} must be 1-64 letters, digits and '_', not starting with a digit")
        datastore, path = destination if destination is not None else ("workspaceblobstore", None)
        self.name = name
        self.datastore = datastore if isinstance(datastore, str) else datastore.name
        self.path = path or f"outputs/{{run-id}}/{name}"
        self.dataset_name: str | None = None

    def register_on_complete(self, name: str) -> "OutputFileDatasetConfig":
        """Register what the run wrote as a new version of file dataset `name` when the run succeeds."""
        self.dataset_name = name
        return self

    @property
    def placeholder(self) -> str:
        """What stands for the output in a run's arguments until the runner puts its local folder there."""
        return "${{outputs." + self.name + "}}"

    def to_wire(self) -> dict:
        wire = {"name": self.name, "datastore": self.datastore, "path": self.path}
        if self.dataset_name:
            wire["register_as"] = self.dataset_name
        return wire

    def __repr__(self) -> str:
        return f"OutputFileDatasetConfig(name={self.name!r}, destination=({self.datastore!r}, {self.path!r}))"


def input_placeholder(name: str) -> str:
    return "${{inputs." + name + "}}"


def input_entries(environ=os.environ, variable: str = INPUTS_ENV) -> dict[str, dict]:
    """A submitted run's inputs as its runner made them ready ({name: {dataset, version, mode, type, path}}),
    or with OUTPUTS_ENV its outputs' folders ({name: {path, datastore, destination}})."""
    text = environ.get(variable)
    if not text:
        return {}
    try:
        entries = json.loads(text)
    except ValueError:
        raise InvalidError(f"{variable} is not the JSON the runner writes") from None
    return entries if isinstance(entries, dict) else {}


# --- making and finding datasets --------------------------------------------------------------------
def _sources(path: Any) -> list[dict]:
    """[{datastore, path}] from (datastore, path) pairs (a Datastore or its name)."""
    pairs = [path] if isinstance(path, tuple) else list(path)
    sources = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2 or not isinstance(pair[1], str):
            raise InvalidError("give paths as (datastore, path) pairs, for example (ws.get_default_datastore(), "
                               "'data/*.csv')")
        datastore = pair[0] if isinstance(pair[0], str) else pair[0].name
        sources.append({"datastore": datastore, "path": pair[1]})
    if not sources:
        raise InvalidError("give at least one (datastore, path) pair")
    return sources


class _FileFactory:
    @staticmethod
    def from_files(path: Any) -> FileDataset:
        """Files, folders or globs (`*`, `?`, `[…]`, `**`) on datastores: (datastore, path) pairs."""
        return FileDataset(_sources(path))


class _TabularFactory:
    @staticmethod
    def from_delimited_files(path: Any, separator: str = ",", header: bool = True,
                             encoding: str = "utf8") -> TabularDataset:
        """CSV, TSV or any one-character separator; `header` False names the columns f0, f1, …"""
        return TabularDataset(_sources(path), "delimited", {"separator": separator, "header": header,
                                                            "encoding": encoding})

    @staticmethod
    def from_parquet_files(path: Any) -> TabularDataset:
        return TabularDataset(_sources(path), "parquet")

    @staticmethod
    def from_json_lines_files(path: Any) -> TabularDataset:
        return TabularDataset(_sources(path), "json_lines")


class Dataset:
    """`Dataset.File.from_files`, `Dataset.Tabular.from_delimited_files` …, `Dataset.get_by_name`."""

    File = _FileFactory
    Tabular = _TabularFactory

    @staticmethod
    def get_by_name(workspace: "Workspace", name: str, version: int | str = "latest") -> FileDataset | TabularDataset:
        """A registered version (the latest by default); NotFoundError names what is missing."""
        details = workspace.client.get(api_path("workspaces", workspace.name, "datasets", name, "versions",
                                                str(version)))
        return _of(workspace, details)

    @staticmethod
    def list(workspace: "Workspace") -> list[FileDataset | TabularDataset]:
        """Every dataset's latest version."""
        reply = workspace.client.get(api_path("workspaces", workspace.name, "datasets"))
        return [_of(workspace, details) for details in reply["datasets"]]

    @staticmethod
    def versions(workspace: "Workspace", name: str) -> list[FileDataset | TabularDataset]:
        reply = workspace.client.get(api_path("workspaces", workspace.name, "datasets", name, "versions"))
        return [_of(workspace, details) for details in reply["versions"]]


def _of(workspace: "Workspace", details: dict) -> FileDataset | TabularDataset:
    kind = FileDataset if details["type"] == "file" else TabularDataset
    return kind(details["paths"], details.get("format"), details.get("options"), workspace=workspace,
                details=details)


# --- the local cache ----------------------------------------------------------------------------------
def _in_cache(folder: Path, file: dict) -> Path:
    return inside(folder, f"{file['datastore']}/{file['path']}")


def _cached(folder: Path, file: dict) -> bool:
    try:
        return _in_cache(folder, file).stat().st_size == file["size"]
    except FileNotFoundError:
        return False


def _place(source: Path, destination: Path) -> None:
    """A copy of the cached file (not a link: a change to the copy must not change the cache)."""
    partial = destination.with_name(f".{destination.name}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, destination)

