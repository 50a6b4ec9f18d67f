"""A fast word-level tokenizer with fastai's rules and special tokens.

fastai v2 runs a few regex rules over the raw text, then spaCy, then marks capitals. Here the text
is split on whitespace and only the pieces that are not plain words go through one compiled `re`
pattern; no Python loop runs per character. Rules, in order:

    fix_html      entities (`&amp;`, bare `#39;`/`quot;`...), `<br />`, NFC, curly apostrophes
    replace_rep   `cccc`            -> `xxrep 4 c`      (a character repeated more than `max_rep`)
    split         words, numbers (3.14, 1,000, 10:30), contractions spaCy-style (do n't, i 'm),
                  URLs, emails, @mentions, #hashtags, emoticons (:-) <3), "...", "!!", symbols
    replace_wrep  `w w w w`         -> `xxwrep 4 w`     (a token repeated more than `max_rep`)
    caps          `HELLO` -> `xxup hello`, `Hello` / `I` -> `xxmaj hello` / `xxmaj i`, all lowercase
    bos/eos       `xxbos` at each document start (`xxeos` at the end if asked)

Differences from fastai: a single capital letter ("I", "A") gets `xxmaj`, so `detokenize` can
give back the original casing; tokens that start with a symbol (#TBT, @Bob, :D) are lowercased
without a case mark; "..." stays "..." (fastai turns it into "…"); a repeated word is found among
tokens, not in the raw text. Tokens never contain whitespace (the block path and the workers rely
on it).

Two paths, the same tokens: `tok(text)` applies the rules to one text piece by piece in Python
(`Tokenizer._exact`); `tokenize_many` applies them to blocks of texts joined into one string
(`Tokenizer._block`), so that the work per token happens in C (`re`, `str`, numpy).
"""
from __future__ import annotations

import gc
import html
import os
import re
import sys
import tempfile
import threading
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, groupby, islice, repeat
from multiprocessing import current_process, get_context
from operator import eq
from typing import Sequence

import numpy as np

from ulmfit.errors import UlmfitError

UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ = (
    "xxunk", "xxpad", "xxbos", "xxeos", "xxfld", "xxrep", "xxwrep", "xxup", "xxmaj")
SPECIAL_TOKENS = [UNK, PAD, BOS, EOS, FLD, TK_REP, TK_WREP, TK_UP, TK_MAJ]
UNK_ID, PAD_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@dataclass
class TokenizerConfig:
    """Saved as JSON next to a model: only plain fields."""

    add_bos: bool = True
    add_eos: bool = False
    max_rep: int = 3  # a character / word repeated more than this many times -> xxrep / xxwrep

    def __post_init__(self):
        if not isinstance(self.max_rep, int) or self.max_rep < 1:
            raise UlmfitError(f"tokenizer config: max_rep must be an integer >= 1, got {self.max_rep!r}")


# ---------------------------------------------------------------------------------- fix_html

# Entities whose "&" was already stripped in some corpora (fastai's list), and wikitext escapes.
_BARE_ENTITIES = [("#39;", "'"), ("#146;", "'"), ("#36;", "$"), ("quot;", '"'), ("nbsp;", " "),
                  ("amp;", "&")]
_WIKI = [(" @.@ ", "."), (" @-@ ", "-"), (" @,@ ", ",")]
# `(?:/\s*)?` rather than `/?\s*`: two adjacent `\s*` split a run of spaces in quadratically many
# ways when no `>` follows ("<br" + 100k spaces took seconds).
_RE_BR = re.compile(r"<\s*br\s*(?:/\s*)?>", re.IGNORECASE)
_INVISIBLE = [("\u200b", ""), ("\ufeff", ""), ("\u00ad", ""), ("\u2018", "'"), ("\u2019", "'")]


def fix_html(t: str) -> str:
    """Undo the HTML/escaping debris found in scraped text. Each step is skipped when its marker
    character is absent, so clean text costs a few `in` scans."""
    if "\\" in t:
        t = t.replace("\\n", "\n").replace('\\"', '"')
    if "&" in t:
        t = html.unescape(html.unescape(t))  # twice: `&amp;quot;` is common in scraped data
    if ";" in t:
        for a, b in _BARE_ENTITIES:
            t = t.replace(a, b)
    if "<" in t:
        t = _RE_BR.sub("\n", t.replace("<unk>", UNK))
    if "@" in t:
        for a, b in _WIKI:
            t = t.replace(a, b)
    if not t.isascii():
        # zero-width characters would become tokens that print as nothing; curly -> straight
        # apostrophes so that "don’t" and "don't" are the same tokens
        t = unicodedata.normalize("NFC", t)
        for a, b in _INVISIBLE:
            t = t.replace(a, b)
    return t


# ---------------------------------------------------------------------------------- splitting


def _mark_class() -> str:
    """Combining marks (Mn/Mc/Me) of the BMP as a regex class body. `re`'s \\w does not include
    them, yet they are parts of words in Hindi, Thai, decomposed accents ...; ~20 ms at import."""
    cps = [c for c in range(0x300, 0x10000) if unicodedata.category(chr(c))[0] == "M"]
    ranges, start, prev = [], cps[0], cps[0]
    for c in cps[1:] + [-1]:
        if c != prev + 1:
            ranges.append(f"\\u{start:04x}" if start == prev else f"\\u{start:04x}-\\u{prev:04x}")
            start = c
        prev = c
    return "".join(ranges)


# A word character. `a-z` first: `re` tests the members of a class in order, and most word
# characters are ASCII letters.
_W = rf"[a-z\w{_mark_class()}]"
# Each alternative starts with a literal or a class (`\d\d*` rather than `\d+`): `re` skips such an
# alternative after one test of the current character, and enters the others to fail there.
_TOKEN = rf"""
    https?://[^\s<>"]*[^\s<>"'.,;:!?)\]}}]               # URL, without trailing punctuation
  | www\.[^\s<>"]*[^\s<>"'.,;:!?)\]}}]
  | [@\#]\w+                                             # @mention, #hashtag
  | <3+ | </3 | \^_*\^ | -_+- | >_<                      # emoticons ...
  | [:;=][-o*']?(?:[)\](\[|@}}{{\\/]|[dDpP](?!\w))       #   :) ;-) :'( :D :P =/
  | \d\d*(?:[.,:]\d+)+                                   # 3.14 1,000 10:30
  | [^\W\d_]\.(?:[^\W\d_]\.)+                            # e.g. U.S.A.
  | [nN]'[tT](?!\w) | '(?:[sSmMdD]|[lL][lL]|[vV][eE]|[rR][eE])(?!\w)   # n't 's 'm 'd 'll 've 're
  | {_W}{_W}*(?:'{_W}+)*                                 # words, o'clock, rock'n'roll
  | \.\.+ | [!?][!?]* | --+                              # ... !! ?! --
  | [^\w\s](?:[\U0001F3FB-\U0001F3FF\ufe0f]|\u200d[^\w\s])*  # other symbols one at a time; emoji
                                                         # keep skin tones and ZWJ sequences
"""
_RE_TOKEN = re.compile(_TOKEN, re.VERBOSE)
# E-mails. The obvious `[\w.+-]+@domain|<_TOKEN>` backtracks quadratically: tried at every
# position of "a-a-a-...@", the local part runs to the "@" and fails each time (`'a-' * 50000 + '@'`
# took over a minute). The result of that alternative at a position depends only on the maximal run
# of local-part characters holding it (the only "@" it can reach is the one ending the run), so
# each run is checked once and `_split_emails` gives exactly the tokens of that alternation.
_RE_LOCAL_RUN = re.compile(r"[\w.+-]+")
_RE_DOMAIN = re.compile(r"\w[\w-]*(?:\.[\w-]+)+")  # `.` never inside `[\w-]`: one way to match
# A cheap test before the run scan: a local-part character, "@", and the start of a domain up to its
# first dot (linear: each "@" scans one run of `[\w-]`). Every e-mail of `_split_emails` holds it.
# Written from the "@" (a literal prefix: `search` skips to each "@" without trying other positions).
_RE_EMAIL_HINT = re.compile(r"@(?<=[\w.+-]@)\w[\w-]*\.[\w-]")
# spaCy-style contractions: "don't" -> "do n't", "I'm" -> "I 'm"; "o'clock", "y'all" stay whole.
_RE_CONTRACTION = re.compile(r"(?<=\w)(n't|'(?:s|m|d|ll|ve|re))(?!\w)", re.IGNORECASE)


# The same split over a whole block of texts (`Tokenizer._block`), a run of tokens per match:
# tokens that follow each other with one space between them (`findall` then costs ~1 match per
# piece that splits, not per token; joined by spaces, the matches give the tokens). Whitespace
# before a run is skipped inside the match, so `findall` never fails at a position. The first
# alternative, a run of word characters up to whitespace (most tokens), is what `_TOKEN` gives
# there: each earlier alternative of `_TOKEN` needs a character that is not a word character.
# Compiled on first use (~20 ms: the word class appears ten times), not at import.
@lru_cache(maxsize=1)
def _re_block_runs() -> re.Pattern:
    one = rf"(?:{_W}{_W}*+(?=\s)|{_TOKEN})"
    return re.compile(rf"\s*+({one}(?:[ ]{one})*+)", re.VERBOSE)


# The contractions of a block, found from their apostrophe (a scan for one character) rather than
# tried at every position: the same matches as `_RE_CONTRACTION`, which starts one character
# earlier for "n't".
_RE_APOSTROPHE = re.compile(r"'(?:(?<=\w[nN]')[tT]|(?<=\w')(?:[sSmMdD]|[lL][lL]|[vV][eE]|[rR][eE]))(?!\w)")
# Separates the texts of a block: whitespace around it makes it a token of its own; texts that hold
# it go through the exact path.
_SEP = "\x00"


class Tokenizer:
    """`tok(text) -> list[str]`; `tok(("title", "body"))` marks fields with `xxfld 1`, `xxfld 2`.

    Two paths give the same tokens (tests/test_tokenize.py compares them on every rule):
    `tok(text)` applies the rules to one text, piece by piece (`_exact`); `tokenize_many` applies
    them to blocks of texts joined into one string, with no Python work per token (`_block`)."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        self._re_rep = re.compile(r"(\S)\1{%d,}" % self.config.max_rep)

    def __repr__(self) -> str:
        return f"Tokenizer({self.config})"

    def __call__(self, text: str | Sequence[str]) -> list[str]:
        if isinstance(text, str):
            toks = self._exact(self._fix(text))
        else:
            toks = []
            for i, field in enumerate(text):
                toks += [FLD, str(i + 1)] + self._exact(self._fix(str(field)))
        return self._head() + toks + self._tail()

    def _head(self) -> list[str]:
        return [BOS] if self.config.add_bos else []

    def _tail(self) -> list[str]:
        return [EOS] if self.config.add_eos else []

    def _fix(self, t: str) -> str:
        """`fix_html`, then `cccc` -> ` xxrep 4 c ` (a character repeated more than max_rep times)."""
        return self._re_rep.sub(_sub_rep, fix_html(t))

    def _exact(self, t: str) -> list[str]:
        """Tokens of one text after `_fix`, rule by rule: split each whitespace piece, replace word
        repetitions, mark the casing of each token."""
        raw = list(chain.from_iterable(map(_piece_tokens, t.split())))
        if len(raw) > self.config.max_rep and any(map(eq, raw, islice(raw, 1, None))):
            raw = self._replace_wrep(raw)
        return list(chain.from_iterable(map(_case, raw)))

    def _replace_wrep(self, toks: list[str]) -> list[str]:
        """`w w w w` -> `xxwrep 4 w` for runs longer than max_rep (before casing, as fastai)."""
        out, i, n = [], 0, len(toks)
        while i < n:
            j = i + 1
            while j < n and toks[j] == toks[i]:
                j += 1
            out += [TK_WREP, str(j - i), toks[i]] if j - i > self.config.max_rep else toks[i:j]
            i = j
        return out

    def _block(self, texts: list[str]) -> tuple[str, dict[int, list[str]]]:
        """Tokens of a block of texts as one string (tokens separated by spaces, texts by `_SEP`,
        without xxbos/xxeos) and the texts left to the exact path (index -> tokens).

        Each rule runs over the whole block in C: `fix_html` per text, the character runs (numpy,
        `_with_runs`), the contractions (`_contract`), one `findall` of `_re_block_runs()`, a test
        on arrays for word repetitions (the exact one only where it may hold), the casing marks and
        lowercase (`_Codes`, numpy). Every rule acts within a whitespace piece (or a token), so the
        separator keeps the texts apart. The exact path takes the rare texts that hold an e-mail
        (`_split_emails`) or the separator."""
        fixed = list(map(fix_html, texts))
        joined = f" {_SEP} ".join(fixed)
        runs = _with_runs(joined, fixed, self.config.max_rep + 1)
        for i in runs:
            fixed[i] = self._re_rep.sub(_sub_rep, fixed[i])
        exact: dict[int, list[str]] = {}
        if joined.count(_SEP) != len(fixed) - 1 or ("@" in joined and _RE_EMAIL_HINT.search(joined)):
            for i, t in enumerate(fixed):
                if _SEP in t or ("@" in t and _RE_EMAIL_HINT.search(t)):
                    exact[i] = self._exact(t)
                    fixed[i] = ""
            runs = True
        if runs:
            joined = f" {_SEP} ".join(fixed)
        s = " ".join(_re_block_runs().findall(_contract(joined)))
        codes = _Codes(s)
        stretches = codes.maybe_equal(self.config.max_rep)
        if stretches:  # `_replace_wrep` on the tokens of each, texts apart
            cut, out = 0, []
            for i, j in stretches:
                toks = [s[a:b] for a, b in zip(codes.starts[i:j].tolist(), codes.ends[i:j].tolist())]
                new = []
                for is_sep, group in groupby(toks, _SEP.__eq__):
                    new += group if is_sep else self._replace_wrep(list(group))
                out += [s[cut:codes.starts[i]], " ".join(new)]
                cut = codes.ends[j - 1]
            codes = _Codes("".join(out) + s[cut:])
        return codes.cased(), exact

    def _tokenize_joined(self, texts: list) -> tuple[str | None, dict[int, list[str]]]:
        """The tokens of `texts` as one string, xxbos/xxeos included: texts separated by `_SEP`,
        tokens by spaces (`_split_docs` turns it into lists; None for no texts). Texts with fields
        and those left to the exact path are empty there and given apart (index -> tokens). What a
        worker returns: one string pickles and unpickles in a fraction of the time of many small
        ones."""
        special = {}
        if not all(map(isinstance, texts, repeat(str))):
            special = {i: self(t) for i, t in enumerate(texts) if not isinstance(t, str)}
            texts = [t if isinstance(t, str) else "" for t in texts]
        parts = []
        for b in range(0, len(texts), _BLOCK_TEXTS):
            s, exact = self._block(texts[b:b + _BLOCK_TEXTS])
            for i, toks in exact.items():
                special[b + i] = self._head() + toks + self._tail()
            parts.append(s)
        if not parts:
            return None, special
        # empty parts (a block of one empty text) left out
        sep = " ".join(self._tail() + [_SEP] + self._head())
        items = []
        for k, part in enumerate(parts):
            items += [_SEP, part] if k else [part]
        body = " ".join(filter(None, items)).replace(_SEP, sep)
        return " ".join(filter(None, [*self._head(), body, *self._tail()])), special

    def _tokenize_list(self, texts: Sequence) -> list[list[str]]:
        """`[self(t) for t in texts]`, by blocks of texts (`_block`) from `_BLOCK_MIN_TEXTS` on."""
        texts = list(texts)
        if len(texts) < _BLOCK_MIN_TEXTS:
            return [self(t) for t in texts]
        with _gc_paused(promote=len(texts) >= _PROMOTE_MIN_TEXTS):
            return _split_docs(*self._tokenize_joined(texts))

    def tokenize_many(self, texts: Sequence[str], n_workers: int | None = None) -> list[list[str]]:
        """Tokenize `texts` in order. `n_workers=None`: in-process below ~2M characters (where
        starting a worker would eat the gain), else one process per core (at most 4);
        `n_workers=1`, or in a daemonic process (which may not start children): always in-process."""
        texts = list(texts)
        if current_process().daemon:  # a daemonic process (one direction's model, train/processes.py) may not start children
            n_workers = 1
        if n_workers is None:
            n_chars = sum(len(t) if isinstance(t, str) else sum(map(len, t)) for t in texts)
            n_workers = 1 if n_chars < _PARALLEL_MIN_CHARS else min(4, os.cpu_count() or 1)
        n_workers = min(n_workers, len(texts))
        if n_workers <= 1:
            return self._tokenize_list(texts)
        # This process is one of the workers: it tokenizes the head of `texts` while n_workers - 1
        # children take the tail in a few chunks (so that this process receives the first ones while
        # the children still work). Forked children already hold `texts`: they get index ranges
        # into `_SHARED` (set before the fork), not the texts. Each chunk's tokens come back as one
        # string (`_tokenize_joined`; tokens never hold whitespace), split here in C. A forked child
        # writes that string into a temporary file of its chunk (unlinked at creation) and returns
        # only its length: through the executor's pipe, a child's write blocks 64 KiB at a time until
        # this process's reader thread takes the GIL from the tokenizing main thread (~5 ms each),
        # which left the child idle for 20-40 ms per chunk.
        head = int(len(texts) * _PARENT_SHARE / n_workers)
        n_chunks = (n_workers - 1) * _CHUNKS_PER_CHILD
        size = max(1, -(-(len(texts) - head) // n_chunks))
        ranges = [(i, min(i + size, len(texts))) for i in range(head, len(texts), size)]
        ctx = _mp_context()
        _re_block_runs()  # compiled once here, not in each child
        key = object()
        forked = ctx.get_start_method() == "fork"
        files = [tempfile.TemporaryFile() for _ in ranges] if forked else []
        if forked:
            _SHARED[id(key)] = (self.config, texts, files)
        ex = ProcessPoolExecutor(n_workers - 1, mp_context=ctx)
        try:
            if forked:
                futures = [ex.submit(_tokenize_shared, id(key), k, i, j) for k, (i, j) in enumerate(ranges)]
            else:
                futures = [ex.submit(_tokenize_texts, self.config, texts[i:j]) for i, j in ranges]
            out = self._tokenize_list(texts[:head])
            with _gc_paused(promote=len(texts) >= _PROMOTE_MIN_TEXTS):
                for k, f in enumerate(futures):
                    s, special = f.result()
                    if forked and s is not None:
                        s = _read_text(files[k], s)
                    out += _split_docs(s, special)
        finally:
            _SHARED.pop(id(key), None)
            # Without waiting: a child's exit (freeing its heap) took 0.2-0.7 s; the executor's
            # own thread reaps it. On an error, pending chunks are cancelled.
            ex.shutdown(wait=False, cancel_futures=True)
            for file in files:
                file.close()
        return out


# The head of the texts that the calling process tokenizes itself, as a fraction of an equal share
# (1 / n_workers): it also turns the children's strings into lists (~45 ms for all the tweets).
# Wall time with 2 workers on the tweets, 2-core EPYC, quiet window (share:chunks per
# child, min / median of 5): 0.7:4 151/164 ms, 0.8:4 144/181, 0.8:2 143/170, 0.9:1 150/157,
# 0.9:2 145/159, 1.0:2 147/157; 1 worker 209/217. Flat within noise; 0.7:4 is the balance of the
# measured rates (child ~165 ms per whole set, parent ~235 with its lists, ~10 ms to fork).
_PARENT_SHARE = 0.7
# Chunks per child: the parent splits a chunk's string while the children work on the next ones.
_CHUNKS_PER_CHILD = 4

# Texts per block of `_block`: ~100 kB of tweets, so that the block's strings and arrays stay in the
# CPU caches (blocks of 30k tweets took ~1.3x as long per text).
_BLOCK_TEXTS = 1024
# Fewer texts go the exact path: a block's fixed cost (~150 us of numpy and `re` calls) exceeds
# the exact path's ~35 us per tweet below ~16 tweets (one text: 161 us vs 36 on a busy machine).
_BLOCK_MIN_TEXTS = 16

# Texts of tokenize_many calls in flight, for their forked workers: id(key) -> (config, texts).
_SHARED: dict[int, tuple[TokenizerConfig, list, list]] = {}


@contextmanager
def _gc_paused(promote: bool):
    """The cyclic garbage collector paused while the output lists are built; with `promote`, those
    lists moved straight to the oldest generation when it resumes.

    Every 700 new lists would run a young pass, and older passes walk every live object. Paused,
    the first allocation after resuming still ran one young pass over all the new lists (44-77 ms
    for the tweets' 30k lists on a busy 2-core EPYC, as long as building them). Lists of strings
    cannot form cycles: that pass finds nothing. `gc.freeze()` + `gc.unfreeze()` moves every tracked
    object to the oldest generation without walking them (two list splices) and resets the young
    count; the lists are then walked only by full passes, as any long-lived object is. The young
    generations are collected first (`gc.collect(1)`, well under a millisecond against their
    thresholds of 700 and 10), so that the program's cyclic garbage is not promoted with them
    (the oldest generation is collected only when enough survivors reach it, which promoted objects
    do not count towards). Not promoted: small outputs (a young pass over them is cheap), and when
    the program has frozen objects of its own (`gc.get_freeze_count()`: `unfreeze` would release
    them), which under Python 3.12 is always (the interpreter freezes a few hundred objects at
    start-up; 3.11 and 3.13 freeze none): there the lists take the young passes, as any list does."""
    was_enabled = gc.isenabled()
    promote = promote and was_enabled and not gc.get_freeze_count()
    if promote:
        gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if promote:
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()


# From this many texts the output lists skip the young generations (`_gc_paused`): a young pass
# costs ~2 us per list of tweet tokens, `gc.collect(1)` up to a few milliseconds.
_PROMOTE_MIN_TEXTS = 2048


# Below this many characters tokenize_many(n_workers=None) stays in-process: starting a worker and
# receiving its tokens only pay off once the work is well above the fork's cost.
_PARALLEL_MIN_CHARS = 2_000_000


def _mp_context():
    """fork on Linux: workers start in milliseconds, already hold the texts and do not re-import
    `__main__` (a script without an `if __name__ == "__main__"` guard still works). The usual
    hazard of fork, locks held by the parent's other threads (torch's), does not apply: workers only
    run `re`, `str` and numpy code. Elsewhere the platform's default (spawn on macOS and Windows)."""
    return get_context("fork") if sys.platform.startswith("linux") else get_context()


def _split_docs(s: str | None, special: dict[int, list[str]]) -> list[list[str]]:
    """`Tokenizer._tokenize_joined`'s string and texts apart back to one list of tokens per text."""
    out = list(map(str.split, s.split(_SEP))) if s is not None else []
    for i, t in special.items():
        out[i] = t
    return out


def _tokenize_shared(key: int, k: int, i: int, j: int) -> tuple[int | None, dict[int, list[str]]]:
    """A forked child: chunk k (texts i:j) into its temporary file as UTF-8 (lone surrogates kept);
    returns the number of bytes written (None for no texts) and the texts given apart."""
    config, texts, files = _SHARED[key]
    s, special = Tokenizer(config)._tokenize_joined(texts[i:j])
    if s is None:
        return None, special
    data = s.encode("utf-8", "surrogatepass")
    files[k].write(data)
    files[k].flush()
    return len(data), special


def _read_text(file, n: int) -> str:
    """The n bytes a child wrote into `file` (`_tokenize_shared`) as text."""
    data = os.pread(file.fileno(), n, 0)
    if len(data) != n:
        raise UlmfitError(f"tokenize_many: a worker wrote {n} bytes to its temporary file, {len(data)} "
                          f"were read back; check the space left in {tempfile.gettempdir()}")
    return data.decode("utf-8", "surrogatepass")


def _tokenize_texts(config: TokenizerConfig, texts: list) -> tuple[str | None, dict[int, list[str]]]:
    return Tokenizer(config)._tokenize_joined(texts)


# ---------------------------------------------------------------------------------- block helpers


def _contract(s: str) -> str:
    """`_RE_CONTRACTION.sub(r" \\1", s)`: a space before each contraction."""
    cuts = [m.start() - (s[m.start() + 1] in "tT") for m in _RE_APOSTROPHE.finditer(s)]
    if not cuts:
        return s
    return " ".join([s[i:j] for i, j in zip([0] + cuts, cuts + [len(s)])])


def _char_props(chars: str) -> np.ndarray:
    """Per character, the bits `_Codes.cased` needs: 1 upper (`c.isupper()`), 2 lower or title case
    (what makes a string not `isupper()`), 4 may start an `xxup` token (alphanumeric or ')."""
    return np.array([(c.isupper()) | (not (c + "A").isupper()) << 1 | (c.isalnum() or c == "'") << 2
                     for c in chars], dtype=np.uint8)


_LATIN1 = "".join(map(chr, range(256)))
_LATIN1_PROPS = _char_props(_LATIN1)
_LATIN1_LOWER = np.frombuffer(_LATIN1.lower().encode("latin-1"), np.uint8)  # one to one, in range
_LATIN1_PACKED = ((_LATIN1_LOWER != np.arange(256)) | (_LATIN1_PROPS >> 1 & 1).astype(np.int32) << 15).astype(np.int32)
if not np.array_equal(_LATIN1_LOWER != np.arange(256), _LATIN1_PROPS & 1 > 0):
    raise ImportError("tokenize: below U+0100 the characters that change under lower() must be the upper case ones")


class _Codes:
    """A block's tokens, separated by single spaces, as an array of code points (one byte each when
    every character is below 256), with where each token starts and ends."""

    def __init__(self, s: str):
        self.s = s
        try:
            self.codec = "latin-1"
            self.a = np.frombuffer(s.encode(self.codec), np.uint8)
        except UnicodeEncodeError:
            self.codec = "utf-32-le"
            self.a = np.frombuffer(s.encode(self.codec, "surrogatepass"), np.uint32)
        spaces = np.flatnonzero(self.a == 32)
        self.starts = np.concatenate(([0], spaces + 1))
        self.ends = np.append(spaces, len(self.a))

    def maybe_equal(self, r: int) -> list[tuple[int, int]]:
        """Token ranges [i, j) of more than r tokens in a row that may be equal: equal tokens have
        equal lengths and equal first, middle and last characters, compared for all neighbours at
        once. Every run of more than r equal tokens lies in one of them."""
        a, s, e = self.a, self.starts, self.ends
        if len(s) <= r or not len(a):
            return []
        n = e - s
        mid = a[s + n // 2]
        same = (n[1:] == n[:-1]) & (a[s[1:]] == a[s[:-1]]) & (a[e[1:] - 1] == a[e[:-1] - 1]) & (mid[1:] == mid[:-1])
        if same.tobytes().find(b"\x01" * r) < 0:
            return []
        edges = np.diff(np.concatenate(([0], same.view(np.int8), [0])))
        firsts, lasts = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # pairs [first, last)
        keep = lasts - firsts >= r
        return list(zip(firsts[keep].tolist(), (lasts[keep] + 1).tolist()))

    def cased(self) -> str:
        """`" ".join(chain.from_iterable(map(_case, s.split(" "))))`: each token lowercased, `xxup` /
        `xxmaj` before it as `_case` decides, from per-character arrays. Per token, `w.lower() != w`
        iff one of its characters changes under `lower()`, compared position by position with the
        lowercased block (`lower()` maps one character to one but U+0130, where this falls back to
        `_case`; the context rule of a final sigma stops at the space, so the block's lowercase is
        each token's); `w.isupper()` iff no character has bit 2 of `_char_props` and one has bit 1."""
        s, a, starts, ends = self.s, self.a, self.starts, self.ends
        if not len(a):
            return s
        if a.dtype == np.uint8 and (ends - starts).max() < 1 << 15:
            # tables per character: its lowercase, and "changes under lower()" + 2**15 * "lower or
            # title case" (below 256 the characters that change are the upper case ones), so one
            # cumulative sum counts both per token (int32, wrapping: exact per token up to 2**15)
            b = _LATIN1_LOWER[a]
            packed = _segment_sums(_LATIN1_PACKED[a], starts, ends)
            n_ch = n_up = packed & 0x7FFF
            n_lo = packed >> 15 & 0xFFFF
            ch_first = _LATIN1_LOWER[a[starts]] != a[starts]
            props = _LATIN1_PROPS[a[starts]]
        else:
            lo = s.lower()
            if len(lo) != len(s):
                return " ".join(chain.from_iterable(map(_case, s.split(" "))))
            b = np.frombuffer(lo.encode(self.codec, "surrogatepass"), a.dtype)
            props = np.zeros(len(a), np.uint8)
            small = a < 256
            props[small] = _LATIN1_PROPS[a[small]]
            cps, inv = np.unique(a[~small], return_inverse=True)
            props[~small] = _char_props("".join(map(chr, cps.tolist())))[inv]
            ch = (a != b).view(np.uint8)
            n_ch, n_up, n_lo = (_segment_sums(x, starts, ends) for x in (ch, props & 1, props & 2))
            ch_first = ch[starts] > 0
            props = props[starts]
        first = props  # of each token's first character
        up = (ends - starts >= 2) & (first & 4 > 0) & (n_lo == 0) & (n_up > 0) & (n_ch > 0)
        maj = (first & 1 > 0) & ch_first & (n_ch == 1) & ~up
        if not (maj.any() or up.any()):
            return b.tobytes().decode(self.codec, "surrogatepass")
        # The space before a marked token becomes a control character absent from the block, then
        # `str.replace` turns it into " xxmaj " / " xxup " (the first token has no space before it).
        free = [c for c in range(1, 9) if not (a == c).any()][:2]
        if len(free) < 2:
            return " ".join(chain.from_iterable(map(_case, s.split(" "))))
        b = b.copy() if not b.flags.writeable else b
        first_mark = TK_MAJ if maj[0] else TK_UP if up[0] else None
        maj[0] = up[0] = False
        b[starts[maj] - 1] = free[0]
        b[starts[up] - 1] = free[1]
        out = b.tobytes().decode(self.codec, "surrogatepass")
        out = out.replace(chr(free[0]), f" {TK_MAJ} ").replace(chr(free[1]), f" {TK_UP} ")
        return f"{first_mark} {out}" if first_mark else out


def _segment_sums(x: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """`x[starts[i]:ends[i]].sum()` for every i, from a cumulative sum (`np.add.reduceat` took
    4x), in x's integer type if it is int32 (wrapping: exact when each segment's sum fits)."""
    dtype = np.int32 if x.dtype == np.int32 else np.int64
    c = np.zeros(len(x) + 1, dtype)
    np.cumsum(x, dtype=dtype, out=c[1:])
    return c[ends] - c[starts]


def _piece_tokens(piece: str) -> list[str]:
    """Tokens of one whitespace piece (after `Tokenizer._fix`) before casing."""
    if piece.isalnum():
        return [piece]
    if "'" in piece:
        piece = _RE_CONTRACTION.sub(r" \1", piece)
    if "@" in piece and _RE_EMAIL_HINT.search(piece):
        return _split_emails(piece)
    return _RE_TOKEN.findall(piece)


def _with_runs(joined: str, texts: list[str], n: int) -> list[int]:
    """Indices of the texts holding a character other than whitespace n times in a row (what
    `Tokenizer._re_rep` matches), from one vectorised comparison of the code points of `joined`
    (the texts joined by ` _SEP `)."""
    if len(joined) < n:
        return []
    try:
        a = np.frombuffer(joined.encode("latin-1"), dtype=np.uint8)
    except UnicodeEncodeError:
        a = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    same = a[1:] == a[:-1]  # same[i]: character i+1 repeats character i
    same &= (a[1:] != 32) & ((a[1:] < 9) | (a[1:] > 13))  # ASCII whitespace never counts
    m = len(same) - (n - 2)
    run = same[:m].copy()
    for k in range(1, n - 1):
        run &= same[k:k + m]
    starts = [i for i in np.flatnonzero(run).tolist() if not joined[i].isspace()]
    if not starts:
        return []
    ends = np.cumsum([len(t) + 3 for t in texts])  # one past each text's " _SEP "
    return sorted(set(np.searchsorted(ends, starts, side="right").tolist()))


def _case(w: str) -> tuple[str, ...]:
    """One token with its case mark: `HELLO` -> (xxup, hello), `Hello` / `I` -> (xxmaj, ...)."""
    lo = w.lower()
    if lo == w:
        return (w,)
    if len(w) > 1 and w.isupper() and (w[0].isalnum() or w[0] == "'"):  # not ":D"
        return (TK_UP, lo)
    if w[0].isupper() and w[1:] == w[1:].lower():
        return (TK_MAJ, lo)
    return (lo,)  # mixed case like "iPhone": casing dropped, as in fastai


def _split_emails(piece: str) -> list[str]:
    r"""`findall` of `e-mail | _TOKEN` over `piece`, in linear time. Findall tries the e-mail first
    at each position it reaches; that succeeds at position p iff p lies before the "@" of a maximal
    run of `[\w.+-]` that ends in "@" followed by a domain, and the match then ends where that
    domain does. So: list those runs, let `_TOKEN` take the text before each one, and emit the
    e-mail from the first position reached inside it (unless a token such as a URL swallowed the
    "@")."""
    emails = []  # (run start, "@" index, e-mail end)
    for m in _RE_LOCAL_RUN.finditer(piece):
        at = m.end()
        if at < len(piece) and piece[at] == "@":
            d = _RE_DOMAIN.match(piece, at + 1)
            if d:
                emails.append((m.start(), at, d.end()))
    if not emails:
        return _RE_TOKEN.findall(piece)
    out: list[str] = []
    pos = 0
    for start, at, end in emails:
        while pos < start:
            m = _RE_TOKEN.match(piece, pos)
            if m is None:  # as findall: no token here, try the next character
                pos += 1
            else:
                out.append(m.group())
                pos = m.end()
        if pos < at:
            out.append(piece[pos:end])
            pos = end
    out += _RE_TOKEN.findall(piece, pos)
    return out


def _sub_rep(m: re.Match) -> str:
    return f" {TK_REP} {len(m.group(0))} {m.group(1).lower()} "


# ---------------------------------------------------------------------------------- detokenize

_CONTRACTIONS = {"n't", "'s", "'m", "'d", "'ll", "'ve", "'re"}
_NO_SPACE_BEFORE = set(".,!?;:)]}%…") | {"...", "--"}
_NO_SPACE_AFTER = set("([{$£€¿¡")
_DROP = {BOS, EOS, PAD}


def detokenize(tokens: Sequence[str]) -> str:
    """Readable text from tokens (e.g. generated by a language model); the inverse of `Tokenizer`
    up to whitespace on ordinary sentences. Case marks apply to the next token, `xxrep n c` /
    `xxwrep n w` are expanded, `xxbos`/`xxeos`/`xxpad`/`xxfld n` dropped; punctuation and
    contractions rejoin the previous word. A `xxrep` of a letter joins the word before it
    ("s xxrep 4 o" -> "soooo"): the tokens do not say whether it was inside a word, this is the
    usual case."""
    # pass 1: case marks and dropped tokens
    words: list[str] = []
    mark, skip_num = None, False
    for t in tokens:
        if skip_num:
            skip_num = False
            if t.isdigit():
                continue
        if t in _DROP:
            continue
        if t == FLD:
            skip_num = True
            continue
        if t in (TK_MAJ, TK_UP):
            mark = t
            continue
        if mark == TK_MAJ:
            t = t[:1].upper() + t[1:]
        elif mark == TK_UP:
            t = t.upper()
        mark = None
        words.append(t)
    # pass 2: repetitions and spacing
    out: list[str] = []
    glue, in_quote, i = True, False, 0  # glue: no space before the next piece
    while i < len(words):
        w = words[i]
        joins_left = False
        if w in (TK_REP, TK_WREP) and i + 2 < len(words) and words[i + 1].isdigit():
            n, x = int(words[i + 1]), words[i + 2]
            i += 2
            if w == TK_REP:
                joins_left = x.isalnum() and bool(out) and out[-1][-1:].isalnum()
                joins_left = joins_left or x in _NO_SPACE_BEFORE
                w = x * n
            else:
                w = " ".join([x] * n)
        elif w in _NO_SPACE_BEFORE or w.lower() in _CONTRACTIONS or (len(w) > 1 and set(w) <= set(".!?")):
            joins_left = True
        elif w == '"':
            joins_left = in_quote  # a closing quote joins left, an opening one joins right
            in_quote = not in_quote
        if out and not (glue or joins_left):
            out.append(" ")
        out.append(w)
        glue = w in _NO_SPACE_AFTER or (w == '"' and in_quote)
        i += 1
    return "".join(out)
