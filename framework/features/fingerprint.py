"""Dataset fingerprints: what exactly a training set was built from.

A fingerprint is SHA-256 over three digests: the Feast definitions used (specs
without bookkeeping timestamps), the entity frame (content in row order,
independent of batching) and the identities of the source files (path, size,
modification time).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_VOLATILE = {"meta", "created_timestamp", "last_updated_timestamp"}


def _canonical(message: Any) -> Any:
    """Clear what is not the definition itself, in place: bookkeeping timestamps (Feast
    stamps some objects when loaded) and where a file source lives (its path moves
    with the checkout or the shared mount; which files a dataset read is recorded by
    :func:`source_identities`)."""
    from google.protobuf.descriptor import FieldDescriptor

    if message.DESCRIPTOR.full_name == "feast.core.DataSource.FileOptions":
        message.ClearField("uri")
    for desc, value in message.ListFields():
        if desc.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if desc.name in _VOLATILE:
            message.ClearField(desc.name)
        elif desc.message_type.GetOptions().map_entry:
            if desc.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE:
                for item in value.values():
                    _canonical(item)
        elif desc.is_repeated:
            for item in value:
                _canonical(item)
        else:
            _canonical(value)
    return message


def definitions_digest(views: list[Any], odfvs: list[Any], refs: list[str]) -> str:
    """SHA-256 of the Feast specs of the views and on-demand views used, and the refs."""
    h = hashlib.sha256()
    for view in sorted(views, key=lambda v: v.name):
        h.update(_canonical(view.to_proto().spec).SerializeToString(deterministic=True))
    for odfv in sorted(odfvs, key=lambda v: v.name):
        spec = _canonical(odfv.to_proto().spec)
        spec.write_to_online_store = False
        # The UDF's dill pickle is not stable across processes (it serialises sets of
        # global names in hash-seed order); its source text, which stays, is.
        for holder in (spec.feature_transformation, spec):
            udf = getattr(holder, "user_defined_function", None)
            if udf is not None and udf.body_text:
                udf.ClearField("body")
        h.update(spec.SerializeToString(deterministic=True))
    h.update(json.dumps(refs).encode())
    return h.hexdigest()


def source_identities(files: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    """Path, size and modification time of every source file, per view."""
    out = []
    for view, paths in files:
        for f in paths:
            st = os.stat(f)
            out.append({"view": view, "path": f, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def fingerprint(definitions: str, entity_digest: str, sources: list[dict[str, Any]]) -> str:
    payload = json.dumps(
        {"definitions": definitions, "entities": entity_digest, "sources": sources},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class EntityHasher:
    """SHA-256 of the entity columns, in row order, independent of how rows are batched.

    Each column feeds its own digests: validity (one byte per row), then fixed-width
    values, or for text the lengths and the bytes separately. Those streams are the
    same however the rows are cut into batches, so an entity frame has one digest
    whether it came from pandas, Arrow or Parquet, in batches of any size.
    """

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.parts: dict[str, list[Any]] = {
            c: [hashlib.sha256(), hashlib.sha256(), hashlib.sha256()] for c in columns
        }
        self.types: dict[str, str] = {}

    def update(self, batch: pa.RecordBatch) -> None:
        for name in self.columns:
            arr = batch.column(name)
            validity, values, extra = self.parts[name]
            self.types[name] = str(arr.type)
            validity.update(pc.is_valid(arr).to_numpy(zero_copy_only=False).tobytes())
            kind = arr.type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                texts = arr.fill_null("").to_pylist()
                encoded = [t.encode() for t in texts]
                extra.update(pa.array([len(e) for e in encoded], pa.int64()).to_numpy().tobytes())
                values.update(b"".join(encoded))
            elif pa.types.is_timestamp(kind) or pa.types.is_date(kind):
                micros = arr.cast(pa.timestamp("us", tz="UTC") if pa.types.is_timestamp(kind)
                                  else pa.date32()).cast(pa.int64())  # fmt: skip
                values.update(micros.fill_null(0).to_numpy().tobytes())
            elif pa.types.is_boolean(kind):  # one byte per row; a null counts as False
                values.update(arr.fill_null(False).to_numpy(zero_copy_only=False).tobytes())
            elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
                values.update(arr.fill_null(0).to_numpy(zero_copy_only=False).tobytes())
            else:  # anything else: its text form, length-prefixed
                encoded = [repr(v).encode() for v in arr.to_pylist()]
                extra.update(pa.array([len(e) for e in encoded], pa.int64()).to_numpy().tobytes())
                values.update(b"".join(encoded))

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for name in self.columns:
            h.update(f"{name}:{self.types.get(name, '')}".encode())
            for part in self.parts[name]:
                h.update(part.digest())
        return h.hexdigest()
