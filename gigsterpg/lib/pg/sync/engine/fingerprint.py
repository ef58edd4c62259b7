"""What a raw BSON document is, without decoding it: its id as text and a hash of its bytes.

An unchanged document has the same bytes, hence the same hash; the sync skips
decoding and transforming it. Only stored rows keep a hash (``sync_hashes``),
so a rejected document is looked at again on every run.
"""
import hashlib
from typing import Optional

from bson.errors import InvalidBSON
from bson.raw_bson import RawBSONDocument

from gigsterpg.lib.pg.sync import document

# Part of every hash: change it when a mapping changes, and the next run re-maps every document.
# map-2: the id order keys (``order_key``) kept beside the hashes; every row re-checked once, none rewritten.
MAPPING_VERSION = b"gigsterpg-map-2"
_ID_NAME = b"_id\x00"


def digest(raw: bytes) -> bytes:
    """16 bytes that change when the document's bytes (or the mapping version) change."""
    return hashlib.blake2b(raw, digest_size=16, person=MAPPING_VERSION).digest()


def fast_id(raw: bytes) -> Optional[str]:
    """The ``_id`` as ``id_text`` gives it, read off the first element; None when that is not simple.

    MongoDB stores ``_id`` first; ObjectId, int32, int64 and plain strings are
    read here, anything else is left to a full decode.
    """
    if raw[5:9] != _ID_NAME:
        return None
    kind = raw[4]
    if kind == 0x07:
        return raw[9:21].hex()
    if kind == 0x10:
        return str(int.from_bytes(raw[9:13], "little", signed=True))
    if kind == 0x12:
        return str(int.from_bytes(raw[9:17], "little", signed=True))
    if kind == 0x02:
        size = int.from_bytes(raw[9:13], "little", signed=True)
        try:
            text = str(raw[13:13 + size - 1], "utf-8")  # raw may be a memoryview (large replies)
        except UnicodeDecodeError:
            return None
        return text if text and "\x00" not in text else None
    return None


def doc_id(doc) -> str:
    """The text id of a raw or decoded document, for rows, rejects and deletes alike."""
    if isinstance(doc, RawBSONDocument):
        found = fast_id(doc.raw)
        if found is not None:
            return found
    try:
        return document.describe_id(doc.get("_id"))
    except (InvalidBSON, ValueError, OverflowError):  # a raw document that cannot be decoded: name it by its bytes
        return "undecodable " + digest(doc.raw).hex()


def order_key(doc) -> Optional[bytes]:
    """``document.id_order_key`` of a raw or decoded document's ``_id``, read off the first element where
    that is simple (ObjectId, int32, int64, string), else decoded; None for an id that has no key."""
    if isinstance(doc, RawBSONDocument):
        raw = doc.raw
        if raw[5:9] == _ID_NAME:
            kind = raw[4]
            if kind == 0x07:
                return b"\x04" + bytes(raw[9:21])
            if kind in (0x10, 0x12):
                width = 4 if kind == 0x10 else 8
                return document.id_order_key(int.from_bytes(raw[9:9 + width], "little", signed=True))
            if kind == 0x02:  # a string's UTF-8 bytes are its key (a RawBSONDocument's get decodes it all)
                size = int.from_bytes(raw[9:13], "little", signed=True)
                body = bytes(raw[13:13 + size - 1])
                try:
                    body.decode("utf-8")
                except UnicodeDecodeError:
                    return None
                return b"\x02" + body if body and b"\x00" not in body else None
    try:
        return document.id_order_key(doc.get("_id"))
    except (InvalidBSON, ValueError, OverflowError):
        return None
