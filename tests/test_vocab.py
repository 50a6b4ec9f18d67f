import json

import numpy as np
import pytest

from ulmfit.errors import UlmfitError
from ulmfit.text.token_docs import TokenDocs
from ulmfit.text.tokenize import SPECIAL_TOKENS, UNK_ID, Tokenizer
from ulmfit.text.vocab import Vocab

DOCS = [["b", "a", "c", "a"], ["a", "b", "d", "xxbos"], ["c", "b", "a", "e", "e", "e"]]
# counts: a 4, b 3, c 2, e 3, d 1


def test_build_orders_by_count_then_alphabet_and_pads_to_8():
    v = Vocab.build(DOCS, min_freq=2)
    assert v.itos[:9] == SPECIAL_TOKENS
    assert v.itos[9:13] == ["a", "b", "e", "c"]  # b and e tie at 3: alphabetical
    assert "d" not in v  # below min_freq
    assert len(v) == 16 and v.itos[13:] == ["xxfake0", "xxfake1", "xxfake2"]
    assert v.stoi["a"] == 9 and v.stoi["xxbos"] == 2
    assert Vocab.build(DOCS, min_freq=2) == v  # deterministic


def test_build_keeps_known_words_from_their_own_floor():
    # counts: a 4, b 3, c 2, e 3, d 1; "d" and "c" are known (a pretrained LM's words), "zz" is not in the text
    v = Vocab.build(DOCS, min_freq=3, known={"d", "c", "zz"}, known_min_freq=1)
    assert v.itos[9:14] == ["a", "b", "e", "c", "d"]  # by count: the known rare words come last
    assert "zz" not in v  # only words of the text
    assert Vocab.build(DOCS, min_freq=3, known={"d", "c"}) == Vocab.build(DOCS, min_freq=3)  # no floor: min_freq
    v = Vocab.build(DOCS, min_freq=3, known={"d", "c"}, known_min_freq=2)
    assert "c" in v and "d" not in v
    # max_vocab cuts the rarest first, known or not
    docs = [[f"w{i}"] * (10 - i) for i in range(8)] + [["rare"]]
    v = Vocab.build(docs, min_freq=3, max_vocab=16, known={"rare"}, known_min_freq=1)
    assert v.itos[9:] == [f"w{i}" for i in range(7)]


def test_build_max_vocab_includes_specials_and_padding():
    docs = [[f"w{i:03d}"] * (1000 - i) for i in range(100)]
    for max_vocab in (16, 24, 30, 60000):
        v = Vocab.build(docs, min_freq=1, max_vocab=max_vocab)
        assert len(v) % 8 == 0 and len(v) <= max_vocab
    v = Vocab.build(docs, min_freq=1, max_vocab=24)
    assert v.itos[9:] == [f"w{i:03d}" for i in range(15)]  # the most frequent
    assert len(Vocab.build(docs, min_freq=1)) == 112  # 109 rounded up
    with pytest.raises(UlmfitError):
        Vocab.build(docs, max_vocab=10)


def test_validation():
    with pytest.raises(UlmfitError, match="special tokens"):
        Vocab(["a"] + SPECIAL_TOKENS)
    with pytest.raises(UlmfitError, match="'a'"):
        Vocab(SPECIAL_TOKENS + ["a", "b", "a"])


def test_numericalize_decode():
    v = Vocab.build(DOCS, min_freq=2)
    ids = v.numericalize(["a", "zzz", "c", "xxbos"])
    assert ids.dtype == np.int32 and ids.tolist() == [9, UNK_ID, 12, 2]
    assert v.decode(ids) == ["a", "xxunk", "c", "xxbos"]
    assert v.numericalize([]).shape == (0,)


def test_encode_many_offsets():
    v = Vocab.build(DOCS, min_freq=2)
    docs = v.encode_many(iter([["a"], [], ["b", "zzz", "c"]]))
    assert isinstance(docs, TokenDocs) and docs.ids.dtype == np.int32
    assert docs.offsets.tolist() == [0, 1, 1, 4]
    assert [d.tolist() for d in (docs[0], docs[1], docs[2])] == [[9], [], [10, 0, 12]]
    assert len(v.encode_many([])) == 0


def test_with_tokenizer():
    tok = Tokenizer()
    token_lists = tok.tokenize_many(["Hello world", "hello there, world"] * 3)
    v = Vocab.build(token_lists, min_freq=3)
    docs = v.encode_many(token_lists)
    assert v.decode(docs[1]) == ["xxbos", "hello", "there", ",", "world"]


def test_save_load_round_trip(tmp_path):
    v = Vocab.build(DOCS + [["été", "été", "été"]], min_freq=2)
    path = tmp_path / "sub" / "vocab.json"
    v.save(path)
    assert Vocab.load(path) == v
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["format"] == "ulmfit-vocab" and data["version"] == 1 and data["itos"] == v.itos
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temp file left


@pytest.mark.parametrize("content, match", [
    (None, "not found"),
    ("{not json", "not a JSON"),
    (b"\xff\xfe\x00", "not a JSON"),
    ('["xxunk"]', "not a ulmfit vocab"),
    ('{"format": "other", "itos": []}', "not a ulmfit vocab"),
    ('{"format": "ulmfit-vocab", "version": 2, "itos": []}', "version 2"),
    ('{"format": "ulmfit-vocab", "version": 1, "itos": ["a"]}', "special tokens"),
])
def test_load_errors(tmp_path, content, match):
    path = tmp_path / "vocab.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UlmfitError, match=match) as e:
        Vocab.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)
