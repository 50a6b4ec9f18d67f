import json
import random
from dataclasses import asdict

import pytest

from ulmfit.errors import UlmfitError
from ulmfit.text.tokenize import (BOS, EOS, FLD, SPECIAL_TOKENS, TK_MAJ, TK_REP, TK_UP, TK_WREP,
                                  Tokenizer, TokenizerConfig, detokenize, fix_html)

tok = Tokenizer()


def words(text, **cfg):
    """Tokens without the leading xxbos."""
    return Tokenizer(TokenizerConfig(add_bos=False, **cfg))(text)


def test_special_tokens_order():
    assert SPECIAL_TOKENS == ["xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj"]


def test_bos_eos():
    assert tok("hi there") == [BOS, "hi", "there"]
    assert Tokenizer(TokenizerConfig(add_eos=True))("hi") == [BOS, "hi", EOS]
    assert words("") == [] and tok("") == [BOS]


def test_case_marks_and_lowercasing():
    assert words("Hello WORLD iPhone I A") == [TK_MAJ, "hello", TK_UP, "world", "iphone",
                                               TK_MAJ, "i", TK_MAJ, "a"]
    assert words("Élan ÜBER") == [TK_MAJ, "élan", TK_UP, "über"]
    assert all(t == t.lower() for t in tok("Some MIXED Case TeXt, OK?"))


def test_char_repetition():
    assert words("soooo good") == ["s", TK_REP, "4", "o", "good"]
    assert words("wow!!!!!") == ["wow", TK_REP, "5", "!"]
    assert words("sooo") == ["sooo"]  # 3 is not more than max_rep=3
    assert words("sooo", max_rep=2) == ["s", TK_REP, "3", "o"]


def test_word_repetition():
    assert words("it is very very very very good") == ["it", "is", TK_WREP, "4", "very", "good"]
    assert words("VERY VERY VERY VERY") == [TK_WREP, "4", TK_UP, "very"]
    assert words("ha ha ha") == ["ha", "ha", "ha"]


def test_fields():
    assert tok(("A title", "the body")) == [BOS, FLD, "1", TK_MAJ, "a", "title", FLD, "2", "the", "body"]


def test_html_fixes():
    assert fix_html("a &amp; b &#39;c&#39; &quot;d&quot; &lt;3") == "a & b 'c' \"d\" <3"
    assert fix_html("it#39;s amp; quot;x quot; a nbsp;b") == "it's & \"x \" a  b"
    assert fix_html("one<br />two<br>three") == "one\ntwo\nthree"
    assert fix_html("double &amp;quot;escaped&amp;quot;") == 'double "escaped"'
    assert words("Don&#39;t<br /><br />stop") == [TK_MAJ, "do", "n't", "stop"]


def test_contractions():
    assert words("don't can't won't") == ["do", "n't", "ca", "n't", "wo", "n't"]
    assert words("I'm it's we'll they've I'd you're") == [
        TK_MAJ, "i", "'m", "it", "'s", "we", "'ll", "they", "'ve", TK_MAJ, "i", "'d", "you", "'re"]
    assert words("DON'T") == [TK_UP, "do", TK_UP, "n't"]
    assert words("don’t") == ["do", "n't"]  # curly apostrophe
    assert words("o'clock rock'n'roll") == ["o'clock", "rock'n'roll"]


def test_punctuation_and_numbers():
    assert words("Wait... what?! no, (really).") == [TK_MAJ, "wait", "...", "what", "?!", "no", ",",
                                                     "(", "really", ")", "."]
    assert words("pi=3.14, 1,000 at 10:30 in 2019.") == ["pi", "=", "3.14", ",", "1,000", "at", "10:30",
                                                         "in", "2019", "."]
    assert words("e.g. the U.S.A.") == ["e.g.", "the", TK_UP, "u.s.a."]


def test_tweet_tokens_kept_whole():
    text = "@bob_1 see https://t.co/x?a=1. or www.ex.com #TBT mail a.b+c@ex.co.uk :) :-( ;D <3 :P"
    assert words(text) == ["@bob_1", "see", "https://t.co/x?a=1", ".", "or", "www.ex.com", "#tbt", "mail",
                           "a.b+c@ex.co.uk", ":)", ":-(", ";d", "<3", ":p"]
    assert words("note:Path") == ["note", ":", TK_MAJ, "path"]  # not an emoticon


def test_unicode_words_and_emoji():
    assert words("café naïve über 東京") == ["café", "naïve", "über", "東京"]
    assert words("cafe\u0301") == ["café"]  # NFC
    assert words("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # combining vowel signs stay in the word
    assert words("ok👍🏽 🙂") == ["ok", "👍🏽", "🙂"]


def test_tokens_never_contain_whitespace():
    rng = random.Random(0)
    alphabet = "aB3 \t\n.,!?'\"@#:)(-_/\\&;<>é😂\u00a0\u2003\u200b"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        for t in tok(text):
            assert t and t.split() == [t], (text, t)


def test_config_is_json_and_validated():
    cfg = TokenizerConfig(add_eos=True, max_rep=4)
    assert TokenizerConfig(**json.loads(json.dumps(asdict(cfg)))) == cfg
    with pytest.raises(UlmfitError):
        TokenizerConfig(max_rep=0)


def _corpus(n):
    rng = random.Random(1)
    vocab = "the a good DAY I'm don't :) @user #tag http://x.co/a Hello !! ... sooooo very 3.14 😂".split()
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(0, 30))) for _ in range(n)]


def test_tokenize_many_parallel_equals_serial():
    texts = _corpus(20000) + [("a field", "Two")]
    serial = tok.tokenize_many(texts, n_workers=1)
    assert serial == [tok(t) for t in texts]
    assert tok.tokenize_many(texts, n_workers=2) == serial
    cfg = Tokenizer(TokenizerConfig(add_bos=False))  # empty documents survive the round trip
    assert cfg.tokenize_many(["", "x", ""], n_workers=2) == [[], ["x"], []]
    from ulmfit.text.tokenize import _split_docs
    for texts in ([""], ["", ""], [""] * 2049, ["x"] * 1024 + [""], ["a\x00b", ""]):  # block edges
        for n_workers in (1, 2):
            assert cfg.tokenize_many(texts, n_workers=n_workers) == [cfg(t) for t in texts]
        assert _split_docs(*cfg._tokenize_joined(texts)) == [cfg(t) for t in texts]  # small: blocks too
    assert tok.tokenize_many([]) == []


def test_tokenize_many_in_a_daemonic_process_stays_in_process(monkeypatch):
    """A model trained in its own process (train/processes.py, daemonic) tokenizes a large batch (a
    distillation's augmented copies): daemonic processes may not start workers, so it tokenizes alone."""
    import multiprocessing

    import ulmfit.text.tokenize as tk

    monkeypatch.setattr(tk, "_PARALLEL_MIN_CHARS", 0)  # every batch would go to workers
    texts = _corpus(3000)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()

    def child():
        try:
            q.put(tok.tokenize_many(texts))
        except BaseException as e:  # the assertion a daemonic process hits when it starts a child
            q.put(repr(e))

    p = ctx.Process(target=child, daemon=True)
    p.start()
    got = q.get(timeout=120)
    p.join(timeout=30)
    assert got == tok.tokenize_many(texts, n_workers=1)


@pytest.mark.parametrize("text", [
    "Hello, world! I'm fine.",
    "I don't know... it's SO GOOD!!!! Really?",
    "He said \"hi\" to me (twice); we'll see: 3.14 or 1,000 people.",
    "Check https://t.co/abc and @bob #tbt :) <3",
    "It is very very very very good, sooooo good.",
    "They've said you're right, but we can't and won't.",
])
def test_detokenize_round_trip(text):
    assert detokenize(tok(text)) == text


def test_detokenize_drops_and_expands():
    assert detokenize([BOS, FLD, "1", TK_MAJ, "hi", FLD, "2", TK_UP, "ok", EOS, "xxpad"]) == "Hi OK"
    assert detokenize([TK_WREP, "3", TK_MAJ, "no", TK_REP, "3", "!"]) == "No No No!!!"


# ------------------------------------------------------------------ linear time (issue 15, "quadratic tokenizer")

# Inputs built to make a backtracking pattern quadratic (or worse): a long run that almost matches
# an e-mail, a URL, a number, an emoticon, a `<br>` tag, a contraction, a repetition. Each is ~100k
# characters: a linear tokenizer takes well under 0.2 s on a busy 2-core machine, the old e-mail
# pattern took over a minute on the first one, the old `<br>` pattern ~10 s on the second.
_PATHOLOGICAL = {
    "email local part": "a-" * 50000 + "@",
    "email, mixed run": "a.b-c+" * 16000 + "@x",
    "email, dotted domain": "a@" + "b." * 50000,
    "emails chained": "a@b.c+" * 16000,
    "br tag spaces": "<br" + " " * 100000,
    "br tag slash": "<br /" + " " * 100000,
    "url punctuation": "www." + "." * 100000,
    "urls chained": "http://" * 14000,
    "number separators": "1." * 50000 + "a",
    "number run": "1" * 100000 + ".",
    "initials": "a." * 50000 + "-",
    "apostrophes": "a'" * 50000 + "-",
    "contractions": "n't'" * 25000,
    "emoticon caret": "^" + "_" * 100000,
    "emoticon dash": "-" + "_" * 100000 + "!",
    "mentions": "@a" * 50000,
    "symbols": ".-" * 50000,
    "zwj": "👍\u200d" * 50000,
    "html": "&amp;" * 20000,
}
_TIME_BOUND_S = 2.0  # per input; ~10x the linear cost under load, a small fraction of a quadratic one


@pytest.mark.parametrize("name", sorted(_PATHOLOGICAL))
def test_pathological_inputs_take_linear_time(name):
    import time
    text = _PATHOLOGICAL[name]
    t0 = time.perf_counter()
    out = tok(text)
    took = time.perf_counter() - t0
    assert took < _TIME_BOUND_S, f"{name}: {len(text):,} characters took {took:.1f} s"
    assert out[0] == BOS and all(t and t.split() == [t] for t in out)
    t0 = time.perf_counter()  # the block path (its own patterns) on the same input, among others
    many = tok.tokenize_many(["a b", text, "C"], n_workers=1)
    took = time.perf_counter() - t0
    assert took < _TIME_BOUND_S, f"{name} (tokenize_many): {len(text):,} characters took {took:.1f} s"
    assert many == [tok("a b"), out, tok("C")]


def _old_email_alternation():
    """The pre-fix pattern (backtracking, quadratic): the oracle for `_split_emails` on short input."""
    import re
    from ulmfit.text import tokenize as T
    return re.compile(r"[\w.+-]+@\w[\w-]*(?:\.[\w-]+)+|" + T._TOKEN, re.VERBOSE)


def test_email_split_equals_the_backtracking_alternation():
    from ulmfit.text.tokenize import _split_emails
    old = _old_email_alternation()
    rng = random.Random(3)
    alphabet = "ab1_.-+@:/#'<3)w"
    for _ in range(3000):
        piece = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 25)))
        assert _split_emails(piece) == old.findall(piece), piece
    for piece in ["a@b.com", "x.y+z@ex.co.uk,", "#tag-x@b.com", "<3x@b.com", "http://x.com/a@b.com",
                  "a@b.c+x@d.org", "a@b.com@c.org", "@bob:", "me@localhost", "a-" * 30 + "@b.c"]:
        assert _split_emails(piece) == old.findall(piece), piece


def test_tweet_sample_tokens_unchanged():
    """Tokens of a fixed sample of real-looking tweets, recorded before the linear-time rewrite."""
    import pathlib
    data = json.loads((pathlib.Path(__file__).parent / "fixtures" / "tokenizer_golden.json").read_text())
    for text, expected in zip(data["texts"], data["tokens"]):
        assert tok(text) == expected, text
    assert tok.tokenize_many(data["texts"], n_workers=1) == data["tokens"]


def test_fuzz_tokenizer_linear_and_clean():
    """Property-based: adversarial repetitions of short fragments; every input is tokenized in
    bounded time, no token is empty or holds whitespace, and the e-mail split equals the old
    alternation on each whitespace piece short enough for the old pattern."""
    import time
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from ulmfit.text.tokenize import _split_emails
    old = _old_email_alternation()
    frag = st.text(alphabet="aZ9_.-+@:;/#'\"<>&!?()^ \n\u200d👍é", min_size=1, max_size=6)

    @settings(max_examples=120, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.tuples(frag, st.integers(1, 3000)), min_size=1, max_size=4))
    def check(parts):
        text = "".join(f * n for f, n in parts)
        t0 = time.perf_counter()
        out = tok(text)
        assert time.perf_counter() - t0 < _TIME_BOUND_S, (len(text), parts)
        assert all(t and t.split() == [t] for t in out)
        for piece in text.split()[:50]:
            if "@" in piece and len(piece) <= 60:
                assert _split_emails(piece) == old.findall(piece), piece

    check()


@pytest.mark.parametrize("max_rep", [1, 2, 3, 4])
def test_word_repetition_across_and_inside_pieces(max_rep):
    """A word repetition is found inside one piece, across pieces, for marked (capitalised) tokens,
    and between texts of a block never (each text apart), by both paths."""
    import importlib
    import itertools
    texts = ["a** **b", ":):) :):)", "w w w w w", "Ha Ha Ha Ha", "HA HA ha ha", "x!! !! !!",
             "no no no no!", "** ** ** **", ":) :) :) :)", "a.a.a. a.", "...... ...", "hi hi hi"]
    t = Tokenizer(TokenizerConfig(add_bos=False, max_rep=max_rep))
    block = t.tokenize_many(texts + ["hi"] * 5 + texts, n_workers=1)
    assert block == [t(x) for x in texts + ["hi"] * 5 + texts]
    for text in texts:
        raw = list(itertools.chain.from_iterable(
            importlib.import_module("ulmfit.text.tokenize")._piece_tokens(p) for p in t._fix(text).split()))
        longest = max(len(list(g)) for _, g in itertools.groupby(raw))
        assert (TK_WREP in t(text)) == (longest > max_rep), (text, max_rep, t(text))


def _adversarial(n, seed=0):
    """Short texts from the characters and fragments where the rules differ: case (title case,
    dotted I, final sigma, symbols that are upper case, letters above U+FFFF), marks, invisible and
    curly characters, the block separator, entities, e-mails, contractions, runs, repetitions."""
    rng = random.Random(seed)
    alphabet = list("aZ9_.-+@:;/#'\"<>&!?()^ \n\t\u200d👍éÉ\x00\x01ΣσςİıǅǆßẞﬁÅÅ\u0301\u0345Ꝺ𐐀𝐀Ⓐⓐ½²٣") + [
        "n't", "'s", "http://x.co/", "www.", "a@b.com", "&amp;", "<br />", "\\n", " @.@ ", "xxup",
        "HELLO", "Hello", "I", "...", "!!", ":)", "<3", "e.g.", "3.14", "ΣΑΣ", "ΟΔΟΣ", "İstanbul",
        "\u2019", "&quot;", "#39;", "ÀB", "µ", "sooooo", "A" * 40]
    out = []
    for _ in range(n):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        if rng.random() < 0.2:
            word = rng.choice(["ha", "HA", "Ha", ":)", "**", "no"])
            text = (" " if rng.random() < 0.5 else "").join([word] * rng.randint(1, 6)) + text
        out.append(text)
    return out


def test_block_contractions_equal_the_pattern():
    """`_contract` (found from the apostrophe) inserts the spaces of `_RE_CONTRACTION.sub`."""
    from ulmfit.text.tokenize import _RE_CONTRACTION, _contract
    texts = _adversarial(2000, seed=7) + ["x's's", "don't", " n't", "ian's", "DON'T", "rock'n'roll",
                                          "y'all", "n'tn't", "'s", "a'S b'Ll c'vE", "won't've", "é'd"]
    for text in texts:
        assert _contract(text) == _RE_CONTRACTION.sub(r" \1", text), text


@pytest.mark.parametrize("max_rep,bos,eos", [(1, True, False), (2, False, True), (3, True, True), (4, False, False)])
def test_blocks_equal_the_exact_path(monkeypatch, max_rep, bos, eos):
    """`tokenize_many` (whole blocks of texts at once) gives `tok(text)`'s tokens (one text, rule by
    rule) on adversarial texts and fields, whatever the block size; with 2 workers too."""
    from ulmfit.text import tokenize as T
    texts = _adversarial(1500, seed=max_rep) + _corpus(300) + ["", ("A title", "Body ÀB"), ""]
    t = Tokenizer(TokenizerConfig(add_bos=bos, add_eos=eos, max_rep=max_rep))
    expected = [t(x) for x in texts]
    assert t.tokenize_many(texts, n_workers=1) == expected
    monkeypatch.setattr(T, "_BLOCK_TEXTS", 7)
    assert t.tokenize_many(texts, n_workers=1) == expected
    if max_rep == 3:
        assert t.tokenize_many(texts, n_workers=2) == expected


def test_block_casing_arrays_on_long_tokens():
    """Tokens of 2**15 characters and more (the packed per-character counts fall back) and blocks
    above U+00FF (arrays of 4 bytes per character) mark the casing as `tok(text)` does."""
    texts = ["A" * 40000 + " B" + "a" * 40000, "Ab" * 20000, "ÀB Àb σ ΣΑΣ Ⓐⓑ", "plain"]
    assert tok.tokenize_many(texts, n_workers=1) == [tok(x) for x in texts]
    assert tok.tokenize_many(texts[:2], n_workers=1) == [tok(x) for x in texts[:2]]


def test_one_tokenizer_shared_by_threads():
    """A server's threads may share one Tokenizer: each gets its own tokens."""
    from concurrent.futures import ThreadPoolExecutor
    texts = ["no no no no", ":):) :):)", "fine then", "HA HA HA HA!"] * 300 + _corpus(800)
    expected = [Tokenizer()(t) for t in texts]
    shared = Tokenizer()
    with ThreadPoolExecutor(4) as ex:
        assert list(ex.map(shared, texts)) == expected
        chunks = [texts[i:i + 300] for i in range(0, len(texts), 300)]
        many = ex.map(lambda c: shared.tokenize_many(c, n_workers=1), chunks)
        assert [toks for c in many for toks in c] == expected


def test_workers_return_any_text_through_their_files(monkeypatch):
    """Forked workers write their chunk's tokens into a temporary file as UTF-8: letters above U+FFFF,
    lone surrogates (from JSON, e.g. "\\ud83d") and fields come back as `tok(text)` gives them; with
    the platform's other start method (spawn: tokens returned through the executor) too."""
    from multiprocessing import get_context

    from ulmfit.text import tokenize as T
    odd = ["lone \ud83d surrogate", "\udc00\ud800 pair? NO", "𝐀𝐁 𐐀x 😂😂😂😂", ("Title \udfff", "b")]
    texts = (odd + _corpus(50)) * 20
    expected = [tok(t) for t in texts]
    assert tok.tokenize_many(texts, n_workers=2) == expected
    monkeypatch.setattr(T, "_mp_context", lambda: get_context("spawn"))
    assert tok.tokenize_many(texts[:200], n_workers=2) == expected[:200]


def test_output_lists_leave_the_collector_as_found():
    """`tokenize_many` moves its output lists past the young generations (`gc.freeze()` +
    `gc.unfreeze()`) only when the program has frozen nothing itself, after collecting the
    program's young cyclic garbage, and leaves the collector enabled or disabled as it found it."""
    import gc
    import weakref

    class Node:
        pass
    texts = _corpus(3000)
    expected = [tok(t) for t in texts]
    assert gc.isenabled()
    cycle = Node()
    cycle.self = cycle
    ref = weakref.ref(cycle)
    del cycle
    # Python 3.12 freezes a few hundred objects of its own at start-up (3.11 and 3.13: none); they are
    # frozen objects like a program's, so there the lists are not promoted and the objects stay frozen
    frozen_at_start = gc.get_freeze_count()
    out = tok.tokenize_many(texts, n_workers=1)
    assert gc.isenabled() and out == expected and gc.get_freeze_count() == frozen_at_start
    if not frozen_at_start:
        oldest = {id(o) for o in gc.get_objects(generation=2)}  # not left to young passes to walk
        assert all(id(toks) in oldest for toks in out)
        assert ref() is None  # the program's young cyclic garbage was collected, not promoted
    mine = ["a program's own object"]
    gc.freeze()  # a program's own frozen objects (e.g. before forking servers) stay frozen
    try:
        frozen = gc.get_freeze_count()
        assert tok.tokenize_many(texts, n_workers=1) == expected
        assert gc.get_freeze_count() == frozen > 0 and not any(o is mine for o in gc.get_objects())
    finally:
        gc.unfreeze()
    assert any(o is mine for o in gc.get_objects())
    gc.disable()
    try:
        assert tok.tokenize_many(texts, n_workers=1) == expected and not gc.isenabled()
    finally:
        gc.enable()
