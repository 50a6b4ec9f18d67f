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
tokens, not in the raw text. Tokens never contain whitespace (the multiprocess path relies on it).
"""
from __future__ import annotations

import gc
import html
import os
import re
import sys
import threading
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice, repeat
from multiprocessing import get_context
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


_W = rf"[\w{_mark_class()}]"  # a word character
_TOKEN = rf"""
    (?:https?://|www\.)[^\s<>"]*[^\s<>"'.,;:!?)\]}}]     # URL, without trailing punctuation
  | [@\#]\w+                                             # @mention, #hashtag
  | <3+ | </3 | \^_*\^ | -_+- | >_<                      # emoticons ...
  | [:;=][-o*']?(?:[)\](\[|@}}{{\\/]|[dDpP](?!\w))       #   :) ;-) :'( :D :P =/
  | \d+(?:[.,:]\d+)+                                     # 3.14 1,000 10:30
  | (?:[^\W\d_]\.){{2,}}                                 # e.g. U.S.A.
  | [nN]'[tT](?!\w) | '(?:[sSmMdD]|[lL][lL]|[vV][eE]|[rR][eE])(?!\w)   # n't 's 'm 'd 'll 've 're
  | {_W}+(?:'{_W}+)*                                     # words, o'clock, rock'n'roll
  | \.\.+ | [!?]+ | --+                                  # ... !! ?! --
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
_RE_EMAIL_HINT = re.compile(r"[\w.+-]@\w")  # fixed width: a cheap test before the run scan
# spaCy-style contractions: "don't" -> "do n't", "I'm" -> "I 'm"; "o'clock", "y'all" stay whole.
_RE_CONTRACTION = re.compile(r"(?<=\w)(n't|'(?:s|m|d|ll|ve|re))(?!\w)", re.IGNORECASE)


class Tokenizer:
    """`tok(text) -> list[str]`; `tok(("title", "body"))` marks fields with `xxfld 1`, `xxfld 2`.

    After `fix_html` and the character runs (`xxrep`), every rule but the word repetition acts
    within one whitespace piece (the split, the contractions, the e-mails) or one token (the
    casing), so each distinct piece is tokenized once (`_PieceCache`) and looked up afterwards:
    the loop over the pieces of a text runs in C (`map` over the cache, `chain` to flatten).
    Tweets repeat most of their pieces (467k pieces, 72k distinct in the 29,757 training tweets)."""

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        self._re_rep = re.compile(r"(\S)\1{%d,}" % self.config.max_rep)
        self._cache = _PieceCache()

    def __repr__(self) -> str:
        return f"Tokenizer({self.config})"

    def __getstate__(self):  # pickled without its cache
        return {"config": self.config}

    def __setstate__(self, state):
        self.__init__(state["config"])

    def __call__(self, text: str | Sequence[str]) -> list[str]:
        if isinstance(text, str):
            toks = self._words(self._fix(text).split())
        else:
            toks = []
            for i, field in enumerate(text):
                toks += [FLD, str(i + 1)] + self._words(self._fix(str(field)).split())
        if self.config.add_bos:
            toks.insert(0, BOS)
        if self.config.add_eos:
            toks.append(EOS)
        return toks

    def _fix(self, t: str) -> str:
        """`fix_html`, then `cccc` -> ` xxrep 4 c ` (a character repeated more than max_rep times)."""
        return self._re_rep.sub(_sub_rep, fix_html(t))

    def _words(self, pieces: list[str]) -> list[str]:
        """Tokens of the whitespace pieces of one text after `_fix`."""
        _SEEN.repeat = False
        out = list(chain.from_iterable(map(self._cache.__getitem__, pieces)))
        if len(out) > self.config.max_rep and self._may_repeat(pieces, out):
            raw = list(chain.from_iterable(map(_piece_tokens, pieces)))
            if any(map(eq, raw, islice(raw, 1, None))):
                out = list(chain.from_iterable(map(_CASE.__getitem__, self._replace_wrep(raw))))
        return out

    def _may_repeat(self, pieces: list[str], out: list[str]) -> bool:
        """False when no token (before casing) can repeat more than max_rep times in a row: a test
        in C that spares ~99% of texts the exact one, which splits the pieces again.
        max_rep >= 3 (a run of r >= 4 tokens): unless a piece has two equal tokens in a row (such
        pieces are not cached and set `_SEEN.repeat`), each piece holds at most one token
        of the run, so the run spans >= 4 pieces and the >= 2 inner ones are that one token: two
        equal pieces in a row. Smaller max_rep: casing maps a token to 1 or 2 tokens (`_case`), so
        a run of r leaves out[k] == out[k+2] at one k when r == 3; out[k] == out[k+1] or, for
        marked tokens, out[k] == out[k+2] at two consecutive k when r == 2."""
        r = self.config.max_rep + 1
        if r >= 4:
            return _SEEN.repeat or any(map(eq, pieces, islice(pieces, 1, None)))
        e2 = bytes(map(eq, out, islice(out, 2, None)))
        if r == 3:
            return e2.find(1) >= 0
        return e2.find(b"\x01\x01") >= 0 or any(map(eq, out, islice(out, 1, None)))

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

    def _tokenize_list(self, texts: Sequence) -> list[list[str]]:
        """`[self(t) for t in texts]`, a block of texts at a time: the character runs are looked for
        in the whole block at once (`_with_runs`, numpy) rather than with the regex in each text."""
        words = self._words
        head = [BOS] if self.config.add_bos else []
        tail = [EOS] if self.config.add_eos else []
        out: list[list[str]] = []
        with _gc_paused():
            for b in range(0, len(texts), _BLOCK_TEXTS):
                block = texts[b:b + _BLOCK_TEXTS]
                if not all(map(isinstance, block, repeat(str))):  # fields
                    out += map(self, block)
                    continue
                fixed = list(map(fix_html, block))
                for i in _with_runs(fixed, self.config.max_rep + 1):
                    fixed[i] = self._re_rep.sub(_sub_rep, fixed[i])
                out += [head + words(f.split()) + tail for f in fixed]
        return out

    def tokenize_many(self, texts: Sequence[str], n_workers: int | None = None) -> list[list[str]]:
        """Tokenize `texts` in order. `n_workers=None`: in-process below ~2M characters (where
        starting a worker would eat the gain), else one process per core (at most 4);
        `n_workers=1`: always in-process."""
        texts = list(texts)
        if n_workers is None:
            n_chars = sum(len(t) if isinstance(t, str) else sum(map(len, t)) for t in texts)
            n_workers = 1 if n_chars < _PARALLEL_MIN_CHARS else min(4, os.cpu_count() or 1)
        n_workers = min(n_workers, len(texts))
        if n_workers <= 1:
            return self._tokenize_list(texts)
        # This process is one of the workers: it tokenizes the head of `texts` while n_workers - 1
        # children take the tail in a few chunks (so that this process receives the first ones while
        # the children still work). Forked children already hold `texts`: they get index ranges
        # into `_SHARED` (set before the fork), not the texts. They send back lists of lists of
        # tokens; pickle writes a token once per chunk and then refers to it (its memo), and the
        # cache makes equal tokens one object, so the transfer costs a fraction of the tokenizing.
        head = int(len(texts) * _PARENT_SHARE / n_workers)
        n_chunks = (n_workers - 1) * 4
        size = max(1, -(-(len(texts) - head) // n_chunks))
        ranges = [(i, min(i + size, len(texts))) for i in range(head, len(texts), size)]
        ctx = _mp_context()
        key = object()
        forked = ctx.get_start_method() == "fork"
        if forked:
            _SHARED[id(key)] = (self.config, texts)
        ex = ProcessPoolExecutor(n_workers - 1, mp_context=ctx)
        try:
            if forked:
                futures = [ex.submit(_tokenize_shared, id(key), i, j) for i, j in ranges]
            else:
                futures = [ex.submit(_tokenize_texts, self.config, texts[i:j]) for i, j in ranges]
            out = self._tokenize_list(texts[:head])
            with _gc_paused():
                for f in futures:
                    out += f.result()
        finally:
            _SHARED.pop(id(key), None)
            # Without waiting: a child's exit (freeing its heap) took 0.2-0.7 s; the executor's
            # own thread reaps it. On an error, pending chunks are cancelled.
            ex.shutdown(wait=False, cancel_futures=True)
        return out


# The head of the texts that the calling process tokenizes itself, as a fraction of an equal share
# (1 / n_workers). With 2 workers on the tweets (idle-ish 2-core EPYC, in one process, 5 rounds):
# 0.8 took 295 ms (the child, which also pickles its tokens, finished last), 1.0 252 ms, 1.2 247-277,
# one worker 272.
_PARENT_SHARE = 1.0

# tokenize_many looks for character runs in this many texts at a time
_BLOCK_TEXTS = 2048

# Texts of tokenize_many calls in flight, for their forked workers: id(key) -> (config, texts).
_SHARED: dict[int, tuple[TokenizerConfig, list]] = {}


@contextmanager
def _gc_paused():
    """Building millions of small lists triggers the cyclic garbage collector over and over, and
    each full pass walks every live object: up to half the run time. Nothing here makes cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# Below this many characters tokenize_many(n_workers=None) stays in-process: starting a worker and
# receiving its tokens only pay off once the work is well above the fork's cost.
_PARALLEL_MIN_CHARS = 2_000_000


def _mp_context():
    """fork on Linux: workers start in milliseconds, already hold the texts and do not re-import
    `__main__` (a script without an `if __name__ == "__main__"` guard still works). The usual
    hazard of fork, locks held by the parent's other threads (torch's), does not apply: workers only
    run `re` and `str` code. Elsewhere the platform's default (spawn on macOS and Windows)."""
    return get_context("fork") if sys.platform.startswith("linux") else get_context()


def _tokenize_shared(key: int, i: int, j: int) -> list[list[str]]:
    config, texts = _SHARED[key]
    return Tokenizer(config)._tokenize_list(texts[i:j])


def _tokenize_texts(config: TokenizerConfig, texts: list) -> list[list[str]]:
    return Tokenizer(config)._tokenize_list(texts)


# ---------------------------------------------------------------------------------- the piece cache

# Pieces up to 32 characters are kept (longer ones are mostly URLs seen once), at most 100k of them
# (~25 MB; the 29,757 training tweets have 72k distinct pieces); the token casing cache likewise.
_CACHE_MAX_CHARS = 32
_CACHE_MAX_ENTRIES = 100_000


# Set by `_PieceCache` when the text being tokenized has a piece holding a repeated token; per
# thread, as the threads of a server may share one Tokenizer.
_SEEN = threading.local()


class _PieceCache(dict):
    """piece -> its tokens with case marks (a tuple), computed on first use. Holds at most
    `_CACHE_MAX_ENTRIES` pieces of at most `_CACHE_MAX_CHARS` characters (emptied when full); a
    piece holding the same token twice in a row is not kept and sets `_SEEN.repeat`."""

    __slots__ = ()

    def __missing__(self, piece: str) -> tuple[str, ...]:
        raw = _piece_tokens(piece)
        # a lowercase piece has lowercase tokens (its substrings)
        value = tuple(raw) if piece == piece.lower() else tuple(chain.from_iterable(map(_CASE.__getitem__, raw)))
        if len(raw) > 1 and any(map(eq, raw, islice(raw, 1, None))):
            _SEEN.repeat = True
        elif len(piece) <= _CACHE_MAX_CHARS:
            if len(self) >= _CACHE_MAX_ENTRIES:
                self.clear()
            self[piece] = value
        return value


def _piece_tokens(piece: str) -> list[str]:
    """Tokens of one whitespace piece (after `Tokenizer._fix`) before casing."""
    if piece.isalnum():
        return [piece]
    if "'" in piece:
        piece = _RE_CONTRACTION.sub(r" \1", piece)
    if "@" in piece and _RE_EMAIL_HINT.search(piece):
        return _split_emails(piece)
    return _RE_TOKEN.findall(piece)


def _with_runs(texts: list[str], n: int) -> list[int]:
    """Indices of the texts holding a character other than whitespace n times in a row (what
    `Tokenizer._re_rep` matches), from one vectorised comparison of the texts' code points."""
    joined = "\n".join(texts)
    if len(joined) < n:
        return []
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
    ends = np.cumsum([len(t) + 1 for t in texts])  # one past each text's "\n"
    return sorted(set(np.searchsorted(ends, starts, side="right").tolist()))


class _CaseCache(dict):
    """token -> (token) or (case mark, lowercased token), computed on first use (`_case`)."""

    __slots__ = ()

    def __missing__(self, w: str) -> tuple[str, ...]:
        value = _case(w)
        if len(w) <= _CACHE_MAX_CHARS:
            if len(self) >= _CACHE_MAX_ENTRIES:
                self.clear()
            self[w] = value
        return value


_CASE = _CaseCache()


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
