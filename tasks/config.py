"""Load sources.toml: the run's channels, where their data lives, and stage settings.

A mistake in the config is the most common way a run fails, so every problem is
reported as one line naming the file, the line and the key, never as a pydantic
traceback. tomllib gives no line numbers for keys; `TomlLines` finds them in the
text. Paths are resolved and checked here, so a typo fails in a second, not
after the first channels have been read.
"""

from __future__ import annotations

import codecs
import glob
import json
import re
import tomllib
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tasks.errors import ConfigError
from tasks.schema import DATASETS, SOURCE_COLUMNS, Dataset
from tasks.settings import LinkSettings, MatchSettings, ReconcileSettings

CANONICAL_COLUMNS: tuple[str, ...] = tuple(
    dict.fromkeys(column for columns in SOURCE_COLUMNS.values() for column in columns)
)
CanonicalColumn = Literal[CANONICAL_COLUMNS]  # type: ignore[valid-type]
CHANNEL_NAME = re.compile(r"[a-z][a-z0-9_]*")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: str) -> bool:
    """A location with a scheme (s3://, file://, memory://) is left to fsspec as given."""
    return bool(_URL_SCHEME.match(location))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SqlSource(_Strict):
    """A channel read from a database; the URL is a secret and never printed unredacted."""

    url: SecretStr | None = None
    url_env: str | None = Field(None, description="Environment variable holding the URL.")
    query: str = Field(description="The members query.")
    points_query: str | None = None
    balances_query: str | None = None

    @model_validator(mode="after")
    def _one_url(self) -> SqlSource:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url or url_env")
        return self

    def query_for(self, dataset: Dataset) -> str | None:
        return {"members": self.query, "points": self.points_query,
                "balances": self.balances_query}[dataset]


class PhoneHash(_Strict):
    """How this channel's platform hashed the mobile in `phone_sha256`: platforms differ.

    Only SHA-256 of the 11 digits is matched; the letter case of its hex varies.
    """

    algorithm: Literal["sha256"] = "sha256"
    case: Literal["lower", "upper"] = "lower"


class SourceConfig(_Strict):
    """One `[[sources]]` entry: a channel and where each of its datasets comes from."""

    channel: str
    members: str | None = None
    points: str | None = None
    balances: str | None = None
    encoding: str = "utf-8"
    trust: StrictInt = 1
    columns: dict[CanonicalColumn, str | list[str]] = Field(
        default_factory=dict,
        description="canonical name = column name in this source (or a list of names, "
        "when the channel's files disagree).",
    )
    sql: SqlSource | None = None
    phone_hash: PhoneHash = PhoneHash()

    @field_validator("channel")
    @classmethod
    def _channel_name(cls, value: str) -> str:
        if not CHANNEL_NAME.fullmatch(value):
            raise ValueError("a channel name is lower-case letters, digits and _, "
                             "starting with a letter")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            return codecs.lookup(value).name
        except LookupError:
            raise ValueError("unknown text encoding; use e.g. utf-8, gb18030, gbk") from None

    @model_validator(mode="after")
    def _each_dataset_once(self) -> SourceConfig:
        if self.members is None and self.sql is None:
            raise PydanticCustomError(
                "no_members", "no members; give members (a path, glob or URL) or a [sources.sql] "
                "query",
                {"at": ("members",)},
            )
        for dataset in DATASETS:
            if getattr(self, dataset) is not None and self.sql and self.sql.query_for(dataset):
                raise PydanticCustomError(
                    "conflict", "{dataset} comes from both a file and [sources.sql]; keep one",
                    {"at": (dataset,), "dataset": dataset},
                )
        return self

    def location(self, dataset: Dataset) -> str | None:
        """The path, glob or URL of a file dataset, None when it is not a file."""
        return getattr(self, dataset)

    def query(self, dataset: Dataset) -> str | None:
        """The SQL query of a dataset, None when it is not read from SQL."""
        return self.sql.query_for(dataset) if self.sql else None

    @property
    def phone_hash_case(self) -> str:
        return self.phone_hash.case

    def column_names(self, canonical: str) -> tuple[str, ...]:
        """The source column names mapped to a canonical column, in order of preference."""
        names = self.columns.get(canonical, ())
        return (names,) if isinstance(names, str) else tuple(names)


class RunSettings(_Strict):
    """`[run]`: defaults of a run; CLI flags override them."""

    warehouse: str | None = None
    as_of: date | None = None
    report_dir: Path | None = None
    raw_pii: StrictBool = False
    quarantine_alert_share: float = Field(
        0.05, ge=0, le=1, description="Share of a channel's rows in quarantine above which "
        "the run emits an alert event (automations/quarantine-share.yaml).",
    )


class RunConfig(_Strict):
    """The whole sources.toml."""

    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    run: RunSettings = RunSettings()
    matching: MatchSettings = MatchSettings()
    linkage: LinkSettings = LinkSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    config_path: Path | None = None

    @model_validator(mode="after")
    def _unique_channels(self) -> RunConfig:
        seen: set[str] = set()
        for index, source in enumerate(self.sources):
            if source.channel in seen:
                raise PydanticCustomError(
                    "duplicate_channel", 'channel "{channel}" is defined twice; rename one',
                    {"at": ("sources", index, "channel"), "channel": source.channel},
                )
            seen.add(source.channel)
        return self

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(source.channel for source in self.sources)

    @property
    def output_dir(self) -> Path:
        """Where reports and Data Docs go: [run].report_dir, else beside the config."""
        if self.run.report_dir:
            return self.run.report_dir
        base = self.config_path.parent if self.config_path else Path.cwd()
        return base / "memberlink-out"

    def source(self, channel: str) -> SourceConfig:
        return self.select_channels([channel]).sources[0]

    def select_channels(self, names: Iterable[str] | None) -> RunConfig:
        """Keep only the named channels (all when names is empty), for partial backfills."""
        wanted = {names} if isinstance(names, str) else set(names or ())
        if not wanted:
            return self
        if unknown := sorted(wanted - set(self.channels)):
            where = self.config_path.name if self.config_path else "the config"
            raise ConfigError(f'unknown channel "{unknown[0]}": {where} defines '
                              f'{", ".join(self.channels)}; pick channels from those')
        kept = tuple(source for source in self.sources if source.channel in wanted)
        return self.model_copy(update={"sources": kept})


def load_config(path: str | Path) -> RunConfig:
    """Read, validate and resolve sources.toml, or raise a one-line ConfigError."""
    path = Path(path).expanduser().resolve()
    text = _read_text(path)
    document = ConfigDocument(path.name, _parse_toml(text, path.name), TomlLines(text))
    if "config_path" in document.raw:
        raise document.error(("config_path",), 'unknown key "config_path"')
    try:
        config = RunConfig.model_validate({**document.raw, "config_path": path})
    except ValidationError as exc:
        raise document.explain(exc.errors()[0]) from None
    return _resolve_paths(config, path.parent, document)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the path of your sources.toml")
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path.name} line {line}: not UTF-8; save the config as UTF-8") from None


def _parse_toml(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        if at := re.search(r"\(at line (\d+), column (\d+)\)$", message):
            reason = message[: at.start()].strip()
            raise ConfigError(f"{name} line {at[1]}: not valid TOML: {reason} "
                              f"(column {at[2]})") from None
        raise ConfigError(f"{name}: not valid TOML: {message}") from None


# -- where a key is: line numbers and readable table names ------------------------------

_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*([\w\-.\"' ]+?)\s*\]\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[\s*([\w\-.\"' ]+?)\s*\]\s*(#.*)?$")
_KEY_PART = r"(?:\"[^\"]*\"|'[^']*'|[\w-]+)"
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_INLINE_KEY = re.compile(rf"[{{,]\s*({_KEY_PART})\s*=")


def _split_key(dotted: str) -> tuple[str, ...]:
    return tuple(a or b or c for a, b, c in re.findall(r"\"([^\"]*)\"|'([^']*)'|([\w-]+)", dotted))


class TomlLines:
    """Line number of every table and key of a TOML text, by its path in the parsed data.

    Paths index arrays of tables like the parsed data does: ("sources", 1, "members")
    is the `members` key of the second `[[sources]]`.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str | int, ...], int] = {}
        arrays: dict[tuple[str, ...], int] = {}
        table: tuple[str | int, ...] = ()
        in_string = False
        for number, line in enumerate(text.splitlines(), start=1):
            if in_string:
                in_string = not _toggles_multiline_string(line)
            elif header := _ARRAY_HEADER.match(line):
                names = _split_key(header[1])
                arrays[names] = arrays.get(names, -1) + 1
                table = self._remember(_indexed(names, arrays), number)
            elif header := _TABLE_HEADER.match(line):
                table = self._remember(_indexed(_split_key(header[1]), arrays), number)
            elif key := _KEY_LINE.match(line):
                path = self._remember(table + _split_key(key[1]), number)
                rest = line[key.end():]
                for inner in _INLINE_KEY.finditer(rest):
                    self._remember(path + _split_key(inner[1]), number)
                in_string = _toggles_multiline_string(rest)

    def _remember(self, path: tuple[str | int, ...], number: int) -> tuple[str | int, ...]:
        self._lines.setdefault(path, number)
        return path

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """The line of `path`, else of the nearest enclosing table or key that has one."""
        for end in range(len(path), 0, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return None


def _indexed(names: tuple[str, ...], arrays: dict[tuple[str, ...], int]) -> tuple[str | int, ...]:
    path: list[str | int] = []
    for end, name in enumerate(names, start=1):
        path.append(name)
        if names[:end] in arrays:
            path.append(arrays[names[:end]])
    return tuple(path)


def _toggles_multiline_string(text: str) -> bool:
    return text.count('"""') % 2 == 1 or text.count("'''") % 2 == 1


@dataclass(frozen=True)
class ConfigDocument:
    """The parsed config with its text positions, to word errors about it."""

    name: str
    raw: dict[str, Any]
    lines: TomlLines

    def error(self, path: tuple[str | int, ...], problem: str, hint: str = "") -> ConfigError:
        line = self.lines.line_of(path)
        at = f"{self.name} line {line}" if line else self.name
        return ConfigError(f"{at}: {problem} in {self._table_name(path)}{hint}")

    def explain(self, error: Any) -> ConfigError:
        """Turn pydantic's first error into one line about a key of the file."""
        custom_at = error.get("ctx", {}).get("at")
        loc = tuple(error["loc"]) + tuple(custom_at or ())
        path = self._present_prefix(loc, keep_missing=error["type"] == "missing")
        key = path[-1] if path and isinstance(path[-1], str) else None
        if error["type"] == "extra_forbidden":
            known = ", ".join(_known_keys(path[:-1]))
            return self.error(path, f'unknown key "{key}"', f" (known: {known})")
        if loc[-1] == "[key]":
            return self.error(path, f'"{key}" is not a canonical column',
                              f" (known: {', '.join(CANONICAL_COLUMNS)}); the key is the "
                              "canonical name, the value the column name in your file")
        if error["type"] == "missing":
            hint = "; add one [[sources]] entry per channel" if path == ("sources",) else ""
            return self.error(path, f'missing key "{key}"', hint)
        message = re.sub(r"^(Value error|Assertion failed), ", "", error["msg"])
        problem, _, hint = message.partition("; ")
        if not custom_at and (shown := self._shown(path)):
            problem = f"{shown}: {problem[:1].lower()}{problem[1:]}"
        return self.error(path, problem, f"; {hint}" if hint else "")

    def _present_prefix(self, loc: tuple, keep_missing: bool) -> tuple[str | int, ...]:
        """The part of an error location that exists in the file (plus a missing key)."""
        node: Any = self.raw
        for end, part in enumerate(loc):
            if not _has(node, part):
                missing_key = keep_missing and isinstance(part, str)
                return tuple(loc[: end + 1 if missing_key else end])
            node = node[part]
        return tuple(loc)

    def _value(self, path: tuple[str | int, ...]) -> Any:
        node: Any = self.raw
        for part in path:
            if not _has(node, part):
                return None
            node = node[part]
        return node

    def _shown(self, path: tuple[str | int, ...]) -> str | None:
        """`key = value` as written, to quote the offending line; None for a table."""
        value = self._value(path)
        if not path or not isinstance(path[-1], str) or isinstance(value, dict):
            return None
        if value is None:
            return path[-1]
        return f"{path[-1]} = {json.dumps(value, ensure_ascii=False, default=str)[:80]}"

    def _table_name(self, path: tuple[str | int, ...]) -> str:
        if len(path) >= 2 and path[0] == "sources" and isinstance(path[1], int):
            channel = self._value(("sources", path[1], "channel"))
            entry = f'channel "{channel}"' if isinstance(channel, str) else f"#{path[1] + 1}"
            if len(path) >= 3 and isinstance(self._value(path[:3]), dict):
                return f"[sources.{path[2]}] of [[sources]] {entry}"
            return f"[[sources]] {entry}"
        if len(path) > 1:
            return f"[{path[0]}]"
        return "the top level"


def _has(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and part < len(node)


def _known_keys(path: tuple[str | int, ...]) -> list[str]:
    """Field names of the model at `path`, for "unknown key" messages."""
    model: type[BaseModel] = RunConfig
    for part in path:
        if not isinstance(part, str) or part not in model.model_fields:
            continue
        found = _model_in(model.model_fields[part].annotation)
        if found is None:
            return []
        model = found
    return [name for name in model.model_fields if name != "config_path"]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if found := _model_in(argument):
            return found
    return None


# -- paths -------------------------------------------------------------------------------

def _resolve_paths(config: RunConfig, base_dir: Path, document: ConfigDocument) -> RunConfig:
    sources = tuple(
        _resolve_source(source, index, base_dir, document)
        for index, source in enumerate(config.sources)
    )
    run = config.run.model_copy(update={
        "warehouse": _resolve_warehouse(config.run.warehouse, base_dir),
        "report_dir": base_dir / config.run.report_dir if config.run.report_dir else None,
    })
    decisions = config.linkage.decisions
    linkage = config.linkage.model_copy(update={
        "decisions": resolve_location(decisions, base_dir) if decisions else None,
    })
    return config.model_copy(update={"sources": sources, "run": run, "linkage": linkage})


def resolve_location(location: str, base_dir: Path) -> str:
    """An absolute path for a local path or glob; a URL with a scheme as given."""
    if is_url(location):
        return location
    return str((base_dir / Path(location).expanduser()).resolve())


def _resolve_warehouse(warehouse: str | None, base_dir: Path) -> str | None:
    if warehouse is None or is_url(warehouse) or warehouse.startswith(":"):
        return warehouse
    return resolve_location(warehouse, base_dir)


def _resolve_source(
    source: SourceConfig, index: int, base_dir: Path, document: ConfigDocument
) -> SourceConfig:
    resolved: dict[str, str] = {}
    for dataset in DATASETS:
        location = source.location(dataset)
        if location is None:
            continue
        resolved[dataset] = resolve_location(location, base_dir)
        if not is_url(location) and not _local_files_exist(resolved[dataset]):
            kind = "no file matches" if glob.has_magic(location) else "no file at"
            raise document.error(
                ("sources", index, dataset), f"{kind} {resolved[dataset]} for {dataset}",
                f"; relative paths start from {base_dir}",
            )
    return source.model_copy(update=resolved)


def _local_files_exist(path: str) -> bool:
    if glob.has_magic(path):
        return any(Path(match).is_file() for match in glob.iglob(path, recursive=True))
    return Path(path).is_file()
