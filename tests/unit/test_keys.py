"""API keys (tasks/demo/keys.py), property-based: parsing never raises and accepts exactly
the well-formed keys; a key id verifies only as it was signed, under its own secret."""
import hashlib
import ipaddress
import hmac
import re
import string
import uuid

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tasks.demo import keys
from tasks.demo.db import engine
from tasks.demo.timeline import create_user

HEX = "0123456789abcdef"
WELL_FORMED = re.compile(r"fg_([^_]+)_(.+)", re.DOTALL)

random_parts = st.text(HEX, min_size=keys.KEY_ID_RANDOM_HEX, max_size=keys.KEY_ID_RANDOM_HEX)
signing_keys = st.binary(min_size=32, max_size=64)
# Text as a header can carry it: Starlette decodes header bytes as latin-1.
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF))
any_text = st.one_of(st.text(), header_text)
# Pieces a key is made of, so that near-misses of the format are drawn often.
pieces = st.lists(st.sampled_from(["fg", "_", "fg_", "__", "", "a", "0f", "x_y", "é", "\x00"])
                  | st.text(max_size=4), max_size=8).map("".join)


@given(st.one_of(any_text, pieces))
def test_split_never_raises_and_accepts_exactly_the_well_formed(text):
    parts = keys.split(text)
    match = WELL_FORMED.fullmatch(text)
    assert (parts is None) == (match is None)
    if parts is not None:
        assert parts == match.groups()
        assert f"{keys.PREFIX}_{parts[0]}_{parts[1]}" == text


@given(random_parts, signing_keys,
       st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=64))
def test_a_made_key_splits_into_its_signed_id_and_its_secret(random_part, signing_key, secret):
    key_id = keys.sign(random_part, signing_key)
    parts = keys.split(f"fg_{key_id}_{secret}")
    assert parts == (key_id, secret)
    assert keys.signed(parts[0], signing_key)


@given(random_parts, signing_keys, st.data())
def test_any_single_character_change_of_the_id_is_refused(random_part, signing_key, data):
    key_id = keys.sign(random_part, signing_key)
    at = data.draw(st.integers(0, len(key_id) - 1), label="position")
    char = data.draw(st.characters(max_codepoint=0x7F) | st.sampled_from(HEX + HEX.upper()),
                     label="new character")
    assume(char != key_id[at])
    changed = key_id[:at] + char + key_id[at + 1:]
    assert not keys.signed(changed, signing_key)


@given(random_parts, signing_keys, signing_keys)
def test_an_id_signed_under_another_secret_is_refused(random_part, ours, theirs):
    assume(ours != theirs)
    assert not keys.signed(keys.sign(random_part, theirs), ours)


ID_LENGTH = keys.KEY_ID_RANDOM_HEX + keys.KEY_ID_TAG_HEX


@given(st.one_of(any_text, st.text(min_size=ID_LENGTH, max_size=ID_LENGTH),
                 st.text(st.characters(max_codepoint=0xFF), min_size=ID_LENGTH,
                         max_size=ID_LENGTH)), signing_keys)
def test_signed_never_raises_on_any_text(text, signing_key):
    """A key id comes from a request header: any text, of the id's length too (non-ASCII
    included), must be an answer, never an error."""
    assert keys.signed(text, signing_key) in (True, False)


@given(st.text(HEX, min_size=0, max_size=64).filter(lambda t: len(t) != 32), signing_keys)
def test_an_id_of_another_length_is_refused(text, signing_key):
    assert not keys.signed(text, signing_key)


@given(st.text(), st.text())
def test_digests_are_hex_sha256_and_compare_equal_only_for_the_same_secret(a, b):
    da, db = keys.digest(a), keys.digest(b)
    assert re.fullmatch("[0-9a-f]{64}", da)
    assert da == hashlib.sha256(a.encode()).hexdigest()
    assert hmac.compare_digest(da, keys.digest(a))
    assert hmac.compare_digest(da, db) == (a == b)


@pytest.fixture
def conn():
    """A transaction on the unit database, rolled back: the keys made here are not kept."""
    with engine().connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


def test_a_created_key_is_stored_as_a_hash_found_by_its_id_and_revoked_once(conn):
    signing_key = b"s" * 16 + uuid.uuid4().bytes
    uid = create_user(conn, f"keys-{uuid.uuid4().hex[:8]}")
    key_id, api_key = keys.create_key(conn, uid, signing_key)

    parsed = keys.split(api_key)
    assert parsed is not None and parsed[0] == key_id and keys.signed(key_id, signing_key)
    assert not keys.signed(key_id, signing_key[::-1])
    found = keys.find_key(conn, key_id)
    assert found.user_id == uid and not found.revoked
    assert found.secret_sha256 == keys.digest(parsed[1])
    assert parsed[1] not in found.secret_sha256  # the secret itself is not stored

    assert keys.revoke_key(conn, uid, key_id)
    assert not keys.revoke_key(conn, uid, key_id)  # only a live key is revoked
    assert keys.find_key(conn, key_id).revoked
    assert keys.find_key(conn, "0" * 32) is None


def test_another_users_key_is_not_revoked(conn):
    signing_key = uuid.uuid4().bytes * 2
    owner = create_user(conn, f"owner-{uuid.uuid4().hex[:8]}")
    other = create_user(conn, f"other-{uuid.uuid4().hex[:8]}")
    key_id, _ = keys.create_key(conn, owner, signing_key)
    assert not keys.revoke_key(conn, other, key_id)
    assert not keys.find_key(conn, key_id).revoked


def test_made_keys_are_all_different(conn):
    uid = create_user(conn, f"many-{uuid.uuid4().hex[:8]}")
    made = [keys.create_key(conn, uid, uuid.uuid4().bytes * 2) for _ in range(50)]
    assert len({k for k, _ in made}) == len({a for _, a in made}) == 50


@pytest.mark.parametrize("host, counted_as", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.9", "198.51.100.9"),
    ("testclient", "testclient"), (None, "unknown"),
])
def test_a_client_is_counted_by_its_address_and_an_ipv6_one_by_its_64(host, counted_as):
    from api.ratelimit import client_address

    assert client_address(host) == counted_as


@given(st.ip_addresses(v=6))
def test_every_address_of_one_ipv6_64_shares_one_count(ip):
    from api.ratelimit import client_address

    neighbour = ipaddress.IPv6Address(int(ip) ^ 0xFFFF)  # the same /64, another host
    if ip.ipv4_mapped is None:
        assert client_address(str(ip)) == client_address(str(neighbour))
