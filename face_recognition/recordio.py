"""MXNet RecordIO face packs (insightface ``train.rec`` + ``train.idx`` + ``property``) in plain Python, no mxnet.

The training data of paper §5.1 is also distributed pre-aligned in this format (insightface's 112 x 112
"VGG2" / MS1M packs, shared/research/anchors_recog_au_emotion.md §2). Format facts, read from:
- dmlc/dmlc-core ``include/dmlc/recordio.h``, ``src/recordio.cc`` (framing): a record is ``uint32 magic
  0xced7230a``, ``uint32 lrecord`` (cflag = bits 29-31, length = bits 0-28), the data, zero padding to 4
  bytes. The writer splits a payload wherever the magic word sits at a 4-aligned position: parts flagged
  1 (first), 2 (middle), 3 (last), the magic word itself dropped; the reader joins them putting it back.
- apache/mxnet ``python/mxnet/recordio.py`` (``MXIndexedRecordIO``, ``pack`` / ``unpack``): the ``.idx`` is
  text lines ``key\\toffset``; a payload starts with ``IRHeader = struct 'IfQQ' (flag, label, id, id2)``;
  with ``flag > 0`` the label field is 0 and ``flag`` float32 labels follow; then the encoded image.
- deepinsight/insightface ``recognition/arcface_mxnet/common/rec_builder.py`` (``RecBuilder``) and
  ``recognition/arcface_torch/dataset.py`` (``MXFaceDataset``): images are records ``1 .. start-1`` (JPEG,
  label = identity), then one record per identity ``start .. end-1`` whose 2 labels are its image key range
  ``[a, b)``; record 0 (written last) has labels ``(start, end)``. Without that header record (flag 0 at key
  0) every key is an image. ``property`` holds ``num_classes,height,width``.
Reads use ``os.pread`` on a descriptor opened lazily in each process, so a reader is safe to share with
forked DataLoader workers.
"""
import os
import struct
import warnings
from collections import namedtuple

import numpy as np

MAGIC = 0xCED7230A
MAGIC_BYTES = struct.pack("<I", MAGIC)
LENGTH_BITS = 29
IR_FORMAT = "<IfQQ"                              # flag, label, id, id2 (24 bytes, as mxnet's native 'IfQQ')
IR_SIZE = struct.calcsize(IR_FORMAT)
IRHeader = namedtuple("IRHeader", "flag label id id2")


class RecordIOError(ValueError):
    """A malformed RecordIO pack (the message names the file)."""


def frame_record(payload):
    """The bytes dmlc's ``RecordIOWriter::WriteRecord`` writes for ``payload`` (magic-word splitting, padding)."""
    payload = bytes(payload)
    if len(payload) >= 1 << LENGTH_BITS:
        raise ValueError(f"a RecordIO record holds < 2^{LENGTH_BITS} bytes, got {len(payload)}")
    words = np.frombuffer(payload, "<u4", len(payload) // 4)
    cuts = (np.flatnonzero(words == MAGIC) * 4).tolist()
    starts, ends = [0] + [c + 4 for c in cuts], cuts + [len(payload)]
    flags = [0] if not cuts else [1] + [2] * (len(cuts) - 1) + [3]
    out = []
    for flag, start, end in zip(flags, starts, ends):
        out += [MAGIC_BYTES, struct.pack("<I", flag << LENGTH_BITS | (end - start)), payload[start:end]]
    out.append(b"\0" * (-len(payload) % 4))
    return b"".join(out)


def pack_record(label, data=b"", key=0, id2=0):
    """mxnet ``recordio.pack``: IRHeader + (labels when ``label`` is a sequence) + ``data``."""
    if np.ndim(label) == 0:
        return struct.pack(IR_FORMAT, 0, float(label), key, id2) + bytes(data)
    labels = np.asarray(label, dtype="<f4").reshape(-1)
    return struct.pack(IR_FORMAT, labels.size, 0.0, key, id2) + labels.tobytes() + bytes(data)


def unpack_record(payload, where="record"):
    """(IRHeader, image bytes) of a payload (mxnet ``recordio.unpack``); label is a float, or a float32 array."""
    if len(payload) < IR_SIZE:
        raise RecordIOError(f"{where}: {len(payload)} bytes, shorter than the {IR_SIZE}-byte IRHeader")
    header = IRHeader(*struct.unpack_from(IR_FORMAT, payload))
    if header.flag == 0:
        return header, payload[IR_SIZE:]
    end = IR_SIZE + 4 * header.flag
    if len(payload) < end:
        raise RecordIOError(f"{where}: IRHeader flag {header.flag} needs {end} bytes, record has {len(payload)}")
    labels = np.frombuffer(payload, "<f4", header.flag, IR_SIZE).copy()
    return header._replace(label=labels), payload[end:]


def first_label(header):
    """The class label of an image record (insightface takes ``label[0]`` when there are several)."""
    return float(header.label) if header.flag == 0 else float(header.label[0])


def read_index(path):
    """(keys, byte offsets) int64 arrays of an ``.idx`` file (``key\\toffset`` lines), in file order."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"RecordIO index not found: {path}")
    with open(path, "rb") as f:
        data = f.read()
    lines = sum(1 for line in data.splitlines() if line.strip())
    try:                                                  # numpy's C text parser: ~0.4 s per million lines
        with warnings.catch_warnings():
            warnings.simplefilter("error")                # a partial parse only warns otherwise
            values = np.fromstring(data.decode("ascii"), dtype=np.int64, sep=" ")
        if values.size != 2 * lines or data.count(b"\t") != lines:
            raise ValueError("not two tab-separated numbers per line")
    except (ValueError, UnicodeDecodeError, DeprecationWarning):
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            fields = line.split("\t")
            if line.strip() and (len(fields) != 2 or not all(v.strip().isdigit() for v in fields)):
                raise RecordIOError(f"{path}:{number}: expected 'key<TAB>offset', got {line[:60]!r}") from None
        raise RecordIOError(f"{path}: not an index of 'key<TAB>offset' lines") from None
    table = values.reshape(-1, 2)
    if not len(table):
        raise RecordIOError(f"{path}: the index lists no records")
    keys = np.sort(table[:, 0])
    if (keys[1:] == keys[:-1]).any():
        raise RecordIOError(f"{path}: key {keys[1:][keys[1:] == keys[:-1]][0]} is listed twice")
    return table[:, 0], table[:, 1]


def read_property(path):
    """(num_classes, height, width) from insightface's ``property`` file (first line ``n,h,w``)."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    try:
        num_classes, height, width = (int(v) for v in first.split(","))
    except ValueError:
        raise RecordIOError(f"{path}:1: expected 'num_classes,height,width', got {first!r}") from None
    return num_classes, height, width


class IndexedRecordReader:
    """Random access to the records of a ``.rec`` by key through its ``.idx`` offsets (mxnet MXIndexedRecordIO).

    The file is opened lazily, once per process; a truncated file or one that is not RecordIO raises on
    construction (the record at key 0 and the last record by offset are read)."""

    def __init__(self, rec_path, idx_path):
        if not os.path.isfile(rec_path):
            raise FileNotFoundError(f"RecordIO file not found: {rec_path}")
        self.rec_path, self.idx_path = rec_path, idx_path
        keys, offsets = read_index(idx_path)
        order = np.argsort(keys)
        self.keys, self.offsets = keys[order], offsets[order]
        self._fd = self._pid = None
        size = os.path.getsize(rec_path)
        if self.offsets.min() < 0 or self.offsets.max() >= size:
            raise RecordIOError(f"{rec_path}: {idx_path} points to byte {self.offsets.max()} but the file has "
                                f"{size} bytes (truncated?)")
        for offset in {int(self.offsets[0]), int(self.offsets.max())}:
            self.read_at(offset)

    def __getstate__(self):
        return {**self.__dict__, "_fd": None, "_pid": None}         # a worker opens its own descriptor

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __len__(self):
        return len(self.keys)

    def _pread(self, n, offset):
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
        return os.pread(self._fd, n, offset)

    def offset(self, key):
        """Byte offset of record ``key`` (RecordIOError when the index lacks it)."""
        pos = int(np.searchsorted(self.keys, key))
        if pos == len(self.keys) or self.keys[pos] != key:
            raise RecordIOError(f"{self.idx_path}: no record with key {key}")
        return int(self.offsets[pos])

    def read_at(self, offset, limit=None):
        """The payload of the record starting at byte ``offset`` (its first ``limit`` bytes when given)."""
        parts, size, first = [], 0, True
        while limit is None or size < limit:
            head = self._pread(8, offset)
            if len(head) < 8:
                raise RecordIOError(f"{self.rec_path}: record at byte {offset} is cut short (end of file)")
            magic, lrecord = struct.unpack("<II", head)
            if magic != MAGIC:
                raise RecordIOError(f"{self.rec_path}: no RecordIO magic at byte {offset} (found {magic:#010x}): "
                                    "not a .rec file, or an .idx offset that does not match it")
            flag, length = lrecord >> LENGTH_BITS, lrecord & ((1 << LENGTH_BITS) - 1)
            if flag not in ((0, 1) if first else (2, 3)):
                raise RecordIOError(f"{self.rec_path}: record part at byte {offset} has continuation flag {flag}")
            stored = length + (-length % 4)                               # data and padding
            want = stored if limit is None else min(length, limit - size)
            body = self._pread(want, offset + 8)
            if len(body) < want:
                raise RecordIOError(f"{self.rec_path}: record at byte {offset} is cut short (end of file)")
            parts.append(body[:length])
            size += min(len(body), length)
            if flag in (0, 3):
                break
            parts.append(MAGIC_BYTES)
            size += 4
            offset += 8 + stored
            first = False
        payload = b"".join(parts)
        return payload if limit is None else payload[:limit]

    def read(self, key):
        """The payload of record ``key``."""
        return self.read_at(self.offset(key))

    def header(self, key):
        """The IRHeader of record ``key``, reading only its first bytes."""
        where, offset = f"{self.rec_path} key {key}", self.offset(key)
        head = self.read_at(offset, IR_SIZE)
        flag = struct.unpack_from("<I", head)[0] if len(head) >= 4 else 0
        return unpack_record(self.read_at(offset, IR_SIZE + 4 * flag) if flag else head, where)[0]


def pack_index(reader):
    """Image keys and class labels of an insightface pack: {"keys", "labels" (int64), "header" (start, end) or
    None, "ranges" (identities x 2 key ranges) or None}. With the header record the labels come from the first
    image of each identity range (one read per identity, as the packs are built: ``RecBuilder.add``)."""
    rec = reader.rec_path
    head = reader.header(0) if np.isin(0, reader.keys) else None
    if head is None or head.flag < 2:                    # no header record (MXFaceDataset: flag 0): all images
        keys = reader.keys
        labels = np.array([first_label(reader.header(int(k))) for k in keys])
        return {"keys": keys, "labels": _integral(labels, rec), "header": None, "ranges": None}
    start, end = int(head.label[0]), int(head.label[1])
    ranges = _integral(np.array([_key_range(reader, k) for k in range(start, end)]).reshape(-1, 2), rec)
    if not (1 <= start <= end) or (len(ranges) and (ranges.min() < 1 or ranges.max() > start
                                                    or (ranges[:, 1] < ranges[:, 0]).any())):
        raise RecordIOError(f"{rec}: header record (start {start}, end {end}) or identity ranges out of order")
    keys = np.arange(1, start, dtype=np.int64)
    labels = np.full(len(keys), np.nan)
    for a, b in ranges:
        if b > a:
            labels[a - 1:b - 1] = first_label(reader.header(int(a)))
    loose = np.flatnonzero(np.isnan(labels))                             # images outside every identity range
    labels[loose] = [first_label(reader.header(int(keys[i]))) for i in loose]
    present = np.isin(keys, reader.keys)
    if not present.all():
        raise RecordIOError(f"{reader.idx_path}: {int((~present).sum())} image keys below {start} are not indexed, "
                            f"e.g. {keys[~present][:3].tolist()}")
    return {"keys": keys, "labels": _integral(labels, rec), "header": (start, end), "ranges": ranges}


def _key_range(reader, key):
    """The [a, b) image key range held by identity record ``key``."""
    header = reader.header(key)
    if header.flag < 2:
        raise RecordIOError(f"{reader.rec_path}: identity record {key} holds no (start, end) key range")
    return header.label[:2]


def _integral(values, where):
    """``values`` as int64, raising naming ``where`` unless they are whole non-negative numbers."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all() or (values != np.round(values)).any() or (values < 0).any():
        raise RecordIOError(f"{where}: labels / key ranges must be whole numbers >= 0")
    return values.astype(np.int64)


class RecordWriter:
    """Writes an indexed ``.rec`` / ``.idx`` pair (mxnet ``MXIndexedRecordIO.write_idx``) in plain Python."""

    def __init__(self, rec_path, idx_path):
        self._rec, self._idx = open(rec_path, "wb"), open(idx_path, "w", encoding="utf-8")

    def write(self, key, payload):
        """Append record ``key``; returns its byte offset."""
        offset = self._rec.tell()
        self._rec.write(frame_record(payload))
        self._idx.write(f"{int(key)}\t{offset}\n")
        return offset

    def close(self):
        self._rec.close()
        self._idx.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_face_pack(folder, identities, image_size=(112, 112)):
    """Write ``folder/train.rec``, ``train.idx``, ``property`` as insightface's ``RecBuilder`` lays them out.

    ``identities``: one list of encoded images per identity (label = its position). Returns {"offsets"
    {key: byte}, "header" (start, end), "ranges" [(a, b)] per identity, "labels" {image key: label}}."""
    os.makedirs(folder, exist_ok=True)
    offsets, ranges, labels, key = {}, [], {}, 1
    with RecordWriter(os.path.join(folder, "train.rec"), os.path.join(folder, "train.idx")) as writer:
        for label, images in enumerate(identities):
            first = key
            for image in images:
                offsets[key], labels[key] = writer.write(key, pack_record(label, image, key)), label
                key += 1
            ranges.append((first, key))
        start = key
        for a, b in ranges:
            offsets[key] = writer.write(key, pack_record((a, b), b"", key))
            key += 1
        offsets[0] = writer.write(0, pack_record((start, key), b"", 0, 1))
    with open(os.path.join(folder, "property"), "w", encoding="utf-8") as f:
        f.write(f"{len(identities)},{image_size[0]},{image_size[1]}\n")
    return {"offsets": offsets, "header": (start, key), "ranges": ranges, "labels": labels}
