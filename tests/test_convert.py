"""The typed converter: type hints -> values, every error with a stable code and the dotted key path."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pytest

from ue_agent.convert import (
    INTERNAL,
    INVALID,
    MISSING_KEY,
    UNKNOWN_KEY,
    Base64,
    Check,
    ConvertError,
    Hex,
    Len,
    Range,
    convert,
    convert_value,
    describe,
)


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class Stream:
    suite: Literal["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
    key: Annotated[bytes, Base64(30)] = b""


@dataclass
class Inner:
    profile: Annotated[str, Len(1)]
    ids: list[int] = field(default_factory=list)


@dataclass
class Doc:
    card: Inner
    streams: list[Stream] = field(default_factory=list)
    name: str = "x"
    count: Annotated[int, Range(1, 10)] = 1
    ratio: float = 0.5
    flag: bool = False
    k: Annotated[bytes, Hex(2)] = b"\x80\x00"
    pair: tuple[int, str] = (0, "")
    tags: tuple[str, ...] = ()
    colour: Colour = Colour.RED
    maybe: Inner | None = None
    either: list[str] | str = "a"
    url: Annotated[str, Check(lambda s: s.startswith("/"), "must be an absolute path")] = "/"
    table: dict[str, int] = field(default_factory=dict)
    anything: Any = None
    source: Annotated[str, INTERNAL] = ""


KEY30 = "A" * 40


def test_full_document_converts() -> None:
    d = convert(
        Doc,
        {
            "card": {"profile": "p", "ids": [1, 2]},
            "streams": [{"suite": "AES_CM_128_HMAC_SHA1_80", "key": KEY30}],
            "count": 3,
            "ratio": 2,
            "flag": True,
            "k": "0102",
            "pair": [5, "five"],
            "tags": ["a", "b"],
            "colour": "blue",
            "maybe": {"profile": "q"},
            "either": ["x"],
            "table": {"a": 1},
            "anything": {"free": [1]},
        },
    )
    assert d.card == Inner("p", [1, 2])
    assert d.streams[0].key == bytes(30)
    assert (d.count, d.ratio, d.flag, d.k) == (3, 2.0, True, b"\x01\x02")
    assert isinstance(d.ratio, float)
    assert d.pair == (5, "five") and d.tags == ("a", "b")
    assert d.colour is Colour.BLUE and d.maybe == Inner("q") and d.either == ["x"]
    assert d.table == {"a": 1} and d.anything == {"free": [1]}
    assert d.source == "" and d.name == "x"


def test_defaults_are_fresh() -> None:
    a, b = convert(Doc, {"card": {"profile": "p"}}), convert(Doc, {"card": {"profile": "p"}})
    a.card.ids.append(1)
    assert b.card.ids == [] and a.streams is not b.streams


@pytest.mark.parametrize(
    ("data", "code", "path", "why"),
    [
        ({}, MISSING_KEY, "card", "missing key"),
        ({"card": {}}, MISSING_KEY, "card.profile", "missing key"),
        ({"card": {"profile": "p", "colour": 1}}, UNKNOWN_KEY, "card.colour", "unknown key"),
        ({"card": {"profile": "p"}, "source": "x"}, UNKNOWN_KEY, "source", "unknown key"),
        ({"card": "p"}, INVALID, "card", "must be a table"),
        ({"card": {"profile": ""}}, INVALID, "card.profile", "must not be empty"),
        ({"card": {"profile": 3}}, INVALID, "card.profile", "must be a string"),
        ({"card": {"profile": "p", "ids": [1, True]}}, INVALID, "card.ids[1]", "must be an integer"),
        ({"card": {"profile": "p", "ids": 1}}, INVALID, "card.ids", "must be a list of integers"),
        (
            {"card": {"profile": "p"}, "streams": [{"suite": "AES_CM_128_HMAC_SHA1_80"}, {"suite": "NULL"}]},
            INVALID,
            "streams[1].suite",
            "must be one of AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32",
        ),
        (
            {"card": {"profile": "p"}, "streams": [{"suite": "AES_CM_128_HMAC_SHA1_80", "key": "AAAA"}]},
            INVALID,
            "streams[0].key",
            "must be 30 bytes",
        ),
        (
            {"card": {"profile": "p"}, "streams": [{"key": KEY30}]},
            MISSING_KEY,
            "streams[0].suite",
            "missing key",
        ),
        ({"card": {"profile": "p"}, "count": 0}, INVALID, "count", "must be between 1 and 10"),
        ({"card": {"profile": "p"}, "count": 2.0}, INVALID, "count", "must be an integer"),
        ({"card": {"profile": "p"}, "ratio": True}, INVALID, "ratio", "must be a number"),
        ({"card": {"profile": "p"}, "flag": 1}, INVALID, "flag", "must be true or false"),
        ({"card": {"profile": "p"}, "k": "zz"}, INVALID, "k", "must be a hex string"),
        ({"card": {"profile": "p"}, "k": "010203"}, INVALID, "k", "must be 2 bytes"),
        ({"card": {"profile": "p"}, "pair": [1]}, INVALID, "pair", "must be a list of 2 items"),
        ({"card": {"profile": "p"}, "pair": [1, 2]}, INVALID, "pair[1]", "must be a string"),
        ({"card": {"profile": "p"}, "tags": "a"}, INVALID, "tags", "must be a list of strings"),
        ({"card": {"profile": "p"}, "colour": "green"}, INVALID, "colour", "must be one of red, blue"),
        ({"card": {"profile": "p"}, "maybe": {}}, MISSING_KEY, "maybe.profile", "missing key"),
        ({"card": {"profile": "p"}, "either": 3}, INVALID, "either", "must be a list of strings or a string"),
        ({"card": {"profile": "p"}, "either": [3]}, INVALID, "either[0]", "must be a string"),
        ({"card": {"profile": "p"}, "url": "rel"}, INVALID, "url", "must be an absolute path"),
        ({"card": {"profile": "p"}, "table": {"a": "1"}}, INVALID, "table.a", "must be an integer"),
        ([], INVALID, "", "must be a table"),
    ],
)
def test_errors_carry_code_and_dotted_path(data: Any, code: str, path: str, why: str) -> None:
    with pytest.raises(ConvertError) as info:
        convert(Doc, data)
    err = info.value
    assert (err.code, err.path, err.why) == (code, path, why)
    assert err.kind == code.rpartition(".")[2]
    if path:
        assert f"'{path}'" in err.message


def test_nan_is_outside_every_range() -> None:
    with pytest.raises(ConvertError):
        convert_value(Annotated[float, Range(0, 1)], float("nan"))


def test_base64_is_strict() -> None:
    with pytest.raises(ConvertError) as info:
        convert_value(Annotated[bytes, Base64()], "AA==\n")
    assert info.value.why == "must be a base64 string"


def test_bare_bytes_needs_an_encoding() -> None:
    @dataclass
    class Bad:
        raw: bytes

    with pytest.raises(TypeError):
        convert(Bad, {"raw": "00"})
    with pytest.raises(TypeError):  # the failed plan is not cached half-built
        convert(Bad, {"raw": "00"})


def test_describe() -> None:
    assert describe(list[int]) == "a list of integers"
    assert describe(tuple[str, ...] | None) == "a list of strings"
    assert describe(Literal["a", "b"]) == "one of a, b"


# -- the subscriber file through the converter -------------------------------------------------

SUB = {
    "imsi": "001010000000001",
    "impi": "001010000000001@ims.mnc001.mcc001.3gppnetwork.org",
    "impu": "sip:alice@ims.mnc001.mcc001.3gppnetwork.org",
    "domain": "ims.mnc001.mcc001.3gppnetwork.org",
    "k": "465b5ce8b199b49faa5f0a2ee238a6bc",
    "op": "cdc202d5123e20f62b6d676ac72cb318",
    "amf": "8000",
    "sqn": 32,
}


def test_subscriber_file() -> None:
    from ue_agent.subscriber import SubscriberFile, parse_subscriber

    sub = parse_subscriber(SUB, "s.toml")
    assert sub.impu == [SUB["impu"]] and sub.mnc_length == 2 and sub.isim
    # TS 35.208 test set 1: OPc from K and OP
    assert sub.opc.reveal() == bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
    assert "465b5c" not in repr(convert(SubscriberFile, SUB)) and SUB["k"] not in repr(sub)


@pytest.mark.parametrize(
    ("over", "code", "key", "text"),
    [
        ({"imsi": "12ab"}, "config.invalid", "imsi", "s.toml: 'imsi' must be 6-15 digits"),
        ({"k": "00"}, "config.invalid", "k", "s.toml: 'k' must be 16 bytes"),
        ({"amf": "zz"}, "config.invalid", "amf", "s.toml: 'amf' must be a hex string"),
        ({"sqn": 2**48}, "config.invalid", "sqn", "s.toml: 'sqn' must be between 0 and 281474976710655"),
        ({"impu": []}, "config.invalid", "impu", "s.toml: 'impu' must be a list of strings or a string"),
        ({"mnc_length": 4}, "config.invalid", "mnc_length", "s.toml: 'mnc_length' must be one of 2, 3"),
        ({"op": None}, "config.missing_key", "opc", "s.toml: missing key 'opc' (or 'op')"),
        ({"colour": "red"}, "config.unknown_key", "colour", "s.toml: unknown key 'colour'"),
        ({"domain": None}, "config.missing_key", "domain", "s.toml: missing key 'domain'"),
    ],
)
def test_subscriber_errors(over: dict, code: str, key: str, text: str) -> None:
    from ue_agent.errors import ConfigError
    from ue_agent.subscriber import parse_subscriber

    data = {k: v for k, v in (SUB | over).items() if v is not None}
    with pytest.raises(ConfigError) as info:
        parse_subscriber(data, "s.toml")
    assert (info.value.code, info.value.details["key"], info.value.message) == (code, key, text)
    assert SUB["k"] not in str(info.value)


@dataclass
class _Tree:
    name: str
    children: list[_Tree] = field(default_factory=list)


def test_a_plan_is_published_only_when_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # the warm-up thread builds plans (ue_agent.warmup) while the event loop converts
    # requests: a converter that found a half-built plan refused every parameter
    import ue_agent.convert as mod

    seen: list[bool] = []
    real = mod._build

    def watching(tp: Any) -> Any:
        seen.append(_Tree in mod._PLANS)
        return real(tp)

    monkeypatch.setattr(mod, "_build", watching)
    mod._PLANS.pop(_Tree, None)
    tree = convert(_Tree, {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]})
    assert seen and not any(seen)
    assert tree.children[0].children[0].name == "c"  # a dataclass nesting itself still converts
    assert _Tree in mod._PLANS
