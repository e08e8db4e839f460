"""insightface RecordIO packs without mxnet (face_recognition.recordio): framing, IRHeader, index, header ranges,
the training dataset over a pack, bad packs (issue 19 item 4)."""
import io
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from common.engine import collate_readable
from common.synthetic.writers import recognition as synthetic_vggface2
from common.synthetic.writers.files import encode_image
from common.synthetic.writers.sampling import context
from face_recognition.data import AlignedFaces, load_recordio, main as data_main, recordio_training_set
from face_recognition.recordio import (IR_FORMAT, MAGIC, MAGIC_BYTES, IndexedRecordReader, RecordIOError,
                                       RecordWriter, frame_record, pack_index, pack_record, read_index, read_property,
                                       unpack_record, write_face_pack)

CORRUPT = (1, 1)                               # identity 1, image 1: its bytes are not an image


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """JPEG bytes of synthetic VGGFace2 faces aligned to 112 px (ArcFace template), 3 per identity, 3 identities."""
    out = str(tmp_path_factory.mktemp("vggface2"))
    cfg = {"train_ids": 3, "test_ids": 1, "per_id": 3}
    ctx = context(0, 96)
    jobs = [j for j in synthetic_vggface2.plan_vggface2(cfg, 0) if j["split"] == "train"]
    records = [synthetic_vggface2.make_vggface2(ctx, out, cfg, j) for j in jobs]
    files = [os.path.join(out, "VGGFace2", "train", j["key"] + ".jpg") for j in jobs]
    aligned = AlignedFaces(files, [r["five"] for r in records], np.zeros(len(jobs)), size=112, mean=(0.0,) * 3,
                           std=(1.0,) * 3)
    identities = {}
    for (face, _, _), job in zip((aligned[i] for i in range(len(jobs))), jobs):
        image = (face.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        identities.setdefault(job["class"], []).append(encode_image(image, ".jpg"))
    packs = [identities[c] for c in sorted(identities)]
    packs[CORRUPT[0]][CORRUPT[1]] = b"\xff\xd8 not a jpeg " * 7
    return packs


def _decode(data):
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


def _scan(path):
    """Byte offsets of the records of a .rec, walking its framing from byte 0 (independent of the reader)."""
    data, offsets, pos = open(path, "rb").read(), [], 0
    while pos < len(data):
        magic, lrecord = struct.unpack_from("<II", data, pos)
        assert magic == MAGIC and lrecord >> 29 == 0
        offsets.append(pos)
        pos += 8 + ((lrecord & (2 ** 29 - 1)) + 3) // 4 * 4
    return offsets


def test_pack_round_trip_labels_images_offsets_and_header(tmp_path, faces):
    """A pack written as insightface's RecBuilder lays it out reads back: .idx offsets = where the records sit,
    IRHeader fields, header record 0 = (first identity record, end), identity ranges, labels, images equal to
    the source bytes' decode, the corrupted record None (skipped and counted by the engine's collate)."""
    info = write_face_pack(str(tmp_path), faces)
    keys, offsets = read_index(str(tmp_path / "train.idx"))
    assert keys.tolist() == list(range(1, 13)) + [0] and offsets.tolist() == _scan(str(tmp_path / "train.rec"))
    assert dict(zip(keys.tolist(), offsets.tolist())) == info["offsets"]
    raw = open(tmp_path / "train.rec", "rb").read()
    assert raw[:4] == bytes.fromhex("0a23d7ce")                                # magic, little-endian
    assert struct.unpack_from(IR_FORMAT, raw, 8) == (0, 0.0, 1, 0)             # image 1: flag 0, label 0, id 1
    assert read_property(str(tmp_path / "property")) == (3, 112, 112)

    reader = IndexedRecordReader(str(tmp_path / "train.rec"), str(tmp_path / "train.idx"))
    head = reader.header(0)
    assert head.flag == 2 and head.label.tolist() == [10, 13] and head.id2 == 1
    index = pack_index(reader)
    assert index["header"] == (10, 13) and index["ranges"].tolist() == [[1, 4], [4, 7], [7, 10]]
    assert index["keys"].tolist() == list(range(1, 10)) and index["labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]

    dataset, classes = recordio_training_set(str(tmp_path), size=112, mean=(0.0,) * 3, std=(1.0,) * 3, flip_prob=0.0)
    assert classes == ["0", "1", "2"] and len(dataset) == 9
    items = [dataset[i] for i in range(9)]
    bad = 3 * CORRUPT[0] + CORRUPT[1]
    assert items[bad] is None
    for i, item in enumerate(items):
        if i != bad:
            assert item["label"] == i // 3 and item["index"] == i
            torch.testing.assert_close(item["image"], _decode(faces[i // 3][i % 3]).float() / 255, rtol=0, atol=1e-6)
    batch = collate_readable(items)
    assert batch["skipped"] == 1 and batch["image"].shape == (8, 3, 112, 112)

    small, _ = recordio_training_set(str(tmp_path / "train"), size=48, mean=(0.5,) * 3, std=(0.5,) * 3,
                                     flip_prob=1.0, keys=["4", "6", "8"])    # a prefix, a subset, a resize, a flip
    assert [small[i]["label"] for i in range(3)] == [0, 0, 1] and small[0]["image"].shape == (3, 48, 48)
    resized = torch.nn.functional.interpolate(_decode(faces[1][0])[None].float() / 255, size=(48, 48),
                                              mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(small[0]["image"], ((resized - 0.5) / 0.5).flip(-1))
    with pytest.raises(ValueError, match="1 of 2 subset keys are not image records"):
        recordio_training_set(str(tmp_path), size=48, mean=(0,) * 3, std=(1,) * 3, flip_prob=0, keys=["1", "11"])


def test_magic_word_inside_a_payload_is_split_and_rejoined(tmp_path):
    """dmlc's writer cuts a payload at every 4-aligned magic word (parts flagged 1, 2, 3, the word dropped); the
    reader puts it back. An unaligned magic word is left alone."""
    payload = MAGIC_BYTES + b"abcd" + MAGIC_BYTES + b"x" + MAGIC_BYTES + b"yz1234"      # magic at 0, 8 and 13
    framed = frame_record(payload)
    heads = [(struct.unpack_from("<II", framed, p)) for p in (0, 8, 20)]
    assert {magic for magic, _ in heads} == {MAGIC}
    assert [(h >> 29, h & 0xFFFF) for _, h in heads] == [(1, 0), (2, 4), (3, 11)]       # x + magic + yz1234
    assert len(framed) == 8 + 12 + 8 + 12 and framed.endswith(b"yz1234\0")             # padded to 4 bytes
    with RecordWriter(str(tmp_path / "a.rec"), str(tmp_path / "a.idx")) as writer:
        writer.write(7, b"")
        writer.write(3, payload)
        writer.write(5, pack_record([1.5, 2.0, 3.0], b"img", 5))
    reader = IndexedRecordReader(str(tmp_path / "a.rec"), str(tmp_path / "a.idx"))
    assert reader.read(3) == payload and reader.read(7) == b"" and reader.read_at(reader.offset(3), 6) == payload[:6]
    header, data = unpack_record(reader.read(5))
    assert header.flag == 3 and header.label.tolist() == [1.5, 2.0, 3.0] and header.id == 5 and data == b"img"


def test_headerless_pack_reads_every_key(tmp_path, faces):
    """Without the header record (flag 0 at key 0, insightface's SeqRecBuilder) every indexed key is an image."""
    with RecordWriter(str(tmp_path / "train.rec"), str(tmp_path / "train.idx")) as writer:
        for key, (label, data) in enumerate([(5, faces[0][0]), (2, faces[2][0]), (5, faces[0][1])]):
            writer.write(key, pack_record(label, data, key))
    index = load_recordio(str(tmp_path))
    assert index["header"] is None and index["keys"].tolist() == [0, 1, 2] and index["labels"].tolist() == [5, 2, 5]
    dataset, classes = recordio_training_set(str(tmp_path), size=112, mean=(0,) * 3, std=(1,) * 3, flip_prob=0)
    assert classes == ["2", "5"] and [dataset[i]["label"] for i in range(3)] == [1, 0, 1]


def test_bad_packs_raise_naming_the_file(tmp_path, faces):
    """Truncated or garbage .rec, malformed .idx, missing files: one error naming the file."""
    write_face_pack(str(tmp_path), faces)
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    data = rec.read_bytes()
    rec.write_bytes(data[:-6])                                   # cut inside the last record (header record 0)
    with pytest.raises(RecordIOError, match=r"train\.rec: record at byte \d+ is cut short"):
        load_recordio(str(tmp_path))
    rec.write_bytes(data[:len(data) // 2])                       # cut before the last indexed offsets
    with pytest.raises(RecordIOError, match=r"train\.rec: .*train\.idx points to byte \d+ but the file has"):
        load_recordio(str(tmp_path))
    rec.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    with pytest.raises(RecordIOError, match=r"train\.rec: no RecordIO magic at byte \d+"):
        load_recordio(str(tmp_path))
    keys, offsets = read_index(str(idx))
    broken = bytearray(data)
    broken[offsets[1]:offsets[1] + 4] = b"JUNK"                  # record 2's framing: only that item is lost
    rec.write_bytes(bytes(broken))
    dataset, _ = recordio_training_set(str(tmp_path), size=112, mean=(0,) * 3, std=(1,) * 3, flip_prob=0)
    assert dataset[1] is None and dataset[0] is not None and dataset[2] is not None
    rec.write_bytes(data)
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines[:2] + ["3 oops"] + lines[3:]) + "\n")
    with pytest.raises(RecordIOError, match=r"train\.idx:3: expected 'key<TAB>offset'"):
        load_recordio(str(tmp_path))
    idx.write_text("\n".join(lines[:2] + [lines[3]] + lines[3:]) + "\n")     # key 4 listed twice
    with pytest.raises(RecordIOError, match=r"train\.idx: key 4 is listed twice"):
        load_recordio(str(tmp_path))
    idx.unlink()
    with pytest.raises(FileNotFoundError, match=r"RecordIO index not found: .*train\.idx"):
        recordio_training_set(str(tmp_path), size=112, mean=(0,) * 3, std=(1,) * 3, flip_prob=0)
    (tmp_path / "property").write_text("3;112;112\n")
    with pytest.raises(RecordIOError, match=r"property:1: expected 'num_classes,height,width'"):
        read_property(str(tmp_path / "property"))


def test_reader_is_fork_safe_and_the_check_reports_the_pack(tmp_path, faces, capsys):
    """Forked DataLoader workers open their own descriptor (a pickled reader carries none) and read what the
    parent reads; ``face_recognition.data --check --dataset recordio`` counts images, identities, bad records."""
    write_face_pack(str(tmp_path), faces)
    dataset, _ = recordio_training_set(str(tmp_path), size=64, mean=(0,) * 3, std=(1,) * 3, flip_prob=0)
    parent = [dataset[i] for i in range(len(dataset))]                         # parent's descriptor is open
    assert pickle.loads(pickle.dumps(dataset.reader))._fd is None
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_readable,
                                         multiprocessing_context="fork")
    batches = list(loader)
    assert sum(b["skipped"] for b in batches) == 1
    images = torch.cat([b["image"] for b in batches])
    torch.testing.assert_close(images, torch.stack([p["image"] for p in parent if p is not None]))
    data_main(["--check", "--dataset", "recordio", "--root", str(tmp_path), "--size", "48",
               "--out", str(tmp_path / "grid.png")])
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["images"] == 9 and stats["identities"] == 3 and stats["undecodable_in_sample"] == 1
    assert stats["header_record"] == [10, 13] and stats["property"] == [3, 112, 112]
    assert os.path.isfile(tmp_path / "grid.png")
