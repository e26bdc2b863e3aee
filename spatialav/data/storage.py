"""Writing and reading spatialav datasets as TFDS array_record datasets, without TensorFlow.

Layout (TFDS's own, so ``tfds.builder_from_directory`` / ``tfds.data_source`` read it)::

    <root>/<name>/<config>/<version>/
        <name>-<split>.array_record-00000-of-000NN   one record per clip (a tf.train.Example)
        features.json       the FeaturesDict (spatialav.data.schema.features)
        metadata.json       {"spec": DatasetSpec.to_json(), ...} (dataset-level facts)
        dataset_info.json   splits and shard lengths; written last, so it marks completion

Records are serialized by TFDS's own numpy path (``FeaturesDict.encode_example`` and
``example_serializer``, which build the proto with TFDS's bundled ``tf_example_pb2``) and
written by TFDS's ``ArrayRecordFileAdapter``; reading uses TFDS's ``ArrayRecordDataSource``,
which parses with ``ExampleParserNp``. None of this imports TensorFlow. Serialization uses
``deterministic=True`` so that equal examples give equal bytes in every process (protobuf
map order is otherwise unspecified).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer, file_adapters

from spatialav.data import schema

FILE_FORMAT = "array_record"
_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_INFO_FILES = ("features.json", "metadata.json", "dataset_info.json")  # write order


def shard_filename(name: str, split: str, shard: int, num_shards: int) -> str:
    return f"{name}-{split}.{FILE_FORMAT}-{shard:05d}-of-{num_shards:05d}"


class Serializer:
    """Example dict -> deterministic record bytes for one FeaturesDict."""

    def __init__(self, feats: tfds.features.FeaturesDict):
        self._feats = feats
        self._proto = example_serializer.ExampleSerializer(feats.get_serialized_info())

    def __call__(self, example: Mapping) -> bytes:
        encoded = self._feats.encode_example(example)
        return self._proto.get_tf_example(encoded).SerializeToString(deterministic=True)


def write_shard(path: Path, records: Iterable[bytes]) -> None:
    """Write records to ``path`` atomically: a temp name, then a rename."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    file_adapters.ArrayRecordFileAdapter.write_examples(tmp, ((None, r) for r in records))
    os.replace(tmp, path)


def remove_temp_files(dataset_dir: Path) -> None:
    """Drop the leftovers of a killed writer (shards and info files never renamed)."""
    for p in dataset_dir.glob("*.tmp-*"):
        p.unlink()
    shutil.rmtree(dataset_dir / ".info.tmp", ignore_errors=True)


def write_info(
    dataset_dir: Path,
    *,
    name: str,
    config: str,
    version: str,
    description: str,
    spec: schema.DatasetSpec,
    shard_lengths: Mapping[str, list[int]],
    metadata: Mapping | None = None,
) -> None:
    """Write the TFDS metadata for shards already in ``dataset_dir``; ``dataset_info.json`` last.

    ``numBytes`` is the size of the shard files (deterministic, unlike anything timed).
    """
    splits = []
    for split, lengths in shard_lengths.items():
        files = [dataset_dir / shard_filename(name, split, i, len(lengths))
                 for i in range(len(lengths))]
        template = tfds.core.ShardedFileTemplate(
            data_dir=dataset_dir, template=_TEMPLATE, dataset_name=name, split=split,
            filetype_suffix=FILE_FORMAT)
        splits.append(tfds.core.SplitInfo(
            name=split, shard_lengths=list(lengths),
            num_bytes=sum(f.stat().st_size for f in files), filename_template=template))
    info = tfds.core.DatasetInfo(
        builder=tfds.core.DatasetIdentity(
            name=name, version=version, config_name=config, data_dir=str(dataset_dir),
            module_name="spatialav.data"),
        description=description,
        features=schema.features(spec.groups),
        metadata=tfds.core.MetadataDict(spec=spec.to_json(), **(metadata or {})),
    )
    info.set_file_format(FILE_FORMAT)
    info.set_splits(tfds.core.SplitDict(splits))
    tmp = dataset_dir / ".info.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    info.write_to_directory(tmp)
    for fname in _INFO_FILES:
        os.replace(tmp / fname, dataset_dir / fname)
    tmp.rmdir()


# --- reading ------------------------------------------------------------------------------


def find_dataset_dir(path: str | os.PathLike) -> Path:
    """``path`` itself if it holds ``dataset_info.json``, else the one dataset below it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset path {path} does not exist")
    if (path / "dataset_info.json").is_file():
        return path
    found = sorted({p.parent for depth in ("*/", "*/*/", "*/*/*/")
                    for p in path.glob(depth + "dataset_info.json")})
    if len(found) == 1:
        return found[0]
    if found:
        listing = "\n  ".join(str(p) for p in found)
        raise ValueError(f"{path} holds {len(found)} datasets; pass one of:\n  {listing}")
    unfinished = next(path.rglob(f"*.{FILE_FORMAT}-*"), None)
    hint = (f"; {unfinished.parent} has shards but no dataset_info.json (an unfinished build? "
            "run the build again to resume it)") if unfinished else ""
    raise FileNotFoundError(
        f"no TFDS dataset at or below {path}: expected <name>/<config>/<version>/"
        f"dataset_info.json{hint}")


def load_builder(path: str | os.PathLike) -> tfds.core.DatasetBuilder:
    """The TFDS read-only builder of a spatialav dataset, its schema checked."""
    dataset_dir = find_dataset_dir(path)
    try:
        builder = tfds.builder_from_directory(dataset_dir)
    except Exception as err:  # TFDS raises protobuf / JSON / OS errors for a broken info file
        raise ValueError(f"{dataset_dir} is not a readable TFDS dataset: "
                         f"{type(err).__name__}: {err}") from None
    check_schema(dataset_dir, builder.info)
    return builder


def check_schema(dataset_dir: Path, info: tfds.core.DatasetInfo) -> None:
    """Raise ValueError unless the dataset's features and metadata are our schema's."""
    def fail(expected: str, found: str):
        raise ValueError(f"{dataset_dir} is not a spatialav dataset: expected {expected}, "
                         f"found {found}")

    if info.file_format is None or info.file_format.value != FILE_FORMAT:
        fail(f"file format {FILE_FORMAT}", str(info.file_format))
    if not isinstance(info.features, tfds.features.FeaturesDict):
        fail("a FeaturesDict", type(info.features).__name__)
    known = schema.signature(schema.features(schema.GROUPS))
    found = schema.signature(info.features)
    core = [n for n, f in schema.FIELDS.items() if f.group == "core"]
    missing = [n for n in core if n not in found]
    if missing:
        fail(f"fields {core}", f"fields {sorted(found)} (missing {missing})")
    for name, sig in found.items():
        if name not in known:
            fail(f"fields among {list(known)}", f"unknown field {name!r}")
        if sig != known[name]:
            fail(f"{name!r} with (shape, dtype) {known[name]}", str(sig))
    meta = info.metadata or {}
    version = meta.get("spec", {}).get("schema_version") if "spec" in meta else None
    if version != schema.SCHEMA_VERSION:
        fail(f"metadata.json with spec.schema_version {schema.SCHEMA_VERSION}", str(version))


def read_spec(path: str | os.PathLike) -> schema.DatasetSpec:
    """The dataset-level facts (sample rate, fps, frame size, groups) of a dataset."""
    return schema.DatasetSpec.from_json(load_builder(path).info.metadata["spec"])


def open_split(path: str | os.PathLike, split: str):
    """A random-access source over one split (TFDS ``ArrayRecordDataSource``).

    ``len(src)``; ``src[i]`` is a dict of numpy arrays with ``frames`` still JPEG bytes
    (``schema.decode_frames``), ``clip_id`` bytes, ``sample_rate`` / ``fps`` Python scalars.
    Picklable, so grain worker processes can use it.
    """
    builder = load_builder(path)
    if split not in builder.info.splits:
        raise ValueError(f"{builder.data_path} has no split {split!r}; "
                         f"it has {sorted(builder.info.splits)}")
    return builder.as_data_source(split=split)


class RecordCache:
    """A random-access source that keeps every record it has read in memory, minus the
    fields in ``drop``; later reads of a record cost a dict lookup instead of decompressing
    and parsing it. Records are shared, so readers must not modify them in place."""

    def __init__(self, source, drop=()):
        self.source, self.drop, self._records = source, frozenset(drop), {}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        record = self._records.get(index)
        if record is None:
            record = {k: v for k, v in self.source[index].items() if k not in self.drop}
            self._records[index] = record
        return record
